//! The inputs of `shoal run` read one task at a time, on a thread of their own, into a
//! bounded channel: a run holds the tasks read and not yet taken by the engine, never
//! its whole input, and its first tasks start while a pipe is still being written.
//!
//! What streams: standard input, a `--tasks` file, and the first `::::` group. The
//! other groups are read whole first (the last group varies fastest, so each is
//! repeated for every input of the groups before it), and so is every group when
//! standard input is named twice (the second reuses what the first read).
//!
//! Linked groups (`:::+`, `::::+`, `--link`) make one block whose rows are their n-th
//! inputs side by side; the product is over blocks. A first group linked to others
//! still streams: it keeps only as many of its inputs as the others' longest holds,
//! to wrap around (`--link`) when it is the shorter.

use std::fs;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use crate::inputs::{
    lines, load_groups, InputError, InputGroupSpec, InputRules, TaskInput, TaskLines,
};
use crate::template::{display, Template};

/// One task's inputs as read, or why the input could not be read further.
pub type Read = Result<TaskInput, InputError>;

/// Where a run's tasks come from.
pub enum InputSpec {
    /// `:::` and `::::` groups: the cartesian product of their blocks.
    Groups(Groups),
    /// No group: each line of standard input.
    Stdin,
    /// A `--tasks` file (`-`: standard input).
    Tasks(PathBuf),
}

/// Input groups and how they are linked.
pub struct Groups {
    pub specs: Vec<InputGroupSpec>,
    /// Whether each group is linked to the one before it.
    pub linked: Vec<bool>,
    /// `--link`: a block is as long as its longest group, the others wrap around;
    /// else (`:::+`) as its shortest.
    pub wrap: bool,
}

/// `-N n`/`-n n`: each task takes the inputs of `n` rows as read (the last may have
/// fewer), one after the other; `-N 0` runs one task per row with no inputs. Holds
/// no more than one task's rows.
fn chunked(read: Box<dyn Iterator<Item = Read>>, rows: u32) -> Box<dyn Iterator<Item = Read>> {
    if rows == 0 {
        return Box::new(read.map(|task| task.map(|_| TaskInput::default())));
    }
    let mut read = read.peekable();
    Box::new(std::iter::from_fn(move || {
        // An error ends the task being filled; it comes on its own after it.
        let mut args = Vec::new();
        for taken in 0..rows {
            match read.next_if(|task| taken == 0 || task.is_ok()) {
                Some(Ok(task)) => args.extend(task.args),
                Some(Err(e)) => return Some(Err(e)),
                None => break,
            }
        }
        (!args.is_empty()).then(|| Ok(TaskInput { args, ..TaskInput::default() }))
    }))
}

/// `-m`/`-X`: each task takes as many rows as keep its command line shorter than
/// `limit` (as GNU parallel measures it: the rendered command's length). The rows
/// left when the input ends are spread evenly over the `slots`, as parallel does.
pub struct Fit {
    pub template: Template,
    pub limit: usize,
    pub slots: usize,
}

impl Fit {
    fn length(&self, args: &[String]) -> usize {
        display(&self.template.render(args, 0, 0)).len()
    }
}

