//! Per-task limits: joining a memory cgroup or an address-space limit (`RLIMIT_AS`,
//! where no cgroup can be had), CPU pinning and niceness, applied in a task's child
//! between fork and exec, or to a worker from outside once it has started; and how an
//! `RLIMIT_AS` failure is recognised afterwards.

use std::io;

/// Limits for one task's process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Address-space limit in bytes (`RLIMIT_AS`).
    pub memory: Option<u64>,
    /// An open `cgroup.procs` of the memory cgroup to join.
    pub cgroup_procs: Option<i32>,
    /// The only CPU the task may run on.
    pub cpu: Option<usize>,
    /// Niceness added to the task.
    pub nice: Option<i32>,
}

impl Limits {
    /// Whether any limit must be applied in the child (which costs a fork instead of
    /// the cheaper posix_spawn).
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// Applies the limits to the calling process. Runs in the child after fork, so
    /// it only makes async-signal-safe system calls and allocates nothing.
    pub fn apply_in_child(&self) -> io::Result<()> {
        if let Some(fd) = self.cgroup_procs {
            // "0" moves the writing process itself.
            // SAFETY: a plain system call on an fd the parent keeps open for us.
            if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some(bytes) = self.memory {
            let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
            // SAFETY: a plain system call with a pointer to a local.
            if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some(cpu) = self.cpu {
            // SAFETY: cpu_set_t is plain data; CPU_SET indexes within it.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        if let Some(nice) = self.nice {
            // SAFETY: a plain system call.
            if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

impl Limits {
    /// Applies the limits to the process `pid` from outside (a worker just started,
    /// before it is told to do anything): it joins the cgroup, gets the address-space
    /// limit, and its main thread the CPU and the niceness, which threads it starts
    /// later inherit.
    pub fn apply_to(&self, pid: u32) -> io::Result<()> {
        if let Some(fd) = self.cgroup_procs {
            let text = pid.to_string();
            // SAFETY: a plain system call on an fd the caller keeps open.
            if unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) } != text.len() as isize {
                return Err(io::Error::last_os_error());
            }
        }
        let raw = pid as libc::pid_t;
        if let Some(bytes) = self.memory {
            let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
            // SAFETY: a plain system call with a pointer to a local.
            if unsafe { libc::prlimit(raw, libc::RLIMIT_AS, &limit, std::ptr::null_mut()) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some(cpu) = self.cpu {
            // SAFETY: cpu_set_t is plain data; CPU_SET indexes within it.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(raw, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        if let Some(nice) = self.nice {
            // SAFETY: a plain system call.
            if unsafe { libc::setpriority(libc::PRIO_PROCESS, raw as libc::id_t, nice) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// The CPUs this process may run on, in order: pinning picks among these, since a
/// container or `taskset` may allow only some of the machine's cores.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data that sched_getaffinity fills in.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| libc::CPU_ISSET(cpu, &set)).collect()
    }
}

/// Messages that runtimes print when an allocation fails. Under `RLIMIT_AS` the
/// kernel reports nothing itself (unlike a cgroup's OOM kill), so a failed task
/// under such a limit whose error output says one of these is `memory_exceeded`.
const ALLOCATION_FAILURES: [&[u8]; 7] = [
    b"MemoryError",
    b"Cannot allocate memory",
    b"std::bad_alloc",
    b"out of memory",
    b"Out of memory",
    b"memory allocation of",
    b"failed to allocate",
];

/// Whether `stderr` shows that the task ran out of memory.
pub fn shows_allocation_failure(stderr: &[u8]) -> bool {
    ALLOCATION_FAILURES.iter().any(|needle| stderr.windows(needle.len()).any(|w| w == *needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_common_allocation_failures() {
        assert!(shows_allocation_failure(b"Traceback ...\nMemoryError\n"));
        assert!(shows_allocation_failure(b"memory allocation of 1048576 bytes failed\n"));
        assert!(shows_allocation_failure(b"head: cannot allocate: Cannot allocate memory"));
        assert!(!shows_allocation_failure(b"error: file not found\n"));
    }
}
