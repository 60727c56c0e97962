//! Finding the processes an earlier engine left behind.
//!
//! The engine puts a marker (`NAME=VALUE`, naming the run) in every task's
//! environment; a task's children inherit it. After a `kill -9` of the engine its
//! tasks live on, reparented to init; before a resume re-runs them, they must go.
//! The marker, not a recorded pid, identifies them, so a pid reused by a stranger
//! is never touched.

use std::fs;

use rustix::process::{kill_process, Pid, Signal};

use super::stat;

/// A process that carries a run's marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marked {
    pub pid: u32,
    /// Its parent: init (or a subreaper) for an orphan, the live engine (or one of
    /// the task's own processes) otherwise.
    pub parent: u32,
}

/// Every process whose environment holds `marker` exactly, as one `NAME=VALUE`
/// entry. Processes that cannot be read (gone, or another user's) are skipped.
pub fn find_marked(marker: &str) -> Vec<Marked> {
    find_marked_all(&[marker])
}

/// Every process whose environment holds each of `markers` (see [`find_marked`]).
pub fn find_marked_all<S: AsRef<str>>(markers: &[S]) -> Vec<Marked> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id();
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own)
        .filter(|&pid| {
            fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                markers.iter().all(|marker| {
                    env.split(|&b| b == 0).any(|entry| entry == marker.as_ref().as_bytes())
                })
            })
        })
        .filter_map(|pid| Some(Marked { pid, parent: stat::parent(pid)? }))
        .collect()
}

/// The short command name of a process (`/proc/PID/comm`).
pub fn command_name(pid: u32) -> Option<String> {
    Some(fs::read_to_string(format!("/proc/{pid}/comm")).ok()?.trim_end().to_owned())
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
    use std::process::Command;
    use std::time::Duration;

    use super::*;

    #[test]
    fn finds_and_kills_exactly_the_marked_processes() {
        let marker = format!("SHOAL_TEST_MARK={}", std::process::id());
        let mut marked = Command::new("sleep")
            .arg("30")
            .env("SHOAL_TEST_MARK", marker.split('=').nth(1).unwrap())
            .spawn()
            .unwrap();
        let mut other =
            Command::new("sleep").arg("30").env("SHOAL_TEST_MARK", "someone-else").spawn().unwrap();
        // Right after spawn the child may still be inside exec, its environment not
        // yet readable: look again for a moment.
        let mut found = find_marked(&marker);
        for _ in 0..100 {
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            found = find_marked(&marker);
        }
        assert_eq!(found, vec![Marked { pid: marked.id(), parent: std::process::id() }]);
        assert_eq!(kill_all(&found), 1);
        let status = marked.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
        assert!(other.try_wait().unwrap().is_none(), "an unmarked process is left alone");
        other.kill().unwrap();
        other.wait().unwrap();
    }
}
