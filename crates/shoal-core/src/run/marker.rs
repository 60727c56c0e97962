//! [`Marker`]: the `SHOAL_RUN=<run>@<store>` entry every process of a run carries in
//! its environment (a task's command and its children, a pool's workers), and finding
//! the live processes that carry it.
//!
//! After a `kill -9` of the engine its tasks live on, reparented to init; before a
//! resume re-runs them, they must go. The marker, not a recorded pid, identifies them,
//! so a pid reused by a stranger is never touched; and `ps e`, `grep SHOAL_RUN
//! /proc/*/environ` show which run a process belongs to.

use std::fs;

use rustix::process::{kill_process, Pid, Signal};

use super::RunIdentity;
use crate::process::spawn::TASK_VAR;
use crate::process::stat;
use crate::task::TaskId;

/// The marker of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    identity: RunIdentity,
    /// `NAME=VALUE`, as it appears in `/proc/PID/environ`.
    entry: String,
}

impl Marker {
    /// The environment variable that carries it.
    pub const NAME: &'static str = "SHOAL_RUN";

    /// The marker of run `identity`.
    pub fn new(identity: RunIdentity) -> Marker {
        let entry = format!("{}={identity}", Marker::NAME);
        Marker { identity, entry }
    }

    /// The run it names.
    pub fn identity(&self) -> &RunIdentity {
        &self.identity
    }

    /// Its value, `<run>@<store>`.
    pub fn value(&self) -> &str {
        &self.entry[Marker::NAME.len() + 1..]
    }

    /// The environment variable, as a (name, value) pair to give a process.
    pub fn env(&self) -> (String, String) {
        (Marker::NAME.to_owned(), self.value().to_owned())
    }

    /// Every live process that carries this marker (not this process). Processes
    /// that cannot be read (gone, or another user's) are skipped.
    pub fn processes(&self) -> Vec<Marked> {
        find_marked_all(&[self.entry.as_str()])
    }

    /// The live processes of task `task` of the run: those that also carry its number
    /// (`SHOAL_TASK`), which the engine gives every task's process.
    pub fn task_processes(&self, task: TaskId) -> Vec<Marked> {
        find_marked_all(&[self.entry.clone(), format!("{TASK_VAR}={task}")])
    }
}

/// A process that carries a run's marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marked {
    pub pid: u32,
    /// Its parent: init (or a subreaper) for an orphan, the live engine (or one of
    /// the task's own processes) otherwise.
    pub parent: u32,
}

/// Every process whose environment holds each of `entries` exactly, as `NAME=VALUE`.
fn find_marked_all<S: AsRef<str>>(entries: &[S]) -> Vec<Marked> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id();
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own)
        .filter(|&pid| {
            fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                entries.iter().all(|wanted| {
                    env.split(|&b| b == 0).any(|entry| entry == wanted.as_ref().as_bytes())
                })
            })
        })
        .filter_map(|pid| Some(Marked { pid, parent: stat::parent(pid)? }))
        .collect()
}

/// SIGKILLs each process; returns how many were signalled.
pub fn kill_all(marked: &[Marked]) -> usize {
    marked
        .iter()
        .filter_map(|m| Pid::from_raw(m.pid as i32))
        .filter(|&pid| kill_process(pid, Signal::KILL).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::{Child, Command};
    use std::time::Duration;

    use super::*;
    use crate::store::StoreAddress;

    fn marker(run: i64) -> Marker {
        let store = PathBuf::from(format!("/no/such/marker-test-{}.db", std::process::id()));
        Marker::new(RunIdentity::new(run, &StoreAddress::Sqlite(store)))
    }

    fn sleeper(env: &[(String, String)]) -> Child {
        Command::new("sleep").arg("30").envs(env.iter().cloned()).spawn().unwrap()
    }

    /// Right after spawn a child may still be inside exec, its environment not yet
    /// readable: look again for a moment, until `expected` processes are found.
    fn found(expected: usize, look: impl Fn() -> Vec<Marked>) -> Vec<Marked> {
        let mut found = look();
        for _ in 0..100 {
            if found.len() >= expected {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            found = look();
        }
        found
    }

    #[test]
    fn the_marker_is_the_run_and_its_store() {
        let marker = marker(4);
        let (name, value) = marker.env();
        assert_eq!(name, "SHOAL_RUN");
        assert_eq!(value, format!("4@/no/such/marker-test-{}.db", std::process::id()));
        assert_eq!(marker.value(), value);
        assert_eq!(RunIdentity::parse(&value).as_ref(), Some(marker.identity()));
    }

    #[test]
    fn finds_and_kills_exactly_the_marked_processes() {
        let (ours, theirs) = (marker(1), marker(2));
        let mut marked = sleeper(&[ours.env()]);
        let mut other = sleeper(&[theirs.env()]);
        let ours = found(1, || ours.processes());
        assert_eq!(ours, vec![Marked { pid: marked.id(), parent: std::process::id() }]);
        assert_eq!(kill_all(&ours), 1);
        let status = marked.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
        assert!(other.try_wait().unwrap().is_none(), "another run's process is left alone");
        other.kill().unwrap();
        other.wait().unwrap();
    }

    #[test]
    fn a_task_s_processes_carry_its_number_too() {
        let run = marker(3);
        let task = |n: u64| (TASK_VAR.to_owned(), n.to_string());
        let mut five = sleeper(&[run.env(), task(5)]);
        let mut six = sleeper(&[run.env(), task(6)]);
        let of_five = found(1, || run.task_processes(5));
        assert_eq!(of_five.iter().map(|m| m.pid).collect::<Vec<_>>(), vec![five.id()]);
        assert_eq!(found(2, || run.processes()).len(), 2);
        for child in [&mut five, &mut six] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}
