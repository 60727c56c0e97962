//! Memory limits through cgroups: one memory cgroup per slot, which every task of
//! that slot joins between fork and exec; the kernel's OOM killer enforces the
//! limit on resident memory and counts its kills, so `memory_exceeded` is exact.
//!
//! cgroup v2 (`memory.max`, `memory.events`) where the unified hierarchy has the
//! memory controller delegated to us; cgroup v1 (`memory.limit_in_bytes`,
//! `memory.oom_control`) where memory is on a v1 hierarchy we may write to; when
//! neither is possible, [`MemoryMode::RlimitAs`] (see `limits.rs`).
//!
//! Layout: `<our cgroup>/shoal-<pid namespace>-<pid>-<k>/slot-<n>` (k numbers the
//! limiters of one process), removed when the limiter is dropped, or by a later
//! limiter when its owner died without cleaning up.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The mechanism that enforces a memory limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryMode {
    CgroupV2,
    CgroupV1,
    /// `setrlimit(RLIMIT_AS)`: allocations past the limit fail inside the task.
    RlimitAs,
}

/// The least memory limit under which a small program still starts, under the
/// mechanism with the lowest floor (a cgroup): [`MemoryMode::floor`] of a cgroup.
pub const MIN_MEMORY_LIMIT: u64 = 1 << 20;

impl MemoryMode {
    /// The least limit under which a small program (`true`, `sh -c true`, `bash`,
    /// `ls`) still starts, with room to spare. A cgroup counts what the task makes
    /// resident (`sh -c true` started at 256 KiB on cgroup v1); `RLIMIT_AS` counts its
    /// address space, every shared library mapped (`sh -c true` needed 3 MiB, `bash`
    /// and `ls` 4 MiB). Below it every task fails before its program runs.
    pub fn floor(self) -> u64 {
        match self {
            MemoryMode::CgroupV2 | MemoryMode::CgroupV1 => MIN_MEMORY_LIMIT,
            MemoryMode::RlimitAs => 4 << 20,
        }
    }

    /// The name recorded in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryMode::CgroupV2 => "cgroup_v2",
            MemoryMode::CgroupV1 => "cgroup_v1",
            MemoryMode::RlimitAs => "rlimit_as",
        }
    }
}

/// A per-task memory limit and the mechanism that enforces it.
#[derive(Debug)]
pub enum MemoryLimit {
    /// Per-slot memory cgroups.
    Cgroup(MemoryLimiter),
    /// `RLIMIT_AS` of this many bytes.
    AddressSpace(u64),
}

impl MemoryLimit {
    /// A limit of `bytes` per task for `slots` slots, by cgroup where this machine
    /// allows it, else by `RLIMIT_AS`.
    pub fn new(bytes: u64, slots: usize) -> MemoryLimit {
        MemoryLimiter::new(bytes, slots)
            .map_or(MemoryLimit::AddressSpace(bytes), MemoryLimit::Cgroup)
    }

    /// The most slots it can limit: one cgroup each was made at the start; `None`
    /// when any number can be (`RLIMIT_AS` is per process).
    pub fn max_slots(&self) -> Option<usize> {
        match self {
            MemoryLimit::Cgroup(limiter) => Some(limiter.slots.len()),
            MemoryLimit::AddressSpace(_) => None,
        }
    }

    /// The mechanism in use.
    pub fn mode(&self) -> MemoryMode {
        match self {
            MemoryLimit::Cgroup(limiter) => limiter.mode(),
            MemoryLimit::AddressSpace(_) => MemoryMode::RlimitAs,
        }
    }
}

