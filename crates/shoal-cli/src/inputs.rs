//! Where the inputs of `shoal run` come from: the `:::` and `::::` groups after the
//! command (GNU parallel style), the lines of standard input, or a `--tasks` JSON
//! lines file with per-task priority, cost, key, timeout and retries. It turns them
//! into argument lists; it knows nothing of templates or of running anything.

use std::fs;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use shoal_core::task::TaskMeta;

use crate::units::{
    parse_duration, parse_timeout, seconds, timeout_seconds, DURATION_RANGE, TIMEOUT_RANGE,
};

/// What went wrong while reading the inputs, and where.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Nothing before the first `:::`/`::::`.
    #[error("no command given (expected a command before `:::` or `::::`)")]
    EmptyCommand,
    /// A `::::` or `--tasks` file (or standard input) that could not be read.
    #[error("cannot read input file {}: {source}", show(path))]
    File { path: PathBuf, source: io::Error },
    /// A line longer than `limit` bytes (or endless, as `/dev/zero` gives).
    #[error("{}:{line}: a line longer than {} ({why})", show(path), show_limit(*limit))]
    LineTooLong { path: PathBuf, line: usize, limit: usize, why: &'static str },
    /// A line that is not UTF-8 text.
    #[error("{}:{line}: not valid UTF-8 text", show(path))]
    NotUtf8 { path: PathBuf, line: usize },
    /// `-m`/`-X`: an input whose command alone is as long as `-s` allows, or longer.
    #[error("command line too long ({length} >= {limit}, see -s) at input {input}: {start}")]
    CommandTooLong { input: usize, length: usize, limit: usize, start: String },
    /// A `--tasks` line that is not a valid task.
    #[error("{}:{line}: {reason}", show(path))]
    TaskLine { path: PathBuf, line: usize, reason: String },
}

/// The longest input line of a `::::` file or standard input, in bytes: Linux passes
/// no argument of more than `MAX_ARG_STRLEN` bytes to a program (32 pages, 128 KiB
/// with 4 KiB pages), its terminating NUL included. A longer input could never run,
/// and an endless one (`:::: /dev/zero`) must not fill the memory.
pub fn max_input_line() -> usize {
    32 * rustix::param::page_size() - 1
}
const INPUT_LINE_WHY: &str = "the longest argument Linux passes to a program";

/// The longest `--tasks` line: room for several of the longest arguments, in JSON.
pub const MAX_TASK_LINE: usize = 1 << 20;
const TASK_LINE_WHY: &str = "the most a task line may hold";

/// `-` is standard input; say so rather than print a lone dash.
fn show(path: &Path) -> String {
    if path == Path::new("-") {
        "(standard input)".to_owned()
    } else {
        path.display().to_string()
    }
}

/// A line limit in MiB or KiB where it is a whole number of them, else in bytes.
fn show_limit(bytes: usize) -> String {
    match bytes {
        b if b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// One input group as written on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputGroupSpec {
    /// `::: a b c`: the words themselves.
    Literal(Vec<String>),
    /// `:::: file`: the lines of a file (`-` is standard input).
    File(PathBuf),
}

/// How inputs are read and cleaned, as GNU parallel's `-d`/`-0`, `-E`, `--trim` and
/// `--colsep`.
#[derive(Debug, Clone, Default)]
pub struct InputRules {
    /// What ends an input read from a file or stdin; `None`: a newline (`\r\n` too).
    pub delimiter: Option<Vec<u8>>,
    /// An input equal to this ends its group (compared before trimming).
    pub eof: Option<String>,
    /// White space removed around each input (each column with `colsep`).
    pub trim: Trim,
    /// Splits each input into columns, which stand for the inputs of the task.
    pub colsep: Option<regex::Regex>,
    /// `--header`: the first line of each file names its columns and is no input
    /// ([`take_header`] reads standard input's, so it is not skipped again).
    pub header: bool,
}

/// Which white space `--trim` removes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Trim {
    /// None (`n`).
    #[default]
    None,
    /// Leading (`l`).
    Left,
    /// Trailing (`r`).
    Right,
    /// Both (`lr` or `rl`).
    Both,
}

/// Parses `--trim` as GNU parallel takes it: n, l, r, lr or rl.
pub fn parse_trim(text: &str) -> Result<Trim, String> {
    Ok(match text {
        "n" => Trim::None,
        "l" => Trim::Left,
        "r" => Trim::Right,
        "lr" | "rl" => Trim::Both,
        _ => return Err(format!("'{text}' is none of n, l, r, lr, rl")),
    })
}

/// Parses `--colsep`: a regular expression (Rust's syntax, close to Perl's for what a
/// separator needs).
pub fn parse_colsep(text: &str) -> Result<regex::Regex, String> {
    if text.is_empty() {
        return Err("the column separator is empty".to_owned());
    }
    regex::Regex::new(text).map_err(|e| format!("not a regular expression: {e}"))
}

