//! `-j` / `--jobs`: the forms GNU parallel users type ([`Jobs`]), read in one place,
//! and the number of slots each gives on this machine ([`Jobs::slots`]).
//!
//! As GNU parallel: `N` slots; `N%` of the cores (N may have decimals, `12.5%`),
//! rounded up; `+N` / `-N` cores more or fewer; at least 1 slot for the relative forms.
//! `0` is "as many as possible": as many as there are tasks, as the open-file limit
//! serves and as [`MAX_JOBS`] allows (GNU parallel bounds it by the inputs, file
//! handles and processes). Its meaning is kept apart ([`Jobs::AsManyAsPossible`]) so
//! that a store that others claim from can give it another ("submit only").

use std::fmt;

/// The most slots a run has.
pub const MAX_JOBS: u32 = shoal_core::store::control::MAX_SLOTS;

/// A `-j` value as typed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jobs {
    /// `-j N`, N from 1 to [`MAX_JOBS`].
    Slots(u32),
    /// `-j 0`.
    AsManyAsPossible,
    /// `-j N%`: of the cores.
    PercentOfCores(f64),
    /// `-j +N`.
    MoreThanCores(u32),
    /// `-j -N`.
    FewerThanCores(u32),
}

/// What the forms are, for error messages.
const FORMS: &str =
    "use a number of slots (8), 0 (as many as possible), a share of the cores (50%), or a \
     number of cores more or fewer (+2, -1)";

impl Jobs {
    /// Reads a `-j` value; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Jobs, String> {
        let digits = |part: &str| -> Result<(), String> {
            match !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
                true => Ok(()),
                false => Err(format!("'{text}' is not a -j value: {FORMS}")),
            }
        };
        let number = |part: &str| -> Result<u32, String> {
            digits(part)?;
            part.parse().map_err(|_| format!("'{text}' is too large for -j"))
        };
        if let Some(percent) = text.strip_suffix('%') {
            // GNU parallel's `\d+(\.\d+)?%`.
            let (whole, fraction) = percent.split_once('.').unwrap_or((percent, "0"));
            digits(whole)?;
            digits(fraction)?;
            return match percent.parse::<f64>() {
                Ok(share) if share.is_finite() => Ok(Jobs::PercentOfCores(share)),
                _ => Err(format!("'{text}' is too large for -j")),
            };
        }
        if let Some(more) = text.strip_prefix('+') {
            return Ok(Jobs::MoreThanCores(number(more)?));
        }
        if let Some(fewer) = text.strip_prefix('-') {
            return Ok(Jobs::FewerThanCores(number(fewer)?));
        }
        match number(text)? {
            0 => Ok(Jobs::AsManyAsPossible),
            n if n <= MAX_JOBS => Ok(Jobs::Slots(n)),
            n => Err(format!("{n} slots, more than the {MAX_JOBS} shoal runs at once")),
        }
    }

    /// The slots it gives on a machine of `cores` cores, for `tasks` tasks (when
    /// known), where at most `room` slots fit (the open-file limit; only `-j 0` is
    /// bounded by it: a number asked for is checked against it elsewhere, with an
    /// error). More than [`MAX_JOBS`] is an error naming what it came to.
    pub fn slots(self, cores: u32, tasks: Option<usize>, room: u32) -> Result<u32, TooMany> {
        let asked = match self {
            Jobs::Slots(n) => u64::from(n),
            Jobs::AsManyAsPossible => {
                let tasks = tasks.map_or(u64::MAX, |n| n as u64);
                return Ok(tasks.min(u64::from(room.min(MAX_JOBS))).max(1) as u32);
            }
            // As GNU parallel: cores * N / 100, rounded up.
            Jobs::PercentOfCores(share) => {
                // (A float's cast saturates: past u64, u64::MAX.)
                (f64::from(cores) * share / 100.0).ceil() as u64
            }
            Jobs::MoreThanCores(n) => u64::from(cores) + u64::from(n),
            Jobs::FewerThanCores(n) => u64::from(cores).saturating_sub(u64::from(n)),
        };
        match u32::try_from(asked.max(1)) {
            Ok(slots) if slots <= MAX_JOBS => Ok(slots),
            _ => Err(TooMany { jobs: self, cores, asked }),
        }
    }
}

impl fmt::Display for Jobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Jobs::Slots(n) => write!(f, "{n}"),
            Jobs::AsManyAsPossible => f.write_str("0"),
            Jobs::PercentOfCores(share) => write!(f, "{share}%"),
            Jobs::MoreThanCores(n) => write!(f, "+{n}"),
            Jobs::FewerThanCores(n) => write!(f, "-{n}"),
        }
    }
}

/// A relative `-j` that comes to more than [`MAX_JOBS`] slots here.
#[derive(Debug, PartialEq)]
pub struct TooMany {
    jobs: Jobs,
    cores: u32,
    /// What it came to; `u64::MAX` when past counting.
    asked: u64,
}

impl std::error::Error for TooMany {}

impl fmt::Display for TooMany {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (jobs, cores) = (self.jobs, self.cores);
        match self.asked {
            u64::MAX => write!(f, "-j {jobs} on {cores} cores is")?,
            asked => write!(f, "-j {jobs} on {cores} cores is {asked} slots,")?,
        }
        write!(f, " more than the {MAX_JOBS} shoal runs at once")
    }
}

/// The value parser of `-j` (clap): a form, refused at once when it comes to too many
/// slots on this machine.
pub fn parse_jobs(text: &str) -> Result<Jobs, String> {
    let jobs = Jobs::parse(text)?;
    jobs.slots(cores(), None, MAX_JOBS).map_err(|e| e.to_string())?;
    Ok(jobs)
}

