//! The inputs of `shoal run` read one task at a time, on a thread of their own, into a
//! bounded channel: a run holds the tasks read and not yet taken by the engine, never
//! its whole input, and its first tasks start while a pipe is still being written.
//!
//! What streams: standard input, a `--tasks` file, and the first `::::` group. The
//! other groups are read whole first (the last group varies fastest, so each is
//! repeated for every input of the groups before it), and so is every group when
//! standard input is named twice (the second reuses what the first read).

use std::fs;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use crate::inputs::{
    lines, load_groups, InputError, InputGroupSpec, InputRules, TaskInput, TaskLines,
};

/// One task's inputs as read, or why the input could not be read further.
pub type Read = Result<TaskInput, InputError>;

/// Where a run's tasks come from.
pub enum InputSpec {
    /// `:::` and `::::` groups: their cartesian product.
    Groups(Vec<InputGroupSpec>),
    /// No group: each line of standard input.
    Stdin,
    /// A `--tasks` file (`-`: standard input).
    Tasks(PathBuf),
}

/// Starts reading on a thread of its own. The receiver gives each task's inputs in
/// input order and ends after the last, or after the first error. The thread stops
/// once the receiver is dropped (at its next task: a read that blocks, on a pipe,
/// blocks it until then).
pub fn spawn(
    spec: InputSpec,
    rules: InputRules,
    capacity: usize,
) -> io::Result<mpsc::Receiver<Read>> {
    let (tx, rx) = mpsc::channel(capacity);
    std::thread::Builder::new().name("shoal-inputs".into()).spawn(move || {
        for read in inputs(spec, rules) {
            let failed = read.is_err();
            if tx.blocking_send(read).is_err() || failed {
                break;
            }
        }
    })?;
    Ok(rx)
}

/// The tasks of `spec`, read as they are taken (`rules` apply to the groups and
/// stdin, not to `--tasks` lines).
fn inputs(spec: InputSpec, rules: InputRules) -> Box<dyn Iterator<Item = Read>> {
    let read = match spec {
        InputSpec::Stdin => args_of(lines(io::stdin().lock(), Path::new("-"), rules.clone())),
        InputSpec::Tasks(path) => {
            return match open(&path) {
                Ok(reader) => Box::new(TaskLines::new(reader, path)),
                Err(e) => Box::new(std::iter::once(Err(e))),
            }
        }
        InputSpec::Groups(specs) => groups(specs, rules.clone()),
    };
    if rules.colsep.is_none() {
        return read;
    }
    Box::new(
        read.map(move |task| task.map(|task| TaskInput { args: rules.columns(task.args), ..task })),
    )
}

/// The product of the groups, the first one streamed when it can be.
fn groups(mut specs: Vec<InputGroupSpec>, rules: InputRules) -> Box<dyn Iterator<Item = Read>> {
    if specs.is_empty() {
        // No groups at all: one task with no inputs, as their empty product.
        return Box::new(std::iter::once(Ok(TaskInput::default())));
    }
    let stdin_twice = specs.iter().filter(|s| is_stdin(s)).count() > 1;
    if stdin_twice || matches!(specs[0], InputGroupSpec::Literal(_)) {
        // Read whole, as the first group is already (on the command line) or must be.
        return match load_groups(specs, io::stdin().lock(), &rules) {
            Ok(mut groups) => {
                let first = groups.remove(0);
                product(Box::new(first.into_iter().map(Ok)), groups)
            }
            Err(e) => Box::new(std::iter::once(Err(e))),
        };
    }
    let InputGroupSpec::File(path) = specs.remove(0) else { unreachable!("checked above") };
    // The others first, read whole: an unreadable one is found before any task runs.
    // (Standard input, if named, is one of them or the first, never both.)
    let rest = match load_groups(specs, io::stdin().lock(), &rules) {
        Ok(rest) => rest,
        Err(e) => return Box::new(std::iter::once(Err(e))),
    };
    match open(&path) {
        Ok(reader) => product(Box::new(lines(reader, &path, rules)), rest),
        Err(e) => Box::new(std::iter::once(Err(e))),
    }
}

fn is_stdin(spec: &InputGroupSpec) -> bool {
    matches!(spec, InputGroupSpec::File(path) if path == Path::new("-"))
}