/// Parses `-d`: GNU parallel's escapes \t \n \r, \NNN (octal) and \N (one octal
/// digit, so \0 is NUL); any other text stands for itself.
pub fn parse_delimiter(text: &str) -> Result<Delimiter, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = |from: usize, len: usize| {
            let digits = bytes.get(from..from + len)?;
            digits
                .iter()
                .all(u8::is_ascii_digit)
                .then(|| digits.iter().fold(0u32, |n, d| n * 8 + u32::from(d - b'0')) as u8)
        };
        match (bytes[i], bytes.get(i + 1)) {
            (b'\\', Some(b't')) => (out.push(b'\t'), i += 2).1,
            (b'\\', Some(b'n')) => (out.push(b'\n'), i += 2).1,
            (b'\\', Some(b'r')) => (out.push(b'\r'), i += 2).1,
            (b'\\', Some(_)) if octal(i + 1, 3).is_some() => {
                (out.push(octal(i + 1, 3).expect("checked")), i += 4).1
            }
            (b'\\', Some(_)) if octal(i + 1, 1).is_some() => {
                (out.push(octal(i + 1, 1).expect("checked")), i += 2).1
            }
            (byte, _) => (out.push(byte), i += 1).1,
        }
    }
    if out.is_empty() {
        return Err("the delimiter is empty".to_owned());
    }
    Ok(Delimiter(out))
}

/// The bytes that end each input, as `-d` gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delimiter(pub Vec<u8>);

impl InputRules {
    /// The rules of a NUL delimiter (`-0`) or of `delimiter` (`-d`).
    /// As GNU parallel: `trim` defaults to both sides with `colsep`, and `header`
    /// splits into columns at a tab when no `colsep` is given (trimming nothing).
    pub fn new(
        null: bool,
        delimiter: Option<Delimiter>,
        eof: Option<String>,
        trim: Option<Trim>,
        colsep: Option<regex::Regex>,
        header: bool,
    ) -> Self {
        let delimiter = if null { Some(vec![0]) } else { delimiter.map(|d| d.0) };
        let trim = trim.unwrap_or(if colsep.is_some() { Trim::Both } else { Trim::None });
        let tab = || regex::Regex::new("\t").expect("a valid regular expression");
        let colsep = if header { colsep.or_else(|| Some(tab())) } else { colsep };
        InputRules { delimiter, eof, trim, colsep, header }
    }

    /// The inputs of one task: each split into its columns and trimmed (`--colsep`),
    /// else as they are (trimmed as they were read).
    pub fn columns(&self, args: Vec<String>) -> Vec<String> {
        let Some(colsep) = &self.colsep else { return args };
        let mut columns = Vec::with_capacity(args.len());
        for arg in &args {
            columns.extend(colsep.split(arg).map(|c| self.trim(c.to_owned())));
        }
        columns
    }

    /// Whether `input` ends its group (`-E`).
    fn is_eof(&self, input: &str) -> bool {
        self.eof.as_deref() == Some(input)
    }

    /// `input` as read: trimmed, unless columns are trimmed instead.
    fn trimmed(&self, input: String) -> String {
        if self.colsep.is_some() {
            return input;
        }
        self.trim(input)
    }

    /// `input` without the white space `--trim` removes (Perl's `\s`).
    fn trim(&self, mut input: String) -> String {
        let space = |c: char| c.is_ascii_whitespace() || c == '\x0b';
        if matches!(self.trim, Trim::Right | Trim::Both) {
            input.truncate(input.trim_end_matches(space).len());
        }
        if matches!(self.trim, Trim::Left | Trim::Both) {
            input.drain(..input.len() - input.trim_start_matches(space).len());
        }
        input
    }

    /// The words of a `:::` group under `-E` and `--trim`.
    fn literal(&self, words: Vec<String>) -> Vec<String> {
        words.into_iter().take_while(|w| !self.is_eof(w)).map(|w| self.trimmed(w)).collect()
    }
}

/// `--header`: takes the first input of each group (a `:::` group's first word, a
/// file's first line, read here) and splits it into column names; returns `command`
/// with `{name}` (and `{name.}`, `{name/}`, `{name//}`, `{name/.}`) turned into
/// `{n}`, n counting the columns of all groups in order, as GNU parallel does.
pub fn take_header(
    command: &[String],
    specs: &mut [InputGroupSpec],
    mut stdin: impl BufRead,
    rules: &InputRules,
) -> Result<Vec<String>, InputError> {
    let colsep = rules.colsep.as_ref().expect("a header comes with columns");
    // The header line is read as any other, without being skipped.
    let as_read = InputRules { header: false, eof: None, ..rules.clone() };
    let mut command = command.to_vec();
    let mut column = 0;
    for spec in specs.iter_mut() {
        let first = match spec {
            InputGroupSpec::Literal(words) if words.is_empty() => None,
            InputGroupSpec::Literal(words) => Some(words.remove(0)),
            InputGroupSpec::File(path) if path == Path::new("-") => {
                lines(&mut stdin, path, as_read.clone()).next().transpose()?
            }
            InputGroupSpec::File(path) => {
                let file = fs::File::open(&*path)
                    .map_err(|source| InputError::File { path: path.clone(), source })?;
                lines(io::BufReader::new(file), path, as_read.clone()).next().transpose()?
            }
        };
        let Some(first) = first else { continue };
        // Perl's split: trailing empty names are dropped.
        let mut names: Vec<&str> = colsep.split(&first).collect();
        while names.last() == Some(&"") {
            names.pop();
        }
        for name in names {
            column += 1;
            for word in &mut command {
                for suffix in ["", "/", "//", ".", "/."] {
                    *word = word
                        .replace(&format!("{{{name}{suffix}}}"), &format!("{{{column}{suffix}}}"));
                }
            }
        }
    }
    Ok(command)
}