/// Which files a cgroup version uses.
#[derive(Debug, Clone, Copy)]
struct Files {
    mode: MemoryMode,
    limit: &'static str,
    /// Holds a line `oom_kill N`.
    events: &'static str,
    /// Caps memory plus swap, so a task cannot escape its limit into swap; written
    /// best-effort (it exists only where swap is accounted).
    swap: (&'static str, SwapCap),
}

/// What the swap file takes.
#[derive(Debug, Clone, Copy)]
enum SwapCap {
    /// No swap at all (v2 `memory.swap.max`).
    Zero,
    /// Memory plus swap, equal to the limit (v1 `memory.memsw.limit_in_bytes`).
    Limit,
}

const V2: Files = Files {
    mode: MemoryMode::CgroupV2,
    limit: "memory.max",
    events: "memory.events",
    swap: ("memory.swap.max", SwapCap::Zero),
};
const V1: Files = Files {
    mode: MemoryMode::CgroupV1,
    limit: "memory.limit_in_bytes",
    events: "memory.oom_control",
    swap: ("memory.memsw.limit_in_bytes", SwapCap::Limit),
};

/// Per-slot memory cgroups of one engine run.
#[derive(Debug)]
pub struct MemoryLimiter {
    files: Files,
    root: PathBuf,
    /// Per slot (index 0 is slot 1): its directory and its open `cgroup.procs`.
    slots: Vec<(PathBuf, OwnedFd)>,
}

impl MemoryLimiter {
    /// Sets up `slots` cgroups limited to `bytes` each, on the best hierarchy this
    /// machine lets us write to; `None` when there is none (use `RLIMIT_AS`).
    pub fn new(bytes: u64, slots: usize) -> Option<MemoryLimiter> {
        let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
        let own = fs::read_to_string("/proc/self/cgroup").ok()?;
        candidates(&mounts, &own)
            .into_iter()
            .find_map(|(files, parent)| Self::create(files, &parent, bytes, slots).ok())
    }

    /// The mechanism in use.
    pub fn mode(&self) -> MemoryMode {
        self.files.mode
    }

    fn create(files: Files, parent: &Path, bytes: u64, slots: usize) -> io::Result<MemoryLimiter> {
        if files.mode == MemoryMode::CgroupV2 {
            let delegated = fs::read_to_string(parent.join("cgroup.subtree_control"))?;
            if !delegated.split_whitespace().any(|c| c == "memory") {
                return Err(io::Error::other("memory controller not delegated"));
            }
        }
        remove_stale(parent);
        // Several limiters may live in one process (several pools): number them.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root = parent.join(format!("shoal-{}-{}-{n}", pid_namespace(), std::process::id()));
        fs::create_dir(&root)?;
        // From here on, Drop removes what was made if a later step fails.
        let mut limiter = MemoryLimiter { files, root, slots: Vec::with_capacity(slots) };
        if files.mode == MemoryMode::CgroupV2 {
            fs::write(limiter.root.join("cgroup.subtree_control"), "+memory")?;
        }
        for slot in 1..=slots {
            let dir = limiter.root.join(format!("slot-{slot}"));
            fs::create_dir(&dir)?;
            let procs = fs::OpenOptions::new().write(true).open(dir.join("cgroup.procs"));
            limiter.slots.push((dir.clone(), OwnedFd::from(procs?)));
            fs::write(dir.join(files.limit), bytes.to_string())?;
            let swap = match files.swap.1 {
                SwapCap::Zero => 0,
                SwapCap::Limit => bytes,
            };
            let _ = fs::write(dir.join(files.swap.0), swap.to_string());
        }
        Ok(limiter)
    }

    /// The open `cgroup.procs` of a slot: a child joins by writing "0" to it.
    pub fn procs_fd(&self, slot: usize) -> i32 {
        self.slots[slot - 1].1.as_raw_fd()
    }

    /// How many processes the OOM killer has killed in the slot's cgroup so far.
    pub fn oom_kills(&self, slot: usize) -> u64 {
        let text = fs::read_to_string(self.slots[slot - 1].0.join(self.files.events));
        text.ok().and_then(|t| oom_kill_count(&t)).unwrap_or(0)
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        // The slots are empty by now: every task's group is killed before it is reaped.
        for (dir, _) in self.slots.drain(..) {
            let _ = fs::remove_dir(dir);
        }
        let _ = fs::remove_dir(&self.root);
    }
}

/// Removes the cgroups that shoal processes which no longer exist left behind (a
/// `kill -9` gives no chance to clean up). Only those of our pid namespace: a pid
/// from another one means nothing here. A cgroup still holding a process cannot be
/// removed and stays.
fn remove_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else { return };
    let namespace = pid_namespace();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((ns, pid)) = name.to_str().and_then(owner) else { continue };
        if ns != namespace || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let root = entry.path();
        if let Ok(slots) = fs::read_dir(&root) {
            for slot in slots.flatten().filter(|s| s.path().is_dir()) {
                let _ = fs::remove_dir(slot.path());
            }
        }
        let _ = fs::remove_dir(&root);
    }
}

