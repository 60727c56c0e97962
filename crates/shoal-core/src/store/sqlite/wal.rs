//! Reading a store's write-ahead log (`<store>-wal`) the way SQLite replays it, to
//! find what SQLite alone would drop without a word.
//!
//! SQLite replays WAL frames in order and stops at the first one whose salts or
//! checksum do not match: every commit after a damaged frame is silently lost (and
//! overwritten by the next write). A crash only ever tears the tail of the log (the
//! transaction being written), after which no complete commit follows. So the log is
//! damaged when, past the point where SQLite stops, a frame of the same generation
//! (same salts) that checks out against its predecessor's checksum ends a
//! transaction: that is a commit SQLite would drop. A log whose header is damaged is
//! ignored whole by SQLite, so any frame after such a header is reported too.
//!
//! The format is the one in <https://www.sqlite.org/fileformat2.html#walformat>.
//! Nothing here writes; the log is read in frame-sized pieces, never whole.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The size of the log's header: a shorter log holds nothing to replay.
pub(super) const HEADER: usize = 32;
const FRAME_HEADER: usize = 24;
/// The magic numbers of a WAL: checksums over little- or big-endian words.
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;

/// The path of the write-ahead log of the database at `db`.
pub(super) fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Fails with [`Error::StoreDamaged`] when the log of the store at `db` holds commits
/// that SQLite would not replay. A missing or unreadable log is left to SQLite.
pub(super) fn check(db: &Path) -> Result<()> {
    let wal = wal_path(db);
    let unreadable = |e: std::io::Error| Error::StoreOpen {
        path: db.to_owned(),
        reason: format!("cannot read its write-ahead log {}: {e}", wal.display()),
    };
    let file = match File::open(&wal) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(unreadable(e)),
    };
    let damage = scan(file).map_err(unreadable)?;
    match damage {
        None => Ok(()),
        Some(what) => Err(Error::StoreDamaged {
            path: db.to_owned(),
            reason: format!(
                "its write-ahead log {} {what}; SQLite would drop them without a word. \
                 Restore the store from a copy, or move the -wal file aside to open it \
                 without them",
                wal.display()
            ),
        }),
    }
}

/// What is wrong with the log read from `input`, if anything.
fn scan(mut input: impl Read) -> std::io::Result<Option<String>> {
    let mut header = [0u8; HEADER];
    if !read_full(&mut input, &mut header)? {
        return Ok(None); // empty or shorter than a header: nothing to replay
    }
    let magic = be32(&header[0..4]);
    let page_size = match be32(&header[8..12]) {
        1 => 65536,
        n => n as usize,
    };
    let big_endian = magic == MAGIC_BE;
    let header_ok = (magic == MAGIC_LE || magic == MAGIC_BE)
        && page_size.is_power_of_two()
        && (512..=65536).contains(&page_size)
        && checksum(big_endian, (0, 0), &header[..24]) == pair(&header[24..32]);
    if !header_ok {
        // SQLite ignores the whole log; only a frame after the header can be lost.
        let mut rest = [0u8; FRAME_HEADER];
        return Ok(read_full(&mut input, &mut rest)?
            .then(|| "has a damaged header: every commit in it would be ignored".to_owned()));
    }
    let salts = &header[16..24];
    let mut frame = vec![0u8; FRAME_HEADER + page_size];
    // The running checksum SQLite checks each frame against, until the first bad one.
    let mut running = Some(pair(&header[24..32]));
    let mut previous = pair(&header[24..32]);
    let mut first_bad = None;
    let mut lost = 0u64;
    let mut index = 0u64;
    while read_full(&mut input, &mut frame)? {
        index += 1;
        let (pgno, commit) = (be32(&frame[0..4]), be32(&frame[4..8]));
        let stored = pair(&frame[16..24]);
        let same_generation = &frame[8..16] == salts && pgno != 0;
        let body = |seed| {
            let sum = checksum(big_endian, seed, &frame[..8]);
            checksum(big_endian, sum, &frame[FRAME_HEADER..])
        };
        match running {
            Some(seed) if same_generation && body(seed) == stored => running = Some(stored),
            Some(_) => {
                running = None;
                first_bad = Some(index);
            }
            // Past the stop: a commit of this generation that is whole on its own.
            None if same_generation && commit != 0 && body(previous) == stored => lost += 1,
            None => {}
        }
        previous = stored;
    }
    Ok(match (first_bad, lost) {
        (Some(frame), lost) if lost > 0 => Some(format!(
            "is damaged at frame {frame} (byte {}): {lost} committed transaction{} after it",
            HEADER as u64 + (frame - 1) * (FRAME_HEADER + page_size) as u64,
            if lost == 1 { "" } else { "s" }
        )),
        _ => None,
    })
}