/// The command and input groups of `shoal run`, as [`split_command`] finds them.
pub type Split = (Vec<String>, Vec<InputGroupSpec>, Vec<bool>);

/// Splits the trailing words of `shoal run` into the command, its input groups, and
/// for each group whether it is linked to the one before (`:::+`, `::::+`; the first
/// group never is). After `::::`, every file named is a group of its own, as in GNU
/// parallel. A `:::` or `::::` followed by nothing is an empty group: no inputs,
/// nothing to run (as `::: $(find …)` that finds nothing), never a fall-back to
/// standard input.
pub fn split_command(words: Vec<String>) -> Result<Split, InputError> {
    let is_separator = |w: &String| matches!(w.as_str(), ":::" | "::::" | ":::+" | "::::+");
    let mut words = words.into_iter().peekable();
    let mut command = Vec::new();
    while let Some(w) = words.next_if(|w| !is_separator(w)) {
        command.push(w);
    }
    if command.is_empty() {
        return Err(InputError::EmptyCommand);
    }
    let (mut groups, mut linked) = (Vec::new(), Vec::new());
    while let Some(separator) = words.next() {
        let mut members = Vec::new();
        while let Some(w) = words.next_if(|w| !is_separator(w)) {
            members.push(w);
        }
        let link = separator.ends_with('+') && !groups.is_empty();
        if matches!(separator.as_str(), ":::" | ":::+") || members.is_empty() {
            groups.push(InputGroupSpec::Literal(members));
            linked.push(link);
        } else {
            linked.extend(std::iter::repeat_n(link, members.len()));
            groups.extend(members.into_iter().map(|m| InputGroupSpec::File(PathBuf::from(m))));
        }
    }
    Ok((command, groups, linked))
}

/// Reads the groups: `::::` files become their lines (empty lines kept as empty
/// inputs, `\n` and `\r\n` stripped; an empty file is an empty group). `-` reads
/// `stdin`; naming it twice reuses what was read the first time.
pub fn load_groups(
    specs: Vec<InputGroupSpec>,
    mut stdin: impl BufRead,
    rules: &InputRules,
) -> Result<Vec<Vec<String>>, InputError> {
    let mut stdin_lines: Option<Vec<String>> = None;
    let mut groups = Vec::with_capacity(specs.len());
    for spec in specs {
        let path = match spec {
            InputGroupSpec::Literal(words) => {
                groups.push(rules.literal(words));
                continue;
            }
            InputGroupSpec::File(path) => path,
        };
        let lines = if path == Path::new("-") {
            if stdin_lines.is_none() {
                stdin_lines = Some(read_lines(&mut stdin, &path, rules)?);
            }
            stdin_lines.clone().unwrap_or_default()
        } else {
            let file = fs::File::open(&path)
                .map_err(|source| InputError::File { path: path.clone(), source })?;
            read_lines(io::BufReader::new(file), &path, rules)?
        };
        groups.push(lines);
    }
    Ok(groups)
}

/// The inputs when no group is given: each line of standard input is one input of a
/// single group. Empty input gives an empty group, so nothing runs (as in GNU parallel,
/// where `find ... | parallel` with nothing found is not an error).
#[cfg(test)]
pub fn stdin_inputs(reader: impl BufRead) -> Result<Vec<Vec<String>>, InputError> {
    Ok(vec![read_lines(reader, Path::new("-"), &InputRules::default())?])
}

/// Reads every input, without its delimiter; `origin` names the source in errors.
fn read_lines(
    reader: impl BufRead,
    origin: &Path,
    rules: &InputRules,
) -> Result<Vec<String>, InputError> {
    lines(reader, origin, rules.clone()).collect()
}

/// The inputs of a file or stdin (each of at most the longest argument), as text,
/// up to an `-E` input, trimmed as `--trim` says.
pub(crate) fn lines<R: BufRead>(
    reader: R,
    origin: &Path,
    rules: InputRules,
) -> impl Iterator<Item = Result<String, InputError>> {
    let mut raw = RawLines::new(reader, origin.to_owned(), max_input_line());
    raw.delimiter = rules.delimiter.clone();
    // A file's header line (standard input's was read by `take_header`).
    let mut header = rules.header && origin != Path::new("-");
    std::iter::from_fn(move || {
        if std::mem::take(&mut header) {
            if let Err(e) = raw.next()? {
                return Some(Err(e));
            }
        }
        let line = raw.next()?;
        Some(line.and_then(|bytes| {
            String::from_utf8(bytes).map_err(|_| {
                raw.failed = true;
                InputError::NotUtf8 { path: raw.origin.clone(), line: raw.number }
            })
        }))
        .filter(|line| {
            let eof = matches!(line, Ok(line) if rules.is_eof(line));
            // The rest of this input is not read (GNU parallel closes the file).
            raw.failed |= eof;
            !eof
        })
        .map(|line| line.map(|line| rules.trimmed(line)))
    })
}

