//! `--memfree SIZE` and `--load N`, as GNU parallel's: a task starts only while the
//! machine has at least SIZE of memory available (`MemAvailable` of /proc/meminfo)
//! and its 1-minute load average (/proc/loadavg) is under N. The scheduler asks the
//! gate before a start, and again a second later while it is closed.

use std::path::PathBuf;

use shoal_core::scheduler::StartGate;

/// A `--load`: a number of runnable processes, or a percentage of the cores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    Absolute(f64),
    PercentOfCores(f64),
}

impl Load {
    /// The load average under which tasks start, on a machine with `cores`.
    pub fn limit(self, cores: u32) -> f64 {
        match self {
            Load::Absolute(n) => n,
            Load::PercentOfCores(percent) => percent / 100.0 * f64::from(cores),
        }
    }
}

/// Parses `--load`: `N` or `N%` (of the cores), N a positive decimal.
pub fn parse_load(text: &str) -> Result<Load, String> {
    let (number, percent) = match text.strip_suffix('%') {
        Some(number) => (number, true),
        None => (text, false),
    };
    match number.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && !number.starts_with('+') => {
            Ok(if percent { Load::PercentOfCores(n) } else { Load::Absolute(n) })
        }
        _ => Err(format!("invalid load '{text}': give a positive number, or N% of the cores")),
    }
}

/// The machine's free memory and load, checked against the run's floor and ceiling.
#[derive(Debug)]
pub struct MachineGate {
    /// The least bytes available (`--memfree`).
    memfree: Option<u64>,
    /// The load average tasks start under (`--load`, in processes).
    load: Option<f64>,
    meminfo: PathBuf,
    loadavg: PathBuf,
}

impl MachineGate {
    pub fn new(memfree: Option<u64>, load: Option<f64>) -> MachineGate {
        MachineGate {
            memfree,
            load,
            meminfo: "/proc/meminfo".into(),
            loadavg: "/proc/loadavg".into(),
        }
    }

    /// Whether a task may start, given the texts of /proc/meminfo and /proc/loadavg
    /// (`None`: unreadable, which holds nothing back: there is nothing to go by).
    fn allows(&self, meminfo: Option<&str>, loadavg: Option<&str>) -> bool {
        let memory_ok = match (self.memfree, meminfo.and_then(mem_available)) {
            (Some(floor), Some(available)) => available >= floor,
            _ => true,
        };
        let load_ok = match (self.load, loadavg.and_then(load_average)) {
            (Some(ceiling), Some(load)) => load < ceiling,
            _ => true,
        };
        memory_ok && load_ok
    }
}

impl StartGate for MachineGate {
    fn open(&self) -> bool {
        let read = |path: &PathBuf, wanted: bool| {
            wanted.then(|| std::fs::read_to_string(path).ok()).flatten()
        };
        let meminfo = read(&self.meminfo, self.memfree.is_some());
        let loadavg = read(&self.loadavg, self.load.is_some());
        self.allows(meminfo.as_deref(), loadavg.as_deref())
    }
}

/// `MemAvailable` of a /proc/meminfo, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The 1-minute load average of a /proc/loadavg.
fn load_average(loadavg: &str) -> Option<f64> {
    loadavg.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:        4000000 kB\nMemFree:          100000 kB\n\
                           MemAvailable:    2000000 kB\nBuffers:           10000 kB\n";

    #[test]
    fn memfree_opens_while_mem_available_is_at_least_the_floor() {
        let gate = |floor: u64| MachineGate::new(Some(floor), None);
        // MemAvailable counts, not MemFree: 2000000 KiB.
        assert!(gate(2_000_000 * 1024).allows(Some(MEMINFO), None));
        assert!(!gate(2_000_000 * 1024 + 1).allows(Some(MEMINFO), None));
        // Nothing to go by: nothing held back.
        assert!(gate(u64::MAX).allows(None, None));
        assert!(gate(u64::MAX).allows(Some("MemTotal: 1 kB\n"), None));
    }

    #[test]
    fn load_opens_while_the_one_minute_average_is_under_the_ceiling() {
        let gate = |ceiling: f64| MachineGate::new(None, Some(ceiling));
        let loadavg = "1.50 3.00 4.00 2/345 6789\n";
        assert!(gate(1.6).allows(None, Some(loadavg)));
        assert!(!gate(1.5).allows(None, Some(loadavg)));
        assert!(gate(0.1).allows(None, None));
        // Both: each must allow.
        let both = MachineGate::new(Some(1), Some(1.0));
        assert!(!both.allows(Some(MEMINFO), Some(loadavg)));
        assert!(both.allows(Some(MEMINFO), Some("0.5 0 0 1/1 1")));
    }

    #[test]
    fn load_is_a_number_or_a_share_of_the_cores() {
        assert_eq!(parse_load("2.5"), Ok(Load::Absolute(2.5)));
        assert_eq!(parse_load("50%").unwrap().limit(4), 2.0);
        assert_eq!(parse_load("3").unwrap().limit(4), 3.0);
        for bad in ["", "0", "-1", "x", "%", "+2", "inf", "NaN%"] {
            assert!(parse_load(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_gate_reads_the_machines_files() {
        let gate = MachineGate::new(Some(1), Some(f64::MAX));
        assert!(gate.open(), "1 byte is available and the load is under any");
        let gate = MachineGate::new(Some(u64::MAX), None);
        assert!(!gate.open(), "no machine has that much available");
    }
}
