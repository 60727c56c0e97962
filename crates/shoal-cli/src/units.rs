//! Parsing of the human units the command line accepts: durations (`250ms`, `1.5`,
//! `3m`) and byte sizes (`512M`, `1.5G`). Both functions serve as clap
//! `value_parser`s, so their error strings are shown to users as they are: each one
//! quotes the text it rejects and says what would have been accepted.

use std::time::Duration;

use shoal_core::process::MIN_MEMORY_LIMIT;

const DURATION_HELP: &str = "use seconds (1.5) or a unit: 250ms, 2s, 3m, 1h";
const SIZE_HELP: &str = "use bytes (4096) or a unit: 100K, 512M, 1.5G, 2T";

/// The longest duration taken, in seconds (about 31 years), as in the Python package
/// (`shoal._options.MAX_SECONDS`): the engine adds durations to its clock, and "no
/// limit" is written by leaving the option out.
pub const MAX_SECONDS: f64 = 1e9;

/// The range of a duration ([`seconds`]), as errors say it.
pub const DURATION_RANGE: &str = "from 0 to 1000000000 seconds (about 31 years)";
/// The range of a timeout ([`timeout_seconds`]), as errors say it.
pub const TIMEOUT_RANGE: &str = "above 0 and at most 1000000000 seconds (about 31 years)";

/// Seconds as a `Duration`, if within [`DURATION_RANGE`] (NaN is not).
pub fn seconds(secs: f64) -> Option<Duration> {
    (0.0..=MAX_SECONDS).contains(&secs).then(|| Duration::from_secs_f64(secs))
}

/// Seconds as a number to show: huge ones in exponent form (`1e19`, not twenty digits).
pub fn show_seconds(secs: f64) -> String {
    if secs.abs() >= 1e16 {
        format!("{secs:e}")
    } else {
        secs.to_string()
    }
}

/// Seconds as a timeout, if within [`TIMEOUT_RANGE`].
pub fn timeout_seconds(secs: f64) -> Option<Duration> {
    seconds(secs).filter(|d| !d.is_zero())
}

/// Parses a duration: a plain number is seconds (`1.5`); the suffixes `ms`, `s`, `m`
/// and `h` (any case) name the unit. Negative, non-finite, empty values and values
/// past [`MAX_SECONDS`] are refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs = parse_seconds(s, "duration")?;
    seconds(secs).ok_or_else(|| format!("invalid duration '{s}': it must be {DURATION_RANGE}"))
}

/// Parses a timeout: a duration above zero (a zero timeout would kill every task
/// the moment it starts).
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs = parse_seconds(s, "timeout")?;
    timeout_seconds(secs)
        .ok_or_else(|| format!("invalid timeout '{s}': it must be {TIMEOUT_RANGE}"))
}

/// `--timeout`: a duration, or `N%` of the median duration of the succeeded tasks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeoutArg {
    Fixed(Duration),
    /// Percent of the median.
    Median(f64),
}

/// The most `--timeout N%` takes.
const MAX_PERCENT: f64 = 1e6;

/// Parses `--timeout`: as [`parse_timeout`], or `N%` (N above 0, decimals allowed).
pub fn parse_timeout_arg(s: &str) -> Result<TimeoutArg, String> {
    let Some(percent) = s.trim().strip_suffix('%') else {
        return parse_timeout(s).map(TimeoutArg::Fixed);
    };
    match percent.parse::<f64>() {
        Ok(p) if p > 0.0 && p <= MAX_PERCENT => Ok(TimeoutArg::Median(p)),
        _ => Err(format!(
            "invalid timeout '{s}': a percentage of the median must be above 0% and at most \
             {MAX_PERCENT}%"
        )),
    }
}

/// The number of seconds a duration's text says (not yet checked against a range);
/// `what` names it in errors.
fn parse_seconds(s: &str, what: &str) -> Result<f64, String> {
    let bad = |why: &str| format!("invalid {what} '{s}': {why}");
    let text = s.trim().to_ascii_lowercase();
    if text.is_empty() {
        return Err(bad(&format!("it is empty; {DURATION_HELP}")));
    }
    if text.starts_with('-') {
        return Err(bad(&format!("a {what} cannot be negative")));
    }
    // `ms` before `m` and `s`, or "250ms" would read as 250 minutes of garbage.
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (text.as_str(), 1.0)
    };
    let value = parse_decimal(number.trim_end()).ok_or_else(|| bad(DURATION_HELP))?;
    Ok(value * scale)
}

