//! Starting a task's process: its own process group (so the whole task can be
//! signalled), stdin from /dev/null, stdout and stderr into pipes (the engine's read
//! ends non-blocking), a pidfd to learn of its exit, and its [`Limits`].
//!
//! Without limits std uses posix_spawn (vfork speed); a task's limits need a
//! `pre_exec` hook, which makes std fall back to fork + exec, so that they hold before
//! the task's program runs. Long-lived workers ([`spawn_worker`]) are always started
//! by posix_spawn, and their limits applied from outside: a worker runs nothing before
//! the engine speaks to it, and the engine may live in a host process that forks.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use rustix::process::{pidfd_open, Pid, PidfdFlags};

use super::limits::Limits;
use crate::task::{SlotId, TaskId};

/// The variable that gives a task's process (and its children) its task number.
pub const TASK_VAR: &str = "SHOAL_TASK";

/// A program and its arguments, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    pub program: String,
    pub args: Vec<String>,
    /// The directory it runs in; `None`: the engine's own.
    pub cwd: Option<PathBuf>,
}

/// A started process and the handles the engine keeps on it.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid, which is also its process group id.
    pub pid: u32,
    /// Readable once the process has exited.
    pub pidfd: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Starts `command` for attempt `task` on `slot`, from `path` when the program was
/// already looked up (its argv[0] stays the name it was given, as with execvp). The
/// task sees its number and slot as `SHOAL_TASK` and `SHOAL_SLOT` (and under GNU
/// parallel's names, `PARALLEL_SEQ` and `PARALLEL_JOBSLOT`, for scripts written for
/// it), and `env` besides.
pub fn spawn(
    command: &CommandLine,
    path: Option<&str>,
    limits: Limits,
    env: &[(String, String)],
    task: TaskId,
    slot: SlotId,
) -> io::Result<Spawned> {
    let program = path.unwrap_or(&command.program);
    let run = |cmd: &mut Command| {
        if let Some(dir) = &command.cwd {
            cmd.current_dir(dir);
        }
        start(cmd, limits, env, task, slot)
    };
    let mut child = match run(Command::new(program).arg0(&command.program).args(&command.args)) {
        // A script without a `#!` line: run it with sh, as execvp (and so xargs) does.
        Err(e) if e.raw_os_error() == Some(libc::ENOEXEC) => {
            run(Command::new("/bin/sh").arg(program).args(&command.args))?
        }
        result => result?,
    };
    let pid = child.id();
    let stdout = OwnedFd::from(child.stdout.take().expect("stdout is piped"));
    let stderr = OwnedFd::from(child.stderr.take().expect("stderr is piped"));
    rustix::io::ioctl_fionbio(&stdout, true)?;
    rustix::io::ioctl_fionbio(&stderr, true)?;
    // The child is not reaped by anyone but us, so its pid is still valid here.
    let pidfd = pidfd_open(Pid::from_child(&child), PidfdFlags::empty())?;
    // Dropping a std Child neither kills nor waits: the engine reaps it (see reap.rs).
    drop(child);
    Ok(Spawned { pid, pidfd, stdout, stderr })
}

/// Sets up and starts `cmd`: its own process group, null stdin, piped outputs, the
/// task's environment and limits.
fn start(
    cmd: &mut Command,
    limits: Limits,
    env: &[(String, String)],
    task: TaskId,
    slot: SlotId,
) -> io::Result<std::process::Child> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env(TASK_VAR, task.to_string())
        .env("SHOAL_SLOT", slot.to_string())
        .env("PARALLEL_SEQ", task.to_string())
        .env("PARALLEL_JOBSLOT", slot.to_string())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .process_group(0);
    if !limits.is_empty() {
        // SAFETY: apply_in_child only makes async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(move || limits.apply_in_child());
        }
    }
    cmd.spawn()
}

