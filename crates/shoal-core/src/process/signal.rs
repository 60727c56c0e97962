//! Signals to a task's whole process group, so that no child of a task survives it.

use rustix::process::{kill_process_group, Pid, Signal};

/// Sends `signal` to every process of the group led by `pgid`. A group that is
/// already gone is not an error.
pub fn kill_group(pgid: u32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pgid as i32) {
        // ESRCH (nothing left) is the normal case for a task that ended cleanly.
        let _ = kill_process_group(pid, signal);
    }
}