/// Parses a size in bytes: a whole number (`4096`) or a number with a binary suffix
/// `K`, `M`, `G`, `T` (powers of 1024, any case, optionally followed by `B` or `iB`).
/// Zero is returned as is: whether it makes sense is the caller's decision.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("invalid size '{s}': {why}");
    let text = s.trim().to_ascii_lowercase();
    if text.is_empty() {
        return Err(bad(&format!("it is empty; {SIZE_HELP}")));
    }
    if text.starts_with('-') {
        return Err(bad("a size cannot be negative"));
    }
    let mut rest = text.strip_suffix('b').unwrap_or(&text);
    // "iB" is only meaningful after a unit letter ("MiB"), never alone ("5iB").
    let binary_marker = rest.strip_suffix('i');
    if let Some(r) = binary_marker {
        rest = r;
    }
    let (number, shift) = match rest.as_bytes().last() {
        Some(b'k') => (&rest[..rest.len() - 1], 10),
        Some(b'm') => (&rest[..rest.len() - 1], 20),
        Some(b'g') => (&rest[..rest.len() - 1], 30),
        Some(b't') => (&rest[..rest.len() - 1], 40),
        _ if binary_marker.is_some() => return Err(bad(SIZE_HELP)),
        _ => (rest, 0),
    };
    let number = number.trim_end();
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if whole.len() + fraction.len() == 0 || !digits(whole) || !digits(fraction) {
        return Err(bad(SIZE_HELP));
    }
    if shift == 0 && !fraction.is_empty() {
        return Err(bad("a byte count must be a whole number"));
    }
    // Exact integer arithmetic: "1.5G" must be 1610612736, not a float's neighbour.
    let too_large = || bad("it is too large");
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| too_large())? };
    let fraction = &fraction[..fraction.len().min(20)];
    let frac_num: u128 =
        if fraction.is_empty() { 0 } else { fraction.parse().map_err(|_| too_large())? };
    let frac_bytes = (frac_num << shift) / 10u128.pow(fraction.len() as u32);
    let total = whole.checked_shl(shift).filter(|t| t >> shift == whole).ok_or_else(too_large)?;
    u64::try_from(total + frac_bytes).map_err(|_| too_large())
}

/// A memory limit: at least [`MIN_MEMORY_LIMIT`] (below it no program can start, and
/// every task would fail). Where only `RLIMIT_AS` can be had, the floor is higher:
/// the run checks it once the mechanism is known.
pub fn parse_memory_limit(s: &str) -> Result<u64, String> {
    match parse_size(s)? {
        bytes if bytes < MIN_MEMORY_LIMIT => Err(format!(
            "invalid size '{s}': a memory limit must be at least {} (no program starts with less)",
            show_size(MIN_MEMORY_LIMIT)
        )),
        bytes => Ok(bytes),
    }
}