/// Starts a long-lived worker: `argv` in its own process group, stdin from
/// /dev/null, stdout and stderr shared with the engine's (they belong to the user's
/// code), and `channel` inherited across exec, its number in `SHOAL_WORKER_FD`, as
/// are `pass_fds` (open descriptors the caller keeps open while it spawns), each at
/// its number; then applies `limits` to it from outside (before the engine sends it
/// anything, so before it runs any task). Returns the pid (also the group id) and a
/// pidfd to learn of its exit.
///
/// By posix_spawn, never fork + exec with a `pre_exec` hook: std's fork path waits on
/// a close-on-exec pipe for the child's exec, and a host process (Python) that forks
/// without exec at that moment (a multiprocessing fork pool, `os.fork()`) hands the
/// pipe to a child that never execs: the spawn then waited as long as that child
/// lived.
pub fn spawn_worker(
    argv: &[OsString],
    env: &[(OsString, OsString)],
    limits: Limits,
    channel: BorrowedFd<'_>,
    pass_fds: &[RawFd],
) -> io::Result<(u32, OwnedFd)> {
    use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
    use nix::sys::signal::{SigSet, Signal};

    let (program, _) = argv.split_first().ok_or_else(|| io::Error::other("empty argv"))?;
    let name = program.to_string_lossy();
    let path = resolve_program(&name)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{name} not found")))?;
    let fd = channel.as_raw_fd();
    let c = |text: &OsStr| CString::new(text.as_bytes()).map_err(io::Error::other);
    let args = argv.iter().map(|a| c(a)).collect::<io::Result<Vec<_>>>()?;
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| k != "SHOAL_WORKER_FD" && !env.iter().any(|(name, _)| name == k))
        .collect();
    vars.push(("SHOAL_WORKER_FD".into(), fd.to_string().into()));
    vars.extend(env.iter().cloned());
    let envp = vars
        .iter()
        .map(|(k, v)| c(&[k.as_os_str(), v.as_os_str()].join(OsStr::new("="))))
        .collect::<io::Result<Vec<_>>>()?;

    // (Close-on-exec in the engine; dup2 to 0 in the child drops that flag there.)
    let null = std::fs::File::open("/dev/null")?;
    let mut actions = PosixSpawnFileActions::init()?;
    actions.add_dup2(null.as_raw_fd(), 0)?;
    // The engine made the channel close-on-exec so that no other child of this process
    // inherits it; dup2 of a descriptor onto itself clears that flag in this child only
    // (POSIX 2008), keeping it, and the descriptors passed, at their numbers (the front
    // end's pickles name them).
    for &inherited in std::iter::once(&fd).chain(pass_fds) {
        actions.add_dup2(inherited, inherited)?;
    }
    let mut attr = PosixSpawnAttr::init()?;
    // As std's spawn: a signal mask of none, and SIGPIPE back to its default (a host
    // such as Python ignores it).
    attr.set_sigmask(&SigSet::empty())?;
    attr.set_sigdefault(&SigSet::from(Signal::SIGPIPE))?;
    attr.set_pgroup(nix::unistd::Pid::from_raw(0))?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETPGROUP
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )?;
    let pid = posix_spawn(path.as_path(), &actions, &attr, &args, &envp)?;
    let raw = pid.as_raw() as u32;
    let started = limits.apply_to(raw).and_then(|()| {
        let child = Pid::from_raw(pid.as_raw()).ok_or_else(|| io::Error::other("pid 0"))?;
        Ok(pidfd_open(child, PidfdFlags::empty())?)
    });
    match started {
        Ok(pidfd) => Ok((raw, pidfd)),
        Err(e) => {
            // Never left running unlimited, nor unreaped.
            let _ = nix::sys::signal::killpg(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            Err(e)
        }
    }
}

/// Finds `program` on `PATH` as execvp would: a name with a `/` is taken as it is.
/// The engine resolves each program once per run instead of letting every spawn
/// search `PATH` (each miss is a failed execve in the child).
pub fn resolve_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    path.as_bytes()
        .split(|&b| b == b':')
        // An empty entry means the current directory, as for execvp.
        .map(|dir| {
            if dir.is_empty() {
                PathBuf::from(".")
            } else {
                PathBuf::from(OsStr::from_bytes(dir))
            }
        })
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &std::path::Path) -> bool {
    path.is_file() && rustix::fs::access(path, rustix::fs::Access::EXEC_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_on_path_and_keeps_paths() {
        let sh = resolve_program("sh").expect("sh is on PATH");
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{sh:?}");
        assert_eq!(resolve_program("./x"), Some(PathBuf::from("./x")));
        assert_eq!(resolve_program("no-such-program-shoal"), None);
    }

    #[test]
    fn a_worker_inherits_the_descriptors_passed_and_no_other() {
        use std::io::Read;
        use std::os::fd::AsFd;

        use rustix::pipe::{pipe_with, PipeFlags};

        let (_ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (passed_read, passed_write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        let (other_read, other_write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        // Through /proc, not `>&N`: dash refuses descriptor numbers above 9, which
        // tests running side by side reach.
        let script = r#"echo passed >/proc/self/fd/"$1"; echo leaked 2>/dev/null >/proc/self/fd/"$2"; exit 0"#;
        let argv: Vec<OsString> = ["sh", "-c", script, "sh"]
            .into_iter()
            .map(OsString::from)
            .chain([&passed_write, &other_write].map(|fd| fd.as_raw_fd().to_string().into()))
            .collect();
        let passed = [passed_write.as_raw_fd()];
        let (pid, _pidfd) =
            spawn_worker(&argv, &[], Limits::default(), theirs.as_fd(), &passed).unwrap();
        drop((passed_write, other_write));
        let exited = crate::process::reap::reap(pid).unwrap();
        assert_eq!(exited.exited, crate::process::Exited::Code(0));
        let read_all = |fd: OwnedFd| {
            let mut text = String::new();
            std::fs::File::from(fd).read_to_string(&mut text).unwrap();
            text
        };
        assert_eq!(read_all(passed_read), "passed\n");
        assert_eq!(read_all(other_read), "", "a descriptor not passed reached the worker");
    }
}
