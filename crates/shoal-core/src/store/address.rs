//! Where a store is, as a user gives it (`--store`, `SHOAL_STORE`, a Python pool's
//! `store=`): a file path for the embedded SQLite backend, or a `postgresql://` URL.
//! Telling one from the other happens here and nowhere else; which backend then opens
//! it is decided in one place too ([`Store::open`](super::Store::open)).

use std::fmt;
use std::path::{Path, PathBuf};

/// The address of a store.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum StoreAddress {
    /// An embedded SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its connection URL (`postgresql://` or `postgres://`,
    /// as libpq takes them). Shown with its password hidden.
    Postgres(String),
}

impl StoreAddress {
    /// Reads what a user gave: a URL whose scheme is `postgresql` or `postgres` (in
    /// any case) names a PostgreSQL database; anything else is a file path (a file
    /// that really is named so can be given as `./postgresql://...`).
    pub fn parse(given: impl Into<PathBuf>) -> StoreAddress {
        let given = given.into();
        match given.to_str() {
            Some(text) if is_postgres_url(text) => StoreAddress::Postgres(text.to_owned()),
            _ => StoreAddress::Sqlite(given),
        }
    }

    /// The file of an embedded store.
    pub fn path(&self) -> Option<&Path> {
        match self {
            StoreAddress::Sqlite(path) => Some(path),
            StoreAddress::Postgres(_) => None,
        }
    }

    /// The name of the backend that keeps such a store.
    pub fn backend(&self) -> &'static str {
        match self {
            StoreAddress::Sqlite(_) => "SQLite",
            StoreAddress::Postgres(_) => "PostgreSQL",
        }
    }
}

fn is_postgres_url(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("postgresql") || scheme.eq_ignore_ascii_case("postgres")
    })
}

/// A URL with its password, in the user part or in a `password=` parameter, replaced
/// by `***`: addresses are printed in errors and listings.
fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let authority_end = before_query.find('/').unwrap_or(before_query.len());
    let (authority, path) = before_query.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let mut shown = format!("{scheme}://{authority}{path}");
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
                _ => param.to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&params.join("&"));
    }
    shown
}

impl fmt::Display for StoreAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreAddress::Sqlite(path) => write!(f, "{}", path.display()),
            StoreAddress::Postgres(url) => f.write_str(&hide_password(url)),
        }
    }
}

impl fmt::Debug for StoreAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreAddress::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            StoreAddress::Postgres(url) => {
                f.debug_tuple("Postgres").field(&hide_password(url)).finish()
            }
        }
    }
}

impl From<PathBuf> for StoreAddress {
    fn from(given: PathBuf) -> StoreAddress {
        StoreAddress::parse(given)
    }
}

impl From<&Path> for StoreAddress {
    fn from(given: &Path) -> StoreAddress {
        StoreAddress::parse(given)
    }
}

impl From<&PathBuf> for StoreAddress {
    fn from(given: &PathBuf) -> StoreAddress {
        StoreAddress::parse(given)
    }
}

impl From<&str> for StoreAddress {
    fn from(given: &str) -> StoreAddress {
        StoreAddress::parse(given)
    }
}

impl From<&StoreAddress> for StoreAddress {
    fn from(address: &StoreAddress) -> StoreAddress {
        address.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgresql_url_is_told_from_a_path() {
        for url in ["postgresql://u@h/db", "postgres://h", "PostgreSQL://h:5432/db?sslmode=off"] {
            assert_eq!(StoreAddress::parse(url), StoreAddress::Postgres(url.into()), "{url}");
        }
        for path in ["s.db", "/tmp/postgresql/s.db", "./postgresql://h/db", "mysql://h/db", ""] {
            let parsed = StoreAddress::parse(path);
            assert_eq!(parsed.path(), Some(Path::new(path)), "{path}");
            assert_eq!(parsed.to_string(), path);
        }
        use std::os::unix::ffi::OsStrExt;
        let not_utf8 = Path::new(std::ffi::OsStr::from_bytes(b"postgresql://\xff"));
        assert_eq!(StoreAddress::from(not_utf8), StoreAddress::Sqlite(not_utf8.to_owned()));
    }

    #[test]
    fn a_password_is_never_shown() {
        let cases = [
            ("postgresql://ann:s3cr:et@db.example/jobs", "postgresql://ann:***@db.example/jobs"),
            ("postgres://ann@h/jobs?password=s3cret&x=1", "postgres://ann@h/jobs?password=***&x=1"),
            ("postgresql://ann:p@ss@h:5432", "postgresql://ann:***@h:5432"),
            ("postgresql://h/db", "postgresql://h/db"),
        ];
        for (url, shown) in cases {
            let address = StoreAddress::parse(url);
            assert_eq!(address.to_string(), shown);
            assert!(!format!("{address:?}").contains("s3cr"), "{address:?}");
            assert!(!format!("{address:?}").contains("p@ss"), "{address:?}");
        }
    }
}