/// A size as a person writes it: `4M`, `512K`, or bytes when not a whole unit.
pub fn show_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}G", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}M", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}K", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// A non-negative decimal without sign or exponent ("1", "1.5", ".5"); `None` for
/// anything else, so "nan", "inf" and "1e3" are refused rather than half-accepted.
fn parse_decimal(text: &str) -> Option<f64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if whole.len() + fraction.len() == 0 || !digits(whole) || !digits(fraction) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_of_the_median() {
        assert_eq!(parse_timeout_arg("250%"), Ok(TimeoutArg::Median(250.0)));
        assert_eq!(parse_timeout_arg("150.5%"), Ok(TimeoutArg::Median(150.5)));
        assert_eq!(parse_timeout_arg("2s"), Ok(TimeoutArg::Fixed(Duration::from_secs(2))));
        for bad in ["0%", "-5%", "%", "x%", "inf%", "NaN%", "2000000%"] {
            assert!(parse_timeout_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 0.5H "), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration(".25s"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("10 ms"), Ok(Duration::from_millis(10)));
    }

    #[test]
    fn a_memory_limit_no_program_can_start_with_is_refused() {
        assert_eq!(parse_memory_limit("512M"), Ok(512 << 20));
        assert_eq!(parse_memory_limit("1M"), Ok(1 << 20));
        for tiny in ["0", "1k", "1023K"] {
            assert_eq!(
                parse_memory_limit(tiny),
                Err(format!(
                    "invalid size '{tiny}': a memory limit must be at least 1M \
                     (no program starts with less)"
                ))
            );
        }
    }

    #[test]
    fn sizes_are_shown_in_their_largest_whole_unit() {
        assert_eq!(show_size(4 << 20), "4M");
        assert_eq!(show_size(3 << 30), "3G");
        assert_eq!(show_size(1536), "1536 bytes");
        assert_eq!(show_size(2048), "2K");
        assert_eq!(show_size(1000), "1000 bytes");
    }

    #[test]
    fn bad_durations_name_the_text() {
        assert_eq!(
            parse_duration("5x").unwrap_err(),
            "invalid duration '5x': use seconds (1.5) or a unit: 250ms, 2s, 3m, 1h"
        );
        assert_eq!(
            parse_duration("-1").unwrap_err(),
            "invalid duration '-1': a duration cannot be negative"
        );
        assert!(parse_duration("").unwrap_err().starts_with("invalid duration '': it is empty"));
        for bad in ["nan", "inf", "1e3", "s", "ms", ".", "1.2.3", "+1", "1 2s", "1hs"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains(&format!("'{bad}'")), "{bad}: {err}");
        }
        let range = "it must be from 0 to 1000000000 seconds (about 31 years)";
        for huge in ["99999999999999999999999h", "10000000000000000000", "1000000000.5", "278000h"]
        {
            assert_eq!(parse_duration(huge), Err(format!("invalid duration '{huge}': {range}")));
        }
        assert_eq!(parse_duration("1000000000"), Ok(Duration::from_secs(1_000_000_000)));
        assert_eq!(seconds(f64::NAN), None);
        assert_eq!(
            (show_seconds(1e19), show_seconds(2.5), show_seconds(1e9)),
            ("1e19".into(), "2.5".into(), "1000000000".into())
        );
        assert_eq!(seconds(-0.5), None);
        assert_eq!(seconds(1.8e19), None);
    }

    #[test]
    fn a_timeout_must_be_above_zero() {
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        let range = "it must be above 0 and at most 1000000000 seconds (about 31 years)";
        for bad in ["0", "0ms", "10000000000000000000", "1000000001"] {
            assert_eq!(parse_timeout(bad), Err(format!("invalid timeout '{bad}': {range}")));
        }
        assert_eq!(
            parse_timeout("-1").unwrap_err(),
            "invalid timeout '-1': a timeout cannot be negative"
        );
        assert_eq!(timeout_seconds(1e9), Some(Duration::from_secs(1_000_000_000)));
        assert_eq!(timeout_seconds(1.8e19), None);
        assert_eq!(timeout_seconds(0.0), None);
    }

    #[test]
    fn sizes_with_and_without_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("100k"), Ok(102_400));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1.5G"), Ok(1_610_612_736));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("512MB"), Ok(512 << 20));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1gib"), Ok(1 << 30));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size(".5K"), Ok(512));
    }

    #[test]
    fn bad_sizes_name_the_text() {
        assert_eq!(
            parse_size("12x").unwrap_err(),
            "invalid size '12x': use bytes (4096) or a unit: 100K, 512M, 1.5G, 2T"
        );
        assert_eq!(parse_size("-1M").unwrap_err(), "invalid size '-1M': a size cannot be negative");
        assert_eq!(
            parse_size("1.5").unwrap_err(),
            "invalid size '1.5': a byte count must be a whole number"
        );
        assert!(parse_size("").unwrap_err().contains("it is empty"));
        for bad in ["G", "5iB", "1e3", "1.2.3K", "abc", "1KK", "MB"] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains(&format!("'{bad}'")), "{bad}: {err}");
        }
        assert!(parse_size("99999999999T").unwrap_err().ends_with("it is too large"));
        assert!(parse_size("18446744073709551616").unwrap_err().ends_with("it is too large"));
    }
}