/// A file to read lines from.
fn open(path: &Path) -> Result<Box<dyn BufRead>, InputError> {
    if path == Path::new("-") {
        return Ok(Box::new(io::stdin().lock()));
    }
    let file = fs::File::open(path)
        .map_err(|source| InputError::File { path: path.to_owned(), source })?;
    Ok(Box::new(io::BufReader::new(file)))
}

/// Each line as one task's only input.
fn args_of(
    lines: impl Iterator<Item = Result<String, InputError>> + 'static,
) -> Box<dyn Iterator<Item = Read>> {
    Box::new(
        lines.map(|line| line.map(|line| TaskInput { args: vec![line], ..TaskInput::default() })),
    )
}

/// The cartesian product of a streamed first group and the groups read whole, in GNU
/// parallel order (the last group varies fastest).
fn product(
    first: Box<dyn Iterator<Item = Result<String, InputError>>>,
    rest: Vec<Vec<String>>,
) -> Box<dyn Iterator<Item = Read>> {
    if rest.iter().any(Vec::is_empty) {
        // No task, but the first group is still read for its errors.
        return Box::new(first.filter_map(|line| line.err().map(Err)));
    }
    let indices = vec![0; rest.len()];
    Box::new(Product { first, rest, indices, current: None })
}

struct Product {
    first: Box<dyn Iterator<Item = Result<String, InputError>>>,
    rest: Vec<Vec<String>>,
    /// Where each of the other groups is.
    indices: Vec<usize>,
    /// The input of the first group being combined with the others.
    current: Option<String>,
}

impl Iterator for Product {
    type Item = Read;

    fn next(&mut self) -> Option<Read> {
        if self.current.is_none() {
            match self.first.next()? {
                Ok(line) => self.current = Some(line),
                Err(e) => return Some(Err(e)),
            }
        }
        let first = self.current.as_ref().expect("set above");
        let mut args = Vec::with_capacity(1 + self.rest.len());
        args.push(first.clone());
        args.extend(self.indices.iter().zip(&self.rest).map(|(&i, g)| g[i].clone()));
        // Odometer step: bump the last index, carrying leftwards; past the first
        // group's input, on to its next.
        let mut wrapped = true;
        for (i, group) in self.indices.iter_mut().zip(&self.rest).rev() {
            *i += 1;
            if *i < group.len() {
                wrapped = false;
                break;
            }
            *i = 0;
        }
        if wrapped {
            self.current = None;
        }
        Some(Ok(TaskInput { args, ..TaskInput::default() }))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn all(spec: InputSpec) -> Result<Vec<Vec<String>>, InputError> {
        inputs(spec, InputRules::default()).map(|t| t.map(|t| t.args)).collect()
    }

    fn s(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn a_streamed_first_group_makes_the_same_product_as_one_read_whole() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"a\nb\r\n").unwrap();
        let path = file.path().to_owned();
        let specs = vec![
            InputGroupSpec::File(path.clone()),
            InputGroupSpec::Literal(s(&["1", "2"])),
            InputGroupSpec::Literal(s(&["x"])),
        ];
        let got = all(InputSpec::Groups(specs)).unwrap();
        let whole = [s(&["a", "b"]), s(&["1", "2"]), s(&["x"])];
        let expected: Vec<Vec<String>> = crate::inputs::cartesian(&whole).collect();
        assert_eq!(got, expected);
        let specs = vec![InputGroupSpec::File(path), InputGroupSpec::Literal(Vec::new())];
        assert!(all(InputSpec::Groups(specs)).unwrap().is_empty());
    }

    #[test]
    fn a_bad_line_ends_the_stream_after_the_good_ones_before_it() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"a\nb\n\xff\nc\n").unwrap();
        let spec = InputSpec::Groups(vec![InputGroupSpec::File(file.path().to_owned())]);
        let read: Vec<Read> = inputs(spec, InputRules::default()).collect();
        assert_eq!(read.len(), 3, "a, b, then the error, and nothing after it");
        assert!(matches!(read[2], Err(InputError::NotUtf8 { line: 3, .. })), "{:?}", read[2]);
        let mut tasks = tempfile::NamedTempFile::new().unwrap();
        tasks.write_all(b"{\"args\": [\"a\"]}\n\n{\"args\": [1,}\n{\"args\": [\"c\"]}\n").unwrap();
        let read: Vec<Read> =
            inputs(InputSpec::Tasks(tasks.path().to_owned()), InputRules::default()).collect();
        assert_eq!(read.len(), 2);
        assert!(matches!(read[1], Err(InputError::TaskLine { line: 3, .. })), "{:?}", read[1]);
    }
}