/// The lines of an input as bytes, without their `\n` or `\r\n`; ends after an error.
struct RawLines<R> {
    reader: R,
    origin: PathBuf,
    /// Lines read so far.
    number: usize,
    limit: usize,
    /// What ends a line, when not a newline.
    delimiter: Option<Vec<u8>>,
    failed: bool,
}

impl<R: BufRead> RawLines<R> {
    fn new(reader: R, origin: PathBuf, limit: usize) -> Self {
        RawLines { reader, origin, number: 0, limit, delimiter: None, failed: false }
    }
}

impl<R: BufRead> Iterator for RawLines<R> {
    type Item = Result<Vec<u8>, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let why = if self.limit == MAX_TASK_LINE { TASK_LINE_WHY } else { INPUT_LINE_WHY };
        let mut buf = Vec::new();
        let end = Ending { delimiter: self.delimiter.as_deref(), limit: self.limit, why };
        match next_line(&mut self.reader, &mut buf, &self.origin, &mut self.number, end) {
            Ok(true) => Some(Ok(buf)),
            Ok(false) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// The tasks of a `--tasks` input: one JSON object per line that is not blank.
pub(crate) struct TaskLines<R> {
    lines: RawLines<R>,
}

impl<R: BufRead> TaskLines<R> {
    /// The tasks of `reader`; `path` names it in errors.
    pub(crate) fn new(reader: R, path: PathBuf) -> Self {
        TaskLines { lines: RawLines::new(reader, path, MAX_TASK_LINE) }
    }
}

impl<R: BufRead> Iterator for TaskLines<R> {
    type Item = Result<TaskInput, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let raw = match self.lines.next()? {
                Ok(raw) => raw,
                Err(e) => return Some(Err(e)),
            };
            let (path, line) = (self.lines.origin.clone(), self.lines.number);
            let parsed = std::str::from_utf8(&raw)
                .map_err(|_| InputError::NotUtf8 { path: path.clone(), line })
                .and_then(|text| {
                    // A byte-order mark, as some editors write: not part of the first object.
                    let text = if line == 1 { text.trim_start_matches('\u{feff}') } else { text };
                    if text.trim().is_empty() {
                        return Ok(None);
                    }
                    parse_task(text).map(Some).map_err(|reason| InputError::TaskLine {
                        path,
                        line,
                        reason,
                    })
                });
            match parsed {
                Ok(None) => continue,
                Ok(Some(task)) => return Some(Ok(task)),
                Err(e) => {
                    self.lines.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// What ends a line and how long one may be.
struct Ending<'a> {
    /// `None`: a newline, `\r\n` too.
    delimiter: Option<&'a [u8]>,
    limit: usize,
    why: &'static str,
}

/// Reads the next line into `buf` (cleared first), without its delimiter, and
/// counts it in `number`; false at the end of the input. Never holds more than
/// `limit` bytes of a line: a longer one is an error, however long it goes on.
fn next_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    origin: &Path,
    number: &mut usize,
    Ending { delimiter, limit, why }: Ending<'_>,
) -> Result<bool, InputError> {
    buf.clear();
    let (last, room) = match delimiter {
        Some(d) => (*d.last().expect("a delimiter is never empty"), d.len()),
        // Room for `\r\n`.
        None => (b'\n', 2),
    };
    // Room for the line, its delimiter, and no more.
    let mut bounded = io::Read::take(&mut *reader, (limit + room) as u64);
    loop {
        let n = bounded
            .read_until(last, buf)
            .map_err(|source| InputError::File { path: origin.to_owned(), source })?;
        // A delimiter of several bytes: its last byte alone does not end the line.
        let more =
            n > 0 && buf.last() == Some(&last) && delimiter.is_some_and(|d| !buf.ends_with(d));
        if !more {
            break;
        }
    }
    if buf.is_empty() {
        return Ok(false);
    }
    *number += 1;
    match delimiter {
        Some(d) if buf.ends_with(d) => buf.truncate(buf.len() - d.len()),
        Some(_) => {}
        None if buf.last() == Some(&b'\n') => {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        None => {}
    }
    if buf.len() > limit {
        return Err(InputError::LineTooLong { path: origin.to_owned(), line: *number, limit, why });
    }
    Ok(true)
}

/// The cartesian product of the groups in GNU parallel order: the last group varies
/// fastest. An empty group makes the product empty; no groups at all give one empty
/// combination.
#[cfg(test)]
pub fn cartesian(groups: &[Vec<String>]) -> Cartesian<'_> {
    let done = groups.iter().any(|g| g.is_empty());
    let remaining = groups.iter().try_fold(1usize, |acc, g| acc.checked_mul(g.len()));
    Cartesian { groups, indices: vec![0; groups.len()], done, remaining }
}

/// Iterator returned by [`cartesian`]; its `size_hint` is exact unless the count overflows.
#[cfg(test)]
#[derive(Debug, Clone)]
pub struct Cartesian<'a> {
    groups: &'a [Vec<String>],
    indices: Vec<usize>,
    done: bool,
    remaining: Option<usize>,
}

#[cfg(test)]
impl Iterator for Cartesian<'_> {
    type Item = Vec<String>;

    fn next(&mut self) -> Option<Vec<String>> {
        if self.done {
            return None;
        }
        let item = self.indices.iter().zip(self.groups).map(|(&i, g)| g[i].clone()).collect();
        self.remaining = self.remaining.map(|r| r.saturating_sub(1));
        // Odometer step: bump the last index, carrying leftwards.
        self.done = true;
        for (i, group) in self.indices.iter_mut().zip(self.groups).rev() {
            *i += 1;
            if *i < group.len() {
                self.done = false;
                break;
            }
            *i = 0;
        }
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match (self.done, self.remaining) {
            (true, _) => (0, Some(0)),
            (false, Some(r)) => (r, Some(r)),
            (false, None) => (usize::MAX, None),
        }
    }
}

/// One line of a `--tasks` file. The options are `None` where the line is silent, so
/// the run-wide defaults apply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskInput {
    /// The inputs, one per group (`{1}`, `{2}`…).
    pub args: Vec<String>,
    /// Higher runs first (default 0).
    pub priority: Option<i32>,
    /// Expected duration, a scheduling hint.
    pub cost: Option<Duration>,
    /// Affinity key.
    pub key: Option<String>,
    /// Per-attempt time limit; `None` takes the run's `--timeout`.
    pub timeout: Option<Duration>,
    /// Further attempts after a failure; `None` takes the run's `--retries`.
    pub retries: Option<u32>,
}

