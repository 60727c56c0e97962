//! `--halt`, as GNU parallel's: when to stop a run early (after so many or such a
//! share of the tasks failed, succeeded or were done), how (`now`: stop the running
//! tasks; `soon`: let them finish), and the exit status parallel gives then. Pure: the
//! run's front end hands it each task's end and acts on what it says.

use std::fmt;

use shoal_core::TaskStatus;

/// When a halt stops the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Start no more tasks; running ones finish.
    Soon,
    /// Start no more tasks; running ones are stopped.
    Now,
}

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Fail,
    Success,
    Done,
}

/// How many of the counted tasks halt the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threshold {
    Count(u64),
    /// A share of all the run's tasks, in percent.
    Percent(u64),
}

/// A `--halt` other than `never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HaltRule {
    pub when: When,
    pub why: Why,
    pub threshold: Threshold,
}

/// A `--halt` as given: `never` too, which a resume can give to drop the stored rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    Never,
    Rule(HaltRule),
}

impl Halt {
    /// The rule, unless `never`.
    pub fn rule(self) -> Option<HaltRule> {
        match self {
            Halt::Never => None,
            Halt::Rule(rule) => Some(rule),
        }
    }
}

/// A `--halt` value that is not one of parallel's forms.
#[derive(Debug, thiserror::Error)]
#[error(
    "--halt {0:?} is not one of never, soon|now,fail|success|done=N or =P% (1 to 100), \
     N% (soon,fail=N%), 0, 1, 2, -1, -2"
)]
pub struct BadHalt(String);

/// Parses `--halt` as GNU parallel does. Parallel's short forms: 0 never,
/// 1 soon,fail=1, 2 now,fail=1, -1 soon,success=1, -2 now,success=1, and `N%`
/// soon,fail=N%.
pub fn parse_halt(text: &str) -> Result<Halt, BadHalt> {
    let bad = || BadHalt(text.to_owned());
    let percent_of_fails;
    let long = match text {
        "0" | "never" => return Ok(Halt::Never),
        "1" => "soon,fail=1",
        "2" => "now,fail=1",
        "-1" => "soon,success=1",
        "-2" => "now,success=1",
        _ if text.strip_suffix('%').is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) => {
            percent_of_fails = format!("soon,fail={text}");
            &percent_of_fails
        }
        _ => text,
    };
    let (when, rest) = long.split_once(',').ok_or_else(bad)?;
    let (why, value) = rest.split_once('=').ok_or_else(bad)?;
    let when = match when {
        "soon" => When::Soon,
        "now" => When::Now,
        _ => return Err(bad()),
    };
    let why = match why {
        "fail" => Why::Fail,
        "success" => Why::Success,
        "done" => Why::Done,
        _ => return Err(bad()),
    };
    let number = |digits: &str| {
        let plain = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        plain.then(|| digits.parse::<u64>().ok()).flatten().filter(|&n| n > 0).ok_or_else(bad)
    };
    let threshold = match value.strip_suffix('%') {
        Some(percent) => Threshold::Percent(number(percent).and_then(|p| match p {
            ..=100 => Ok(p),
            _ => Err(bad()),
        })?),
        None => Threshold::Count(number(value)?),
    };
    Ok(Halt::Rule(HaltRule { when, why, threshold }))
}

impl fmt::Display for HaltRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let when = match self.when {
            When::Soon => "soon",
            When::Now => "now",
        };
        let why = match self.why {
            Why::Fail => "fail",
            Why::Success => "success",
            Why::Done => "done",
        };
        match self.threshold {
            Threshold::Count(n) => write!(f, "{when},{why}={n}"),
            Threshold::Percent(p) => write!(f, "{when},{why}={p}%"),
        }
    }
}

/// A run's count of its tasks' ends under a `--halt`.
#[derive(Debug)]
pub struct Halting {
    rule: HaltRule,
    failed: u64,
    succeeded: u64,
    /// The exit status, once the run halted.
    halted: Option<u8>,
}

/// The run reached its `--halt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Halted {
    pub when: When,
    /// Why, for the line that says so: "task 4 failed: 2 failed so far".
    pub reason: String,
}

impl Halting {
    pub fn new(rule: HaltRule) -> Halting {
        Halting { rule, failed: 0, succeeded: 0, halted: None }
    }

    /// The rule, as given.
    pub fn rule(&self) -> HaltRule {
        self.rule
    }

    /// A task has ended with `status` (cancelled ones count for nothing); `code` is
    /// its exit status as a shell reports it (128 + a killing signal). `total` is how
    /// many tasks the run has, once its input was read whole: a percentage waits for
    /// it. Says the first time the run reaches its halt.
    pub fn ended(
        &mut self,
        task: u64,
        status: TaskStatus,
        code: i32,
        total: Option<u64>,
    ) -> Option<Halted> {
        let failed = status.is_failure();
        match status {
            TaskStatus::Succeeded => self.succeeded += 1,
            _ if failed => self.failed += 1,
            _ => return None,
        }
        let (counted, verb) = match self.rule.why {
            Why::Fail if failed => (self.failed, "failed"),
            Why::Success if !failed => (self.succeeded, "succeeded"),
            Why::Done => (self.failed + self.succeeded, "done"),
            _ => return None,
        };
        if self.halted.is_some() {
            return None;
        }
        let ended = if failed { "failed" } else { "succeeded" };
        let reason = match self.rule.threshold {
            Threshold::Count(n) if counted >= n => {
                format!("task {task} {ended}: {counted} {verb} so far")
            }
            Threshold::Percent(p) => match total {
                Some(total) if counted * 100 >= total * p => {
                    format!("task {task} {ended}: {counted} of {total} tasks {verb}")
                }
                _ => return None,
            },
            Threshold::Count(_) => return None,
        };
        self.halted = Some(match (self.rule.why, self.rule.threshold) {
            (Why::Success, _) => 0,
            (_, Threshold::Percent(_)) => percent(self.failed, total.unwrap_or(0)),
            // The task's own status, as parallel's fail=1 and done=1.
            (_, Threshold::Count(1)) => code as u8,
            (_, Threshold::Count(_)) => self.failed.min(101) as u8,
        });
        Some(Halted { when: self.rule.when, reason })
    }