/// Fills `buf`; false at the end of the input (a partial piece counts as the end).
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[..4].try_into().expect("four bytes"))
}

fn pair(bytes: &[u8]) -> (u32, u32) {
    (be32(&bytes[0..4]), be32(&bytes[4..8]))
}

/// SQLite's WAL checksum of `data` (a multiple of 8 bytes), continuing from `seed`.
fn checksum(big_endian: bool, seed: (u32, u32), data: &[u8]) -> (u32, u32) {
    let word = |b: &[u8]| {
        let b: [u8; 4] = b.try_into().expect("four bytes");
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let (mut s1, mut s2) = seed;
    for pair in data.chunks_exact(8) {
        s1 = s1.wrapping_add(word(&pair[0..4])).wrapping_add(s2);
        s2 = s2.wrapping_add(word(&pair[4..8])).wrapping_add(s1);
    }
    (s1, s2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewRun, NewTask, Store};
    use crate::task::TaskMeta;

    /// A store whose log holds `runs` commits (one run with a task each), copied
    /// while its connection is open, so the copy's log is what a `kill -9` leaves.
    fn store_with_log(dir: &Path, runs: u64) -> (PathBuf, Vec<u8>) {
        let live = dir.join("live.db");
        let store = Store::open(&live).unwrap();
        for i in 1..=runs {
            let hold = store
                .create_run(&NewRun {
                    command: vec!["echo".into()],
                    options: serde_json::json!({}),
                    cwd: "/".into(),
                    memory_limit_mode: None,
                })
                .unwrap();
            let task = NewTask {
                task: 1,
                args: vec![format!("{i}")],
                command: format!("echo {i}"),
                meta: TaskMeta::default(),
            };
            store.insert_tasks(hold.run(), &[task]).unwrap();
        }
        let copy = dir.join("copy.db");
        std::fs::copy(&live, &copy).unwrap();
        let log = std::fs::read(wal_path(&live)).unwrap();
        (copy, log)
    }

    fn frame_offset(log: &[u8], frame: usize) -> usize {
        HEADER + (frame - 1) * (FRAME_HEADER + be32(&log[8..12]) as usize)
    }

    #[test]
    fn a_whole_log_and_a_torn_tail_are_fine() {
        let dir = tempfile::tempdir().unwrap();
        let (copy, log) = store_with_log(dir.path(), 5);
        assert!(log.len() > frame_offset(&log, 6), "several frames: {} bytes", log.len());
        let tasks = |copy: &Path| -> u64 {
            Store::open_read_only(copy).unwrap().runs().unwrap().iter().map(|r| r.total).sum()
        };
        std::fs::write(wal_path(&copy), &log).unwrap();
        check(&copy).unwrap();
        assert_eq!(tasks(&copy), 5);
        // A crash in the middle of the last frame: only that unfinished commit is lost.
        std::fs::write(wal_path(&copy), &log[..log.len() - 100]).unwrap();
        check(&copy).unwrap();
        assert_eq!(tasks(&copy), 4);
        std::fs::write(wal_path(&copy), b"").unwrap();
        check(&copy).unwrap();
    }

    #[test]
    fn a_damaged_frame_with_commits_after_it_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (copy, mut log) = store_with_log(dir.path(), 5);
        // One flipped byte in the page of frame 2.
        let at = frame_offset(&log, 2) + FRAME_HEADER + 200;
        log[at] ^= 0x55;
        std::fs::write(wal_path(&copy), &log).unwrap();
        let err = check(&copy).expect_err("damaged");
        let text = err.to_string();
        assert!(matches!(err, Error::StoreDamaged { .. }), "{text}");
        assert!(text.contains("damaged at frame 2"), "{text}");
        assert!(text.contains("committed transactions after it"), "{text}");
        assert!(text.contains("copy.db-wal"), "{text}");
        // Both ways of opening refuse it, and neither touches the files.
        assert!(matches!(Store::open(&copy), Err(Error::StoreDamaged { .. })));
        assert!(matches!(Store::open_read_only(&copy), Err(Error::StoreDamaged { .. })));
        assert_eq!(std::fs::read(wal_path(&copy)).unwrap(), log);
        // What SQLite alone makes of it: the commits after frame 2 are silently gone.
        let conn = rusqlite::Connection::open(&copy).unwrap();
        let runs: i64 = conn.query_row("SELECT count(*) FROM runs", [], |r| r.get(0)).unwrap();
        assert!(runs < 5, "SQLite replayed past the damage: {runs} runs");
    }

    #[test]
    fn a_damaged_header_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (copy, mut log) = store_with_log(dir.path(), 2);
        log[20] ^= 1; // a salt: the header's checksum no longer matches
        std::fs::write(wal_path(&copy), &log).unwrap();
        let text = check(&copy).expect_err("damaged").to_string();
        assert!(text.contains("damaged header"), "{text}");
    }
}