impl TaskInput {
    /// The scheduler's view of this task, with the run-wide defaults filled in.
    pub fn meta(&self, default_timeout: Option<Duration>, default_retries: u32) -> TaskMeta {
        TaskMeta {
            priority: self.priority.unwrap_or(0),
            cost: self.cost,
            key: self.key.clone(),
            timeout: self.timeout.or(default_timeout),
            retries: self.retries.unwrap_or(default_retries),
        }
    }
}

const TASK_FIELDS: &str = "args, priority, cost, key, timeout, retries";

/// Reads a `--tasks` file (`-` is standard input): one JSON object per non-blank line.
/// A file without any is no tasks, not an error.
#[cfg(test)]
pub fn parse_tasks_file(path: &Path) -> Result<Vec<TaskInput>, InputError> {
    if path == Path::new("-") {
        return parse_tasks(io::stdin().lock(), path);
    }
    let file = fs::File::open(path)
        .map_err(|source| InputError::File { path: path.to_owned(), source })?;
    parse_tasks(io::BufReader::new(file), path)
}

/// The tasks of a `--tasks` input; `path` names it in errors.
#[cfg(test)]
fn parse_tasks(reader: impl BufRead, path: &Path) -> Result<Vec<TaskInput>, InputError> {
    TaskLines::new(reader, path.to_owned()).collect()
}

/// Parses one task line; the error is the reason, for [`InputError::TaskLine`].
fn parse_task(text: &str) -> Result<TaskInput, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        // serde_json ends with "at line 1 column N"; the line is ours to give.
        let message = e.to_string();
        let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(m, _)| m);
        format!("invalid JSON at column {}: {message}", e.column())
    })?;
    let Value::Object(mut fields) = value else {
        return Err(format!(
            "expected a JSON object such as {{\"args\": [\"a\"]}}, found {}",
            kind(&value)
        ));
    };
    if let Some(unknown) = fields.keys().find(|k| !TASK_FIELDS.split(", ").any(|f| f == k.as_str()))
    {
        return Err(format!("unknown field `{unknown}` (expected one of: {TASK_FIELDS})"));
    }
    let mut take = |name| fields.remove(name).filter(|v| !v.is_null());
    let args = match take("args") {
        None => return Err("missing field `args`".to_owned()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                scalar(v).ok_or_else(|| {
                    format!("args[{i}] must be a string or a number, not {}", kind(v))
                })
            })
            .collect::<Result<_, _>>()?,
        Some(v) => vec![scalar(&v).ok_or_else(|| {
            format!("args must be a string, a number or an array of them, not {}", kind(&v))
        })?],
    };
    let priority = take("priority")
        .map(|v| {
            v.as_i64().and_then(|p| i32::try_from(p).ok()).ok_or_else(|| {
                format!("priority must be an integer (-2147483648 to 2147483647), not {v}")
            })
        })
        .transpose()?;
    let retries = take("retries")
        .map(|v| {
            v.as_u64()
                .and_then(|r| u32::try_from(r).ok())
                .ok_or_else(|| format!("retries must be a non-negative integer, not {v}"))
        })
        .transpose()?;
    let key = take("key")
        .map(|v| match v {
            Value::String(s) => Ok(s),
            other => Err(format!("key must be a string, not {}", kind(&other))),
        })
        .transpose()?;
    let cost = take("cost").map(|v| duration("cost", &v)).transpose()?;
    let timeout = take("timeout").map(|v| duration("timeout", &v)).transpose()?;
    Ok(TaskInput { args, priority, cost, key, timeout, retries })
}