/// A live run's new slots (`shoal jobs RUN N`): any `-j` form but `0`, resolved on
/// this machine's cores, which are the run's for a store on this machine.
pub fn parse_live_jobs(text: &str) -> Result<u32, String> {
    match Jobs::parse(text)? {
        Jobs::AsManyAsPossible => Err(format!(
            "0 (as many as possible) is for a run's start only: give a number of slots \
             (1 to {MAX_JOBS}), a share of the cores (50%), or a number of cores more or fewer \
             (+2, -1)"
        )),
        jobs => jobs.slots(cores(), None, MAX_JOBS).map_err(|e| e.to_string()),
    }
}

/// The cores this process may use (its CPU affinity and cgroup quota), as the
/// default `-j` and the base of the relative forms.
pub fn cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(text: &str, cores: u32) -> Result<u32, String> {
        Jobs::parse(text)?.slots(cores, None, MAX_JOBS).map_err(|e| e.to_string())
    }

    #[test]
    fn every_form_gnu_parallel_takes() {
        let cases = [
            ("8", 2, 8),
            ("1", 64, 1),
            ("4096", 2, 4096),
            ("50%", 2, 1),
            ("50%", 8, 4),
            ("10%", 2, 1),   // rounded up
            ("33.3%", 8, 3), // 2.664, rounded up
            ("150%", 2, 3),
            ("100%", 6, 6),
            ("0%", 4, 1), // at least 1
            ("12.5%", 8, 1),
            ("+1", 2, 3),
            ("+0", 2, 2),
            ("-1", 2, 1),
            ("-1", 8, 7),
            ("-0", 2, 2),
            ("-5", 2, 1), // at least 1
            ("007", 2, 7),
        ];
        for (text, cores, expected) in cases {
            assert_eq!(slots(text, cores), Ok(expected), "-j {text} on {cores} cores");
        }
    }

    #[test]
    fn a_live_run_takes_every_form_but_zero_on_this_machines_cores() {
        let cores = cores();
        assert_eq!(parse_live_jobs("3"), Ok(3));
        assert_eq!(parse_live_jobs("+1"), Ok(cores + 1), "+1 is cores + 1, not 1");
        assert_eq!(parse_live_jobs("-1"), Ok(cores.saturating_sub(1).max(1)));
        assert_eq!(parse_live_jobs("100%"), Ok(cores));
        let zero = parse_live_jobs("0").unwrap_err();
        assert!(zero.starts_with("0 (as many as possible) is for a run's start only"), "{zero}");
        assert!(parse_live_jobs("x").unwrap_err().contains("'x'"));
        assert!(parse_live_jobs("4097").unwrap_err().contains("more than the 4096"));
    }

    #[test]
    fn zero_is_as_many_as_there_are_tasks_and_room_for() {
        let zero = Jobs::parse("0").unwrap();
        assert_eq!(zero, Jobs::AsManyAsPossible);
        assert_eq!(zero.slots(2, Some(6), MAX_JOBS), Ok(6));
        assert_eq!(zero.slots(2, Some(10_000), MAX_JOBS), Ok(MAX_JOBS));
        assert_eq!(zero.slots(2, Some(10_000), 240), Ok(240), "the open files bound it");
        assert_eq!(zero.slots(2, Some(0), MAX_JOBS), Ok(1), "at least 1");
        assert_eq!(zero.slots(2, None, 0), Ok(1));
        assert_eq!(zero.slots(2, None, MAX_JOBS), Ok(MAX_JOBS));
        // A number asked for is not lowered to the tasks or the room.
        assert_eq!(Jobs::parse("8").unwrap().slots(2, Some(3), 4), Ok(8));
    }

    #[test]
    fn bad_forms_say_what_is_wrong() {
        for text in [
            "x", "1.5", "%", "-0%", "+1%", "-", "+", "", " 2", "2 ", "1e3", "0x10", "1.%", ".5%",
            "5%%", "+-1", "--1", "50 %", "½",
        ] {
            let err = Jobs::parse(text).expect_err(text);
            assert!(err.contains(&format!("'{text}'")), "{text:?}: {err}");
        }
        assert!(Jobs::parse("x").unwrap_err().contains("50%"), "the forms are listed");
        assert_eq!(
            Jobs::parse("4097").unwrap_err(),
            "4097 slots, more than the 4096 shoal runs at once"
        );
        assert_eq!(Jobs::parse("99999999999").unwrap_err(), "'99999999999' is too large for -j");
        assert_eq!(Jobs::parse("+99999999999").unwrap_err(), "'+99999999999' is too large for -j");
    }

    #[test]
    fn relative_forms_past_the_cap_are_errors_naming_what_they_came_to() {
        let too_many = "more than the 4096 shoal runs at once";
        assert_eq!(
            slots("+5000", 2).unwrap_err(),
            format!("-j +5000 on 2 cores is 5002 slots, {too_many}")
        );
        assert_eq!(
            slots("300000%", 2).unwrap_err(),
            format!("-j 300000% on 2 cores is 6000 slots, {too_many}")
        );
        let huge = format!("1{}%", "0".repeat(30));
        assert_eq!(slots(&huge, 2).unwrap_err(), format!("-j {huge} on 2 cores is {too_many}"));
        let endless = format!("{}%", "9".repeat(400));
        assert_eq!(Jobs::parse(&endless).unwrap_err(), format!("'{endless}' is too large for -j"));
        assert_eq!(slots("+4094", 2), Ok(4096));
        assert_eq!(slots("204800%", 2), Ok(4096));
    }

    #[test]
    fn a_form_shows_as_typed() {
        for text in ["8", "0", "50%", "12.5%", "+2", "-1"] {
            assert_eq!(Jobs::parse(text).unwrap().to_string(), text);
        }
    }
}
