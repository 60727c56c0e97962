//! Reaping a task's process and reading how it ended.
//!
//! The engine learns that a process exited from its pidfd, then kills what is left of
//! its group *before* reaping it: while the zombie leader exists its pid, which is
//! also the group id, cannot be reused, so the group kill can never hit a stranger.

use std::io;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exited {
    /// It called exit with this status.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

/// A reaped process: how it ended and its peak resident memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub exited: Exited,
    pub max_rss_kb: u64,
}

/// Reaps `pid`, which must be a child of this process that has exited.
pub fn reap(pid: u32) -> io::Result<ExitInfo> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data that wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals; wait4 has no other preconditions.
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
        if r >= 0 {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let exited = if libc::WIFSIGNALED(status) {
        Exited::Signal(libc::WTERMSIG(status))
    } else {
        Exited::Code(libc::WEXITSTATUS(status))
    };
    Ok(ExitInfo { exited, max_rss_kb: usage.ru_maxrss.max(0) as u64 })
}