/// The tasks of [`Fit`], as the rows stream.
fn filled(read: Box<dyn Iterator<Item = Read>>, fit: Fit) -> Box<dyn Iterator<Item = Read>> {
    let mut read = read.peekable();
    // A row read that did not fit: the next task's first.
    let mut held: Option<Vec<String>> = None;
    let mut number = 0usize;
    // The rows left when the input ended, spread over the slots `per_task` at a time.
    let mut spread = std::collections::VecDeque::<Vec<String>>::new();
    let mut per_task = 0;
    let task = |rows: Vec<Vec<String>>| {
        Some(Ok(TaskInput { args: rows.into_iter().flatten().collect(), ..TaskInput::default() }))
    };
    Box::new(std::iter::from_fn(move || {
        if !spread.is_empty() {
            return task(spread.drain(..per_task.min(spread.len())).collect());
        }
        let first = match held.take().map(Ok).or_else(|| read.next().map(|r| r.map(|t| t.args)))? {
            Ok(args) => args,
            Err(e) => return Some(Err(e)),
        };
        number += 1;
        let mut length = fit.length(&first);
        if length >= fit.limit {
            let start = first.join(" ").chars().take(50).collect();
            return Some(Err(InputError::CommandTooLong {
                input: number,
                length,
                limit: fit.limit,
                start,
            }));
        }
        let mut rows = vec![first];
        // What one more row adds does not depend on the rows before it.
        while let Some(Ok(next)) = read.next_if(Result::is_ok) {
            let mut two = rows[0].clone();
            two.extend(next.args.iter().cloned());
            let more = fit.length(&two) - fit.length(&rows[0]);
            if length + more >= fit.limit {
                held = Some(next.args);
                break;
            }
            length += more;
            number += 1;
            rows.push(next.args);
        }
        let ended = held.is_none() && read.peek().is_none();
        if ended && rows.len() > 1 && per_task == 0 {
            per_task = rows.len().div_ceil(fit.slots.max(1));
            spread.extend(rows);
            return task(spread.drain(..per_task).collect());
        }
        task(rows)
    }))
}

/// `--shuf`: every task read first (as GNU parallel must too), then in a random
/// order; an input error comes after the tasks read before it.
fn shuffled(read: Box<dyn Iterator<Item = Read>>) -> Box<dyn Iterator<Item = Read>> {
    let mut tasks = Vec::new();
    let mut failed = None;
    for task in read {
        match task {
            Ok(task) => tasks.push(Ok(task)),
            Err(e) => {
                failed = Some(Err(e));
                break;
            }
        }
    }
    fastrand::shuffle(&mut tasks);
    Box::new(tasks.into_iter().chain(failed))
}

