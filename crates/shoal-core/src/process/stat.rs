//! What `/proc` tells of a live process: its parent, CPU time and resident memory.

/// The numeric fields `numbers` (1-based, as in proc(5)) of `/proc/PID/stat`; `None`
/// once the process is gone.
fn stat_fields<const N: usize>(pid: u32, numbers: [usize; N]) -> Option<[u64; N]> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces and parentheses: count the
    // fields after its end, which come from the 3rd (state) on.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let mut values = [0; N];
    for (value, number) in values.iter_mut().zip(numbers) {
        *value = fields.get(number.checked_sub(3)?)?.parse().ok()?;
    }
    Some(values)
}

/// The parent of process `pid`.
pub fn parent(pid: u32) -> Option<u32> {
    let [ppid] = stat_fields(pid, [4])?;
    u32::try_from(ppid).ok()
}

/// CPU time used so far by process `pid`, all its threads (user and system, in clock
/// ticks); `None` once it is gone. The worker pool asks it of a worker that has gone
/// silent: one whose CPU time still grows is busy in a long call that holds its
/// heartbeat back (Python's GIL), not hung.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let [utime, stime] = stat_fields(pid, [14, 15])?;
    Some(utime + stime)
}

/// Resident memory of process `pid` in bytes, from `/proc/PID/statm`; `None` once it
/// is gone. Read after each task of a worker that may be recycled past a size.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split(' ').nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_while_this_process_works_and_is_none_for_no_process() {
        let before = cpu_ticks(std::process::id()).expect("this process");
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_ticks(std::process::id()).unwrap() > before);
        assert_eq!(cpu_ticks(u32::MAX), None);
    }

    #[test]
    fn parent_is_read_past_a_command_name_with_spaces() {
        assert_eq!(parent(std::process::id()), Some(std::os::unix::process::parent_id()));
    }

    #[test]
    fn rss_counts_memory_in_use() {
        let before = rss_bytes(std::process::id()).expect("this process");
        let block = vec![1u8; 64 << 20];
        let after = rss_bytes(std::process::id()).unwrap();
        assert!(after >= before + (60 << 20), "{before} -> {after}");
        drop(std::hint::black_box(block));
        assert_eq!(rss_bytes(u32::MAX), None);
    }
}
