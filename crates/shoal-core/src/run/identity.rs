//! [`RunIdentity`]: which run of which store, and its text in a marker.

use std::fmt;

use crate::store::StoreAddress;

/// A run: its id in its store, and the store's address. A store file is named by its
/// real path, so every process names a run alike however it was given the store (a
/// symlink, a relative path from another directory).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunIdentity {
    run: i64,
    store: StoreAddress,
}

impl RunIdentity {
    /// Run `run` of the store at `store`.
    pub fn new(run: i64, store: &StoreAddress) -> RunIdentity {
        let store = match store {
            StoreAddress::Sqlite(path) => {
                StoreAddress::Sqlite(std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()))
            }
            other => other.clone(),
        };
        RunIdentity { run, store }
    }

    /// The run's id in its store.
    pub fn run(&self) -> i64 {
        self.run
    }

    /// The store, by its real path or its URL.
    pub fn store(&self) -> &StoreAddress {
        &self.store
    }

    /// Reads what [`Display`](fmt::Display) wrote, `<run>@<store>` (a marker's value);
    /// `None` when it is not that.
    pub fn parse(text: &str) -> Option<RunIdentity> {
        let (run, store) = text.split_once('@')?;
        if store.is_empty() || !run.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(RunIdentity { run: run.parse().ok()?, store: StoreAddress::parse(store) })
    }
}

/// `<run>@<store>`, with a URL's password hidden: the value of the run's marker.
impl fmt::Display for RunIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.run, self.store)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn a_store_file_is_named_by_its_real_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.db");
        std::fs::write(&store, "").unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&store, &link).unwrap();
        let real = store.canonicalize().unwrap();
        let identity = RunIdentity::new(3, &StoreAddress::Sqlite(link));
        assert_eq!(identity, RunIdentity::new(3, &StoreAddress::Sqlite(store)));
        assert_eq!(identity.to_string(), format!("3@{}", real.display()));
        assert_eq!(identity.store().path(), Some(real.as_path()));
    }

    #[test]
    fn the_marker_text_reads_back() {
        let file = RunIdentity::new(12, &StoreAddress::Sqlite(PathBuf::from("/no/such/a@b.db")));
        assert_eq!(file.to_string(), "12@/no/such/a@b.db");
        assert_eq!(RunIdentity::parse(&file.to_string()), Some(file));
        let url = StoreAddress::parse("postgresql://shoal@db.example/jobs");
        let remote = RunIdentity::new(7, &url);
        assert_eq!(remote.to_string(), "7@postgresql://shoal@db.example/jobs");
        assert_eq!(RunIdentity::parse(&remote.to_string()), Some(remote));
        for bad in
            ["", "3", "@/s.db", "3@", "-3@/s.db", "+3@/s.db", "x@/s.db", "99999999999999999999@/s"]
        {
            assert_eq!(RunIdentity::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_password_never_reaches_the_marker() {
        let url = StoreAddress::parse("postgresql://shoal:secret@db.example/jobs");
        assert!(!RunIdentity::new(1, &url).to_string().contains("secret"));
    }
}
