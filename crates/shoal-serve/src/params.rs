//! A request's query parameters, checked: an unknown name, a bad number or a value
//! out of range is a 400 that names it, never ignored.

use std::str::FromStr;

use crate::error::ApiError;

/// The query parameters of one request, by name (a name may repeat).
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// The parameters given, refused if any is not one of `known`.
    pub fn new(pairs: Vec<(String, String)>, known: &[&str]) -> Result<Params, ApiError> {
        if let Some((name, _)) = pairs.iter().find(|(name, _)| !known.contains(&name.as_str())) {
            return Err(ApiError::bad(format!(
                "unknown parameter {name:?} (known: {})",
                known.join(", ")
            )));
        }
        Ok(Params { pairs })
    }

    /// Every value of `name`, each split at commas, empty parts dropped.
    pub fn list(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// The last value of `name`, if given and not empty.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The value of `name` as a number, if given.
    pub fn number<T: FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        self.text(name)
            .map(|v| {
                v.parse().map_err(|_| {
                    ApiError::bad(format!("{name}={v:?}: not a number of the right range"))
                })
            })
            .transpose()
    }

    /// A page size: `default` when not given, 1..=`max` when given.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.number::<usize>("limit")? {
            None => Ok(default),
            Some(n) if (1..=max).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::bad(format!("limit={n}: a page holds 1 to {max}"))),
        }
    }
}