/// Starts reading on a thread of its own. The receiver gives each task's inputs in
/// input order and ends after the last, or after the first error. The thread stops
/// once the receiver is dropped (at its next task: a read that blocks, on a pipe,
/// blocks it until then).
pub fn spawn(
    spec: InputSpec,
    rules: InputRules,
    per_task: Option<PerTask>,
    shuffle: bool,
    capacity: usize,
) -> io::Result<mpsc::Receiver<Read>> {
    let (tx, rx) = mpsc::channel(capacity);
    std::thread::Builder::new().name("shoal-inputs".into()).spawn(move || {
        let read = inputs(spec, rules, per_task);
        let read = if shuffle { shuffled(read) } else { read };
        for read in read {
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
fn inputs(
    spec: InputSpec,
    rules: InputRules,
    per_task: Option<PerTask>,
) -> Box<dyn Iterator<Item = Read>> {
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
    let read =
        if rules.colsep.is_none() {
            read
        } else {
            Box::new(read.map(move |task| {
                task.map(|task| TaskInput { args: rules.columns(task.args), ..task })
            }))
        };
    match per_task {
        Some(PerTask::Rows(rows)) => chunked(read, rows),
        Some(PerTask::Fit(fit)) => filled(read, fit),
        None => read,
    }
}

/// How many rows make one task, when more than one.
pub enum PerTask {
    /// `-N n`, `-n n`.
    Rows(u32),
    /// `-m`, `-X`: as many as fit.
    Fit(Fit),
}

/// The product of the groups' blocks, the first group streamed when it can be.
fn groups(groups: Groups, rules: InputRules) -> Box<dyn Iterator<Item = Read>> {
    let Groups { mut specs, linked, wrap } = groups;
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
                blocks(Box::new(first.into_iter().map(Ok)), groups, &linked, wrap)
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
        Ok(reader) => blocks(Box::new(lines(reader, &path, rules)), rest, &linked, wrap),
        Err(e) => Box::new(std::iter::once(Err(e))),
    }
}

type Inputs = Box<dyn Iterator<Item = Result<String, InputError>>>;
type Rows = Box<dyn Iterator<Item = Result<Vec<String>, InputError>>>;

/// The product of the blocks: the first group's inputs as read, `rest` the other
/// groups read whole; `linked` says which group joins the block before it.
fn blocks(
    first: Inputs,
    mut rest: Vec<Vec<String>>,
    linked: &[bool],
    wrap: bool,
) -> Box<dyn Iterator<Item = Read>> {
    // Where each block of `rest` (the groups from the second on) starts.
    let starts: Vec<usize> = (1..linked.len()).filter(|&g| !linked[g]).map(|g| g - 1).collect();
    let first_block_end = starts.first().copied().unwrap_or(rest.len());
    let mut later = Vec::with_capacity(starts.len());
    for &start in starts.iter().rev() {
        let mut block = rest.split_off(start);
        let head = block.remove(0);
        later.push(rows(Box::new(head.into_iter().map(Ok)), block, wrap).flatten().collect());
    }
    later.reverse();
    debug_assert_eq!(rest.len(), first_block_end);
    product(rows(first, rest, wrap), later)
}

/// The rows of one block: its first group's n-th input with each other group's.
fn rows(first: Inputs, others: Vec<Vec<String>>, wrap: bool) -> Rows {
    if others.is_empty() {
        return Box::new(first.map(|input| input.map(|input| vec![input])));
    }
    if others.iter().any(Vec::is_empty) {
        // No row, but the first group is still read for its errors.
        return Box::new(first.filter_map(|input| input.err().map(Err)));
    }
    let longest = others.iter().map(Vec::len).max().unwrap_or(0);
    let shortest = others.iter().map(Vec::len).min().unwrap_or(0);
    let mut state = Linked { first: Some(first), others, kept: Vec::new(), index: 0 };
    Box::new(std::iter::from_fn(move || state.next(wrap, longest, shortest)))
}

/// A block of linked groups being read row by row.
struct Linked {
    /// The first group, until it ends.
    first: Option<Inputs>,
    others: Vec<Vec<String>>,
    /// The first group's inputs kept to wrap around (no more than the longest other).
    kept: Vec<String>,
    /// The row to come.
    index: usize,
}

impl Linked {
    fn next(
        &mut self,
        wrap: bool,
        longest: usize,
        shortest: usize,
    ) -> Option<Result<Vec<String>, InputError>> {
        let index = self.index;
        if !wrap && index >= shortest {
            return None;
        }
        let read = self.first.as_mut().and_then(Iterator::next);
        let value = match read {
            Some(Err(e)) => return Some(Err(e)),
            Some(Ok(value)) => {
                if wrap && index < longest {
                    self.kept.push(value.clone());
                }
                value
            }
            None => {
                self.first = None;
                if !wrap || index >= longest || self.kept.is_empty() {
                    return None;
                }
                self.kept[index % self.kept.len()].clone()
            }
        };
        let mut row = Vec::with_capacity(1 + self.others.len());
        row.push(value);
        row.extend(self.others.iter().map(|g| g[index % g.len()].clone()));
        self.index += 1;
        Some(Ok(row))
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

/// The cartesian product of a streamed first block and the blocks read whole, in GNU
/// parallel order (the last block varies fastest).
fn product(first: Rows, rest: Vec<Vec<Vec<String>>>) -> Box<dyn Iterator<Item = Read>> {
    let task = |args| TaskInput { args, ..TaskInput::default() };
    if rest.is_empty() {
        return Box::new(first.map(move |row| row.map(task)));
    }
    if rest.iter().any(Vec::is_empty) {
        // No task, but the first block is still read for its errors.
        return Box::new(first.filter_map(|row| row.err().map(Err)));
    }
    let indices = vec![0; rest.len()];
    Box::new(Product { first, rest, indices, current: None })
}

struct Product {
    first: Rows,
    /// The rows of each of the other blocks.
    rest: Vec<Vec<Vec<String>>>,
    /// Where each of the other blocks is.
    indices: Vec<usize>,
    /// The row of the first block being combined with the others.
    current: Option<Vec<String>>,
}

impl Iterator for Product {
    type Item = Read;

    fn next(&mut self) -> Option<Read> {
        if self.current.is_none() {
            match self.first.next()? {
                Ok(row) => self.current = Some(row),
                Err(e) => return Some(Err(e)),
            }
        }
        let first = self.current.as_ref().expect("set above");
        let mut args = Vec::with_capacity(first.len() + self.rest.len());
        args.extend(first.iter().cloned());
        for (&i, block) in self.indices.iter().zip(&self.rest) {
            args.extend(block[i].iter().cloned());
        }
        // Odometer step: bump the last index, carrying leftwards; past the first
        // block's row, on to its next.
        let mut wrapped = true;
        for (i, block) in self.indices.iter_mut().zip(&self.rest).rev() {
            *i += 1;
            if *i < block.len() {
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
        inputs(spec, InputRules::default(), None).map(|t| t.map(|t| t.args)).collect()
    }

    fn unlinked(specs: Vec<InputGroupSpec>) -> InputSpec {
        let linked = vec![false; specs.len()];
        InputSpec::Groups(Groups { specs, linked, wrap: false })
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
        let got = all(unlinked(specs)).unwrap();
        let whole = [s(&["a", "b"]), s(&["1", "2"]), s(&["x"])];
        let expected: Vec<Vec<String>> = crate::inputs::cartesian(&whole).collect();
        assert_eq!(got, expected);
        let specs = vec![InputGroupSpec::File(path), InputGroupSpec::Literal(Vec::new())];
        assert!(all(unlinked(specs)).unwrap().is_empty());
    }

    #[test]
    fn a_streamed_first_group_links_as_one_read_whole() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"a\nb\nc\n").unwrap();
        let streamed = InputGroupSpec::File(file.path().to_owned());
        let whole = InputGroupSpec::Literal(s(&["a", "b", "c"]));
        for (others, linked, wrap) in [
            (vec![s(&["1", "2"]), s(&["x"])], vec![false, true, false], false),
            (vec![s(&["1", "2"]), s(&["x"])], vec![false, true, true], true),
            (vec![s(&["1", "2", "3", "4", "5"])], vec![false, true], true),
            (vec![s(&["1", "2", "3", "4", "5"])], vec![false, true], false),
            (vec![s(&["1"]), s(&["x", "y"])], vec![false, false, true], false),
        ] {
            let specs = |first: &InputGroupSpec| {
                let mut specs = vec![first.clone()];
                specs.extend(others.iter().cloned().map(InputGroupSpec::Literal));
                InputSpec::Groups(Groups { specs, linked: linked.clone(), wrap })
            };
            let got = all(specs(&streamed)).unwrap();
            assert_eq!(got, all(specs(&whole)).unwrap(), "{others:?} {linked:?} {wrap}");
            assert!(!got.is_empty());
        }
    }

    #[test]
    fn a_bad_line_ends_the_stream_after_the_good_ones_before_it() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"a\nb\n\xff\nc\n").unwrap();
        let spec = unlinked(vec![InputGroupSpec::File(file.path().to_owned())]);
        let read: Vec<Read> = inputs(spec, InputRules::default(), None).collect();
        assert_eq!(read.len(), 3, "a, b, then the error, and nothing after it");
        assert!(matches!(read[2], Err(InputError::NotUtf8 { line: 3, .. })), "{:?}", read[2]);
        let mut tasks = tempfile::NamedTempFile::new().unwrap();
        tasks.write_all(b"{\"args\": [\"a\"]}\n\n{\"args\": [1,}\n{\"args\": [\"c\"]}\n").unwrap();
        let read: Vec<Read> =
            inputs(InputSpec::Tasks(tasks.path().to_owned()), InputRules::default(), None)
                .collect();
        assert_eq!(read.len(), 2);
        assert!(matches!(read[1], Err(InputError::TaskLine { line: 3, .. })), "{:?}", read[1]);
    }
}