/// A string, or a number turned into its JSON text.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Seconds as a number, or a duration string such as "250ms", within the range the
/// command line allows (a `timeout` above 0).
fn duration(field: &str, value: &Value) -> Result<Duration, String> {
    let timeout = field == "timeout";
    match value {
        Value::Number(n) => {
            let secs = n.as_f64().unwrap_or(f64::NAN);
            let (checked, range) = if timeout {
                (timeout_seconds(secs), TIMEOUT_RANGE)
            } else {
                (seconds(secs), DURATION_RANGE)
            };
            checked.ok_or_else(|| format!("{field} must be {range}, not {n}"))
        }
        Value::String(s) if timeout => parse_timeout(s).map_err(|e| format!("{field}: {e}")),
        Value::String(s) => parse_duration(s).map_err(|e| format!("{field}: {e}")),
        other => Err(format!(
            "{field} must be seconds or a duration string such as \"2s\", not {}",
            kind(other)
        )),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn s(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn file_with(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        f
    }

    fn tasks(content: &str) -> Result<Vec<TaskInput>, InputError> {
        parse_tasks_file(file_with(content.as_bytes()).path())
    }

    /// The reason of a `TaskLine` error, checking its line number.
    fn task_error(content: &str, line: usize) -> String {
        match tasks(content).unwrap_err() {
            InputError::TaskLine { line: l, reason, .. } if l == line => reason,
            other => panic!("expected an error on line {line}, got {other:?}"),
        }
    }

    #[test]
    fn splits_command_and_groups() {
        let (cmd, groups, _) =
            split_command(s(&["gzip", "-9", ":::", "a", "b", "::::", "f1", "-", ":::", "x"]))
                .unwrap();
        assert_eq!(cmd, s(&["gzip", "-9"]));
        assert_eq!(
            groups,
            [
                InputGroupSpec::Literal(s(&["a", "b"])),
                InputGroupSpec::File("f1".into()),
                InputGroupSpec::File("-".into()),
                InputGroupSpec::Literal(s(&["x"])),
            ]
        );
        let (cmd, groups, linked) = split_command(s(&["echo", "{}"])).unwrap();
        assert_eq!((cmd, groups, linked), (s(&["echo", "{}"]), vec![], vec![]));
        let (_, groups, linked) =
            split_command(s(&["e", ":::+", "a", ":::+", "b", "::::+", "f", "g", "::::", "h"]))
                .unwrap();
        assert_eq!(
            groups,
            [
                InputGroupSpec::Literal(s(&["a"])),
                InputGroupSpec::Literal(s(&["b"])),
                InputGroupSpec::File("f".into()),
                InputGroupSpec::File("g".into()),
                InputGroupSpec::File("h".into()),
            ]
        );
        assert_eq!(linked, [false, true, true, true, false]);
    }

    #[test]
    fn empty_groups_are_groups_and_no_command_is_an_error() {
        let (_, groups, _) = split_command(s(&["echo", ":::", "a", ":::"])).unwrap();
        assert_eq!(groups, [InputGroupSpec::Literal(s(&["a"])), InputGroupSpec::Literal(vec![])]);
        let (_, groups, _) = split_command(s(&["echo", ":::", "::::", ":::", "a"])).unwrap();
        assert_eq!(
            groups,
            [
                InputGroupSpec::Literal(vec![]),
                InputGroupSpec::Literal(vec![]),
                InputGroupSpec::Literal(s(&["a"]))
            ]
        );
        assert!(matches!(split_command(s(&[":::", "a"])), Err(InputError::EmptyCommand)));
        assert!(matches!(split_command(vec![]), Err(InputError::EmptyCommand)));
    }

    #[test]
    fn loads_files_with_crlf_and_empty_lines() {
        let crlf = file_with(b"a.txt\r\nb c\r\n\r\nlast");
        let specs = vec![
            InputGroupSpec::Literal(s(&["x"])),
            InputGroupSpec::File(crlf.path().to_owned()),
            InputGroupSpec::File("-".into()),
            InputGroupSpec::File("-".into()),
        ];
        let groups = load_groups(specs, &b"s1\ns2\n"[..], &InputRules::default()).unwrap();
        assert_eq!(
            groups,
            [s(&["x"]), s(&["a.txt", "b c", "", "last"]), s(&["s1", "s2"]), s(&["s1", "s2"])]
        );
    }

    #[test]
    fn unreadable_files_are_named_and_empty_ones_are_empty_groups() {
        let missing = PathBuf::from("/nonexistent/shoal/inputs.txt");
        let err =
            load_groups(vec![InputGroupSpec::File(missing)], io::empty(), &InputRules::default())
                .unwrap_err();
        assert!(matches!(err, InputError::File { .. }));
        assert!(
            err.to_string()
                .starts_with("cannot read input file /nonexistent/shoal/inputs.txt: No such file"),
            "{err}"
        );
        let empty = file_with(b"");
        let specs =
            vec![InputGroupSpec::File(empty.path().to_owned()), InputGroupSpec::File("-".into())];
        assert_eq!(
            load_groups(specs, io::empty(), &InputRules::default()).unwrap(),
            [Vec::<String>::new(), vec![]]
        );
        let err = load_groups(
            vec![InputGroupSpec::File("-".into())],
            &b"ok\n\xff\n"[..],
            &InputRules::default(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "(standard input):2: not valid UTF-8 text");
    }

    #[test]
    fn an_endless_line_is_an_error_naming_its_source_and_line() {
        // io::repeat never ends: only a bounded read can return.
        let endless = || io::BufReader::new(io::Read::chain(&b"a\nb\n"[..], io::repeat(0)));
        let err = stdin_inputs(endless()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "(standard input):3: a line longer than {} bytes (the longest argument Linux \
                 passes to a program)",
                max_input_line()
            )
        );
        let specs = vec![InputGroupSpec::Literal(s(&["x"])), InputGroupSpec::File("-".into())];
        assert!(matches!(
            load_groups(specs, endless(), &InputRules::default()),
            Err(InputError::LineTooLong { line: 3, limit, .. }) if limit == max_input_line()
        ));
        let first = &b"{\"args\": 1}\n"[..];
        let endless = io::BufReader::new(io::Read::chain(first, io::repeat(b' ')));
        let err = parse_tasks(endless, Path::new("t.jsonl")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.jsonl:2: a line longer than 1 MiB (the most a task line may hold)"
        );
    }

    #[test]
    fn a_line_of_the_longest_length_is_taken_and_one_byte_more_is_not() {
        let longest = "x".repeat(max_input_line());
        for ending in ["", "\n", "\r\n"] {
            let text = format!("{longest}{ending}");
            assert_eq!(stdin_inputs(text.as_bytes()).unwrap(), [vec![longest.clone()]]);
        }
        let text = format!("a\n{longest}y\nb\n");
        assert!(matches!(
            stdin_inputs(text.as_bytes()),
            Err(InputError::LineTooLong { line: 2, .. })
        ));
        let task = format!("{{\"args\": [\"{}\"]}}\n", "y".repeat(MAX_TASK_LINE));
        let err = parse_tasks(task.as_bytes(), Path::new("t.jsonl")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.jsonl:1: a line longer than 1 MiB (the most a task line may hold)"
        );
    }

    #[test]
    fn delimiters_take_gnu_parallels_escapes() {
        let d = |text| parse_delimiter(text).map(|d| d.0);
        assert_eq!(d("\\t\\n\\r"), Ok(b"\t\n\r".to_vec()));
        assert_eq!(d("\\0"), Ok(vec![0]));
        assert_eq!(d("\\101x\\7"), Ok(b"Ax\x07".to_vec()));
        assert_eq!(d(",,"), Ok(b",,".to_vec()));
        assert_eq!(d("\\q\\"), Ok(b"\\q\\".to_vec()));
        assert_eq!(d(""), Err("the delimiter is empty".to_owned()));
    }

    #[test]
    fn a_delimiter_of_several_bytes_ends_only_where_it_is_whole() {
        let rules = InputRules::new(false, parse_delimiter("ab").ok(), None, None, None, false);
        let read = |text: &[u8]| read_lines(text, Path::new("-"), &rules).unwrap();
        assert_eq!(read(b"xaby\nabbaab"), s(&["x", "y\n", "ba"]));
        assert_eq!(read(b"a\r\nb"), s(&["a\r\nb"]));
        assert_eq!(read(b""), Vec::<String>::new());
        let longest = "x".repeat(max_input_line());
        assert_eq!(read(format!("{longest}ab").as_bytes()), [longest.as_str()]);
        assert!(matches!(
            read_lines(format!("{longest}xab").as_bytes(), Path::new("-"), &rules),
            Err(InputError::LineTooLong { line: 1, .. })
        ));
    }

    #[test]
    fn trim_and_eof_apply_to_every_kind_of_group() {
        let rules = InputRules::new(false, None, Some("END".into()), Some(Trim::Both), None, false);
        let literal = InputGroupSpec::Literal(s(&[" a\t", "END", "b"]));
        let groups = load_groups(
            vec![literal, InputGroupSpec::File("-".into())],
            &b"  c\nd \n END\nEND\ne\n"[..],
            &rules,
        );
        assert_eq!(groups.unwrap(), [s(&["a"]), s(&["c", "d", "END"])]);
        let left = InputRules { trim: Trim::Left, ..InputRules::default() };
        assert_eq!(left.trimmed(" \x0b x \n".into()), "x \n");
        assert_eq!(parse_trim("rl"), Ok(Trim::Both));
        assert!(parse_trim("lrl").is_err());
    }

    #[test]
    fn stdin_lines_are_one_group() {
        assert_eq!(stdin_inputs(&b"a\r\nb\n\nc"[..]).unwrap(), [s(&["a", "b", "", "c"])]);
        assert_eq!(stdin_inputs(io::empty()).unwrap(), [Vec::<String>::new()]);
    }

    #[test]
    fn cartesian_varies_the_last_group_fastest() {
        let groups = [s(&["a", "b"]), s(&["1", "2", "3"]), s(&["x"])];
        let product = cartesian(&groups);
        assert_eq!(product.size_hint(), (6, Some(6)));
        let all: Vec<Vec<String>> = product.collect();
        let expected: Vec<Vec<String>> = [
            ["a", "1", "x"],
            ["a", "2", "x"],
            ["a", "3", "x"],
            ["b", "1", "x"],
            ["b", "2", "x"],
            ["b", "3", "x"],
        ]
        .iter()
        .map(|c| s(c))
        .collect();
        assert_eq!(all, expected);
        assert_eq!(cartesian(&[s(&["a"]), vec![]]).count(), 0);
        assert_eq!(cartesian(&[]).collect::<Vec<_>>(), [Vec::<String>::new()]);
    }

    #[test]
    fn good_task_lines() {
        let text = concat!(
            r#"{"args": ["a.txt", "b"], "priority": 5, "cost": 2.5, "key": "k1", "timeout": "250ms", "retries": 2}"#,
            "\n\n  \n",
            r#"{"args": "single"}"#,
            "\r\n",
            r#"{"args": [1, 2.5, "x"], "cost": "3m", "timeout": 10, "priority": -3, "key": null}"#,
        );
        let got = tasks(text).unwrap();
        assert_eq!(
            got,
            [
                TaskInput {
                    args: s(&["a.txt", "b"]),
                    priority: Some(5),
                    cost: Some(Duration::from_millis(2500)),
                    key: Some("k1".into()),
                    timeout: Some(Duration::from_millis(250)),
                    retries: Some(2),
                },
                TaskInput { args: s(&["single"]), ..TaskInput::default() },
                TaskInput {
                    args: s(&["1", "2.5", "x"]),
                    priority: Some(-3),
                    cost: Some(Duration::from_secs(180)),
                    timeout: Some(Duration::from_secs(10)),
                    ..TaskInput::default()
                },
            ]
        );
        let meta = got[1].meta(Some(Duration::from_secs(9)), 4);
        assert_eq!(
            meta,
            TaskMeta {
                priority: 0,
                cost: None,
                key: None,
                timeout: Some(Duration::from_secs(9)),
                retries: 4
            }
        );
        let meta = got[0].meta(Some(Duration::from_secs(9)), 4);
        assert_eq!(
            (meta.priority, meta.timeout, meta.retries),
            (5, Some(Duration::from_millis(250)), 2)
        );
    }

    #[test]
    fn bad_task_lines_name_line_and_reason() {
        let good = "{\"args\": \"a\"}\n";
        let reason = task_error(&format!("{good}{good}{{\"args\": [\"a\",]}}\n{good}"), 3);
        assert!(reason.starts_with("invalid JSON at column "), "{reason}");
        assert!(!reason.contains("at line"), "{reason}");
        let f = file_with(format!("{good}{good}{{\"args\": \"a\"").as_bytes());
        let err = parse_tasks_file(f.path()).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!("{}:3: invalid JSON", f.path().display())),
            "{err}"
        );

        assert_eq!(
            task_error(r#"{"args": "a", "prio": 1}"#, 1),
            "unknown field `prio` (expected one of: args, priority, cost, key, timeout, retries)"
        );
        assert_eq!(
            task_error(r#"{"args": "a", "retries": -1}"#, 1),
            "retries must be a non-negative integer, not -1"
        );
        assert_eq!(task_error(r#"{"priority": 1}"#, 1), "missing field `args`");
        assert_eq!(
            task_error(r#"{"args": [["a"]]}"#, 1),
            "args[0] must be a string or a number, not an array"
        );
        assert_eq!(
            task_error(r#"{"args": true}"#, 1),
            "args must be a string, a number or an array of them, not a boolean"
        );
        assert_eq!(
            task_error(r#"{"args": "a", "priority": 1.5}"#, 1),
            "priority must be an integer (-2147483648 to 2147483647), not 1.5"
        );
        assert_eq!(
            task_error(r#"{"args": "a", "cost": -2}"#, 1),
            "cost must be from 0 to 1000000000 seconds (about 31 years), not -2"
        );
        assert_eq!(
            task_error(r#"{"args": "a", "timeout": 1.8e19}"#, 1),
            "timeout must be above 0 and at most 1000000000 seconds (about 31 years), not 1.8e+19"
        );
        assert_eq!(
            task_error(r#"{"args": "a", "timeout": "10000000000000000000s"}"#, 1),
            "timeout: invalid timeout '10000000000000000000s': it must be above 0 and at most \
             1000000000 seconds (about 31 years)"
        );
        assert_eq!(
            task_error(r#"{"args": "a", "cost": 1e10}"#, 1),
            "cost must be from 0 to 1000000000 seconds (about 31 years), not 10000000000.0"
        );
        assert_eq!(
            task_error(r#"{"args": "a", "timeout": "5x"}"#, 1),
            "timeout: invalid timeout '5x': use seconds (1.5) or a unit: 250ms, 2s, 3m, 1h"
        );
        assert_eq!(
            task_error(r#"{"args": "a", "timeout": 0}"#, 1),
            "timeout must be above 0 and at most 1000000000 seconds (about 31 years), not 0"
        );
        assert_eq!(
            task_error(r#"{"args": "a", "key": 3}"#, 1),
            "key must be a string, not a number"
        );
        assert_eq!(
            task_error(r#"["a"]"#, 1),
            r#"expected a JSON object such as {"args": ["a"]}, found an array"#
        );
    }

    #[test]
    fn a_byte_order_mark_before_the_first_task_is_skipped() {
        let parsed = tasks("\u{feff}{\"args\": [\"a\"]}\n{\"args\": [\"b\"]}\n").unwrap();
        assert_eq!(parsed.iter().map(|t| t.args.clone()).collect::<Vec<_>>(), [["a"], ["b"]]);
    }

    #[test]
    fn empty_or_missing_tasks_files() {
        let f = file_with(b"\n  \n");
        assert_eq!(parse_tasks_file(f.path()).unwrap(), []);
        let err = parse_tasks_file(Path::new("/nonexistent/tasks.jsonl")).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot read input file /nonexistent/tasks.jsonl: "),
            "{err}"
        );
    }
}