    /// The run's exit status, as GNU parallel's under `--halt`: what it was when the
    /// run halted; else the share of tasks that failed (in percent, rounded up) for a
    /// percentage, the number that failed (101 for more than 100) for a count.
    pub fn exit_status(&self) -> u8 {
        match (self.halted, self.rule.threshold) {
            (Some(status), _) => status,
            (None, Threshold::Percent(_)) => percent(self.failed, self.failed + self.succeeded),
            (None, Threshold::Count(_)) => self.failed.min(101) as u8,
        }
    }
}

/// `part` of `whole` in percent, rounded up (0 of none).
fn percent(part: u64, whole: u64) -> u8 {
    if whole == 0 {
        return 0;
    }
    (part * 100).div_ceil(whole).min(100) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskStatus::{Cancelled, Failed, Succeeded, TimedOut};

    fn rule(text: &str) -> HaltRule {
        parse_halt(text).unwrap().rule().unwrap()
    }

    #[test]
    fn parses_parallels_forms() {
        assert_eq!(parse_halt("never").unwrap(), Halt::Never);
        assert_eq!(parse_halt("0").unwrap(), Halt::Never);
        let forms = [
            ("1", "soon,fail=1"),
            ("2", "now,fail=1"),
            ("-1", "soon,success=1"),
            ("-2", "now,success=1"),
            ("20%", "soon,fail=20%"),
            ("now,done=3", "now,done=3"),
            ("soon,success=100%", "soon,success=100%"),
        ];
        for (given, long) in forms {
            assert_eq!(rule(given).to_string(), long, "{given}");
        }
        for bad in ["3", "-3", "now", "later,fail=1", "now,fail", "soon,fail=0", "soon,fail=0%"] {
            assert!(parse_halt(bad).is_err(), "{bad}");
        }
        for bad in ["now,fail=101%", "now,oops=1", "now,fail=+1", "now,fail=1.5", "soon,fail=x"] {
            assert!(parse_halt(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fail_one_halts_with_the_failing_tasks_status() {
        let mut halting = Halting::new(rule("now,fail=1"));
        assert_eq!(halting.ended(1, Succeeded, 0, None), None);
        assert_eq!(halting.ended(2, Cancelled, 143, None), None);
        let halted = halting.ended(3, Failed, 3, None).unwrap();
        assert_eq!(halted.when, When::Now);
        assert_eq!(halted.reason, "task 3 failed: 1 failed so far");
        // Later ends (of tasks a `soon` lets finish) change nothing.
        assert_eq!(halting.ended(4, TimedOut, 143, None), None);
        assert_eq!(halting.exit_status(), 3);
    }

    #[test]
    fn counts_halt_with_the_number_failed() {
        let mut halting = Halting::new(rule("soon,done=3"));
        assert_eq!(halting.ended(1, Failed, 3, None), None);
        assert_eq!(halting.ended(2, Succeeded, 0, None), None);
        assert!(halting.ended(3, Succeeded, 0, None).is_some());
        assert_eq!(halting.exit_status(), 1);

        let mut halting = Halting::new(rule("now,success=2"));
        halting.ended(1, Failed, 3, None);
        halting.ended(2, Succeeded, 0, None);
        let halted = halting.ended(3, Succeeded, 0, None).unwrap();
        assert_eq!(halted.reason, "task 3 succeeded: 2 succeeded so far");
        assert_eq!(halting.exit_status(), 0);
    }

    #[test]
    fn percentages_wait_for_the_total_and_round_up() {
        let mut halting = Halting::new(rule("soon,fail=30%"));
        assert_eq!(halting.ended(1, Failed, 3, None), None, "no total yet");
        let halted = halting.ended(2, Failed, 3, Some(3)).unwrap();
        assert_eq!(halted.reason, "task 2 failed: 2 of 3 tasks failed");
        assert_eq!(halting.exit_status(), 67);
    }

    #[test]
    fn an_unreached_halt_exits_as_parallel() {
        let mut halting = Halting::new(rule("now,success=1"));
        for task in 1..=3 {
            assert_eq!(halting.ended(task, Failed, 3, Some(3)), None);
        }
        assert_eq!(halting.exit_status(), 3);
        let mut halting = Halting::new(rule("soon,fail=90%"));
        halting.ended(1, Failed, 1, Some(3));
        halting.ended(2, Succeeded, 0, Some(3));
        halting.ended(3, Succeeded, 0, Some(3));
        assert_eq!(halting.exit_status(), 34);
        let mut halting = Halting::new(rule("soon,fail=200"));
        (1..=150).for_each(|task| assert_eq!(halting.ended(task, Failed, 1, None), None));
        assert_eq!(halting.exit_status(), 101);
    }
}