/// The pid namespace and pid in a cgroup name `shoal-<namespace>-<pid>-<k>`.
fn owner(name: &str) -> Option<(u64, u32)> {
    let mut parts = name.strip_prefix("shoal-")?.splitn(3, '-');
    let (ns, pid, k) = (parts.next()?, parts.next()?, parts.next()?);
    k.parse::<u64>().ok()?;
    Some((ns.parse().ok()?, pid.parse().ok()?))
}

/// Our pid namespace's inode number (0 if it cannot be read).
fn pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
}

/// The hierarchies to try, best first: (files, the cgroup directory to nest under).
fn candidates(mounts: &str, own: &str) -> Vec<(Files, PathBuf)> {
    let mut found = Vec::new();
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, mount, kind, options, ..] = fields[..] else { continue };
        let mount = Path::new(mount);
        if kind == "cgroup2" {
            let controllers =
                fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
            if controllers.split_whitespace().any(|c| c == "memory") {
                let path = own_path(own, |c| c.is_empty()).unwrap_or("/");
                found.insert(0, (V2, join_cgroup(mount, path)));
            }
        } else if kind == "cgroup" && options.split(',').any(|o| o == "memory") {
            // Our own v1 cgroup may not be visible in this mount namespace: then its root.
            let nested = own_path(own, |c| c.split(',').any(|c| c == "memory"))
                .map(|p| join_cgroup(mount, p))
                .filter(|p| p.is_dir());
            found.push((V1, nested.unwrap_or_else(|| mount.to_owned())));
        }
    }
    found
}

/// The path of our cgroup in the hierarchy whose controller list matches, from
/// `/proc/self/cgroup` (`ID:CONTROLLERS:PATH` lines).
fn own_path(own: &str, controllers: impl Fn(&str) -> bool) -> Option<&str> {
    own.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers(list).then_some(path)
    })
}

fn join_cgroup(mount: &Path, path: &str) -> PathBuf {
    mount.join(path.trim_start_matches('/'))
}

/// The `oom_kill N` line of `memory.events` (v2) or `memory.oom_control` (v1).
fn oom_kill_count(text: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_cgroups_of_dead_shoals_are_removed_and_live_ones_kept() {
        let parent = std::env::temp_dir().join(format!("shoal-cgroup-test-{}", std::process::id()));
        let ns = pid_namespace();
        let dead = parent.join(format!("shoal-{ns}-4194305-0"));
        let live = parent.join(format!("shoal-{ns}-{}-7", std::process::id()));
        let foreign = parent.join(format!("shoal-{}-4194305-0", ns + 1));
        let other = parent.join("unrelated");
        for dir in [dead.join("slot-1"), dead.join("slot-2"), live.join("slot-1"), foreign.clone()]
            .into_iter()
            .chain([other.clone()])
        {
            fs::create_dir_all(dir).unwrap();
        }
        remove_stale(&parent);
        assert!(!dead.exists(), "pid 4194305 is above the kernel's pid limit: never alive");
        assert!(live.join("slot-1").exists());
        assert!(foreign.exists(), "another pid namespace's cgroups are not ours to judge");
        assert!(other.exists());
        fs::remove_dir_all(&parent).unwrap();
    }

    #[test]
    fn reads_the_oom_kill_counter_of_both_versions() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(oom_kill_count(v1), Some(3));
        assert_eq!(oom_kill_count(v2), Some(2));
        assert_eq!(oom_kill_count("oom_kill_disable 0\n"), None);
    }

    #[test]
    fn finds_our_cgroup_path_per_hierarchy() {
        let own = "4:memory:/jobs/42\n1:cpu:/x\n0::/user.slice/shoal.scope\n";
        assert_eq!(own_path(own, |c| c.split(',').any(|c| c == "memory")), Some("/jobs/42"));
        assert_eq!(own_path(own, |c| c.is_empty()), Some("/user.slice/shoal.scope"));
        assert_eq!(
            join_cgroup(Path::new("/sys/fs/cgroup"), "/user.slice"),
            PathBuf::from("/sys/fs/cgroup/user.slice")
        );
    }

    #[test]
    fn a_v1_memory_mount_is_a_candidate_and_others_are_not() {
        let mounts = "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n";
        let own = "4:memory:/not/visible/here\n";
        let found = candidates(mounts, own);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0.mode, MemoryMode::CgroupV1);
        assert_eq!(found[0].1, PathBuf::from("/sys/fs/cgroup/memory"));
    }
}
