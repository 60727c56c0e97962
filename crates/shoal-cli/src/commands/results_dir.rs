//! `--results DIR`: each task's output in files, laid out as GNU parallel's. A DIR
//! without replacement strings holds `DIR/1/<input 1>/2/<input 2>/{seq,stdout,stderr}`
//! (each input with `\` `\t` NUL `/` written `\\` `\t` `\0` `\_`); a templated one is
//! the task's own path: ending in `/` a directory holding those three files, else
//! the stdout file itself, with `.err` and `.seq` beside it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use shoal_core::engine::Ended;
use shoal_core::{SlotId, TaskId};

use crate::template::Tag;

/// The `--results` of a run and the files of each running task.
pub struct ResultsDir {
    /// `None` when DIR has no replacement strings.
    template: Option<Tag>,
    dir: PathBuf,
    files: HashMap<TaskId, Files>,
    /// A write failed (said once; the run goes on, its results are in the store).
    failed: bool,
}

/// Where one task's outputs go.
#[derive(Debug, PartialEq)]
struct Files {
    stdout: PathBuf,
    stderr: PathBuf,
    seq: PathBuf,
}

impl ResultsDir {
    /// Checks `--results DIR`, and makes DIR when it has no replacement strings: one
    /// that cannot be made stops the run before anything runs.
    pub fn open(text: &str) -> anyhow::Result<ResultsDir> {
        let tag = Tag::parse(text)?;
        let template = (!tag.is_literal()).then_some(tag);
        if template.is_none() {
            std::fs::create_dir_all(text)
                .with_context(|| format!("cannot make the --results directory {text}"))?;
        }
        Ok(ResultsDir { template, dir: text.into(), files: HashMap::new(), failed: false })
    }

    /// An attempt of `task` starts with these inputs.
    pub fn started(&mut self, task: TaskId, slot: SlotId, args: &[String]) {
        let files = match &self.template {
            None => Files::in_dir(self.dir.join(inputs_as_dirs(args))),
            Some(template) => {
                let path = template.render(args, task, slot);
                match path.strip_suffix('/') {
                    Some(dir) => Files::in_dir(PathBuf::from(format!("{dir}/"))),
                    None => Files {
                        stderr: format!("{path}.err").into(),
                        seq: format!("{path}.seq").into(),
                        stdout: path.into(),
                    },
                }
            }
        };
        self.files.insert(task, files);
    }

    /// Writes the task's files when this attempt was its last, over any a run
    /// before left (as parallel, which empties them).
    pub fn ended(&mut self, ended: &Ended, stdout: &[u8], stderr: &[u8]) {
        if ended.final_status.is_none() {
            return;
        }
        let Some(files) = self.files.remove(&ended.task) else { return };
        if let Err(e) = files.write(ended.task, stdout, stderr) {
            if !std::mem::replace(&mut self.failed, true) {
                note!("shoal: --results: {e:#}; the run goes on, its results are in the store");
            }
        }
    }
}

impl Files {
    fn in_dir(dir: PathBuf) -> Files {
        Files { stdout: dir.join("stdout"), stderr: dir.join("stderr"), seq: dir.join("seq") }
    }

    fn write(&self, task: TaskId, stdout: &[u8], stderr: &[u8]) -> anyhow::Result<()> {
        if let Some(dir) = self.stdout.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot make {}", dir.display()))?;
        }
        let write = |path: &Path, bytes: &[u8]| {
            std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
        };
        // parallel's seq file holds the number alone, with no newline.
        write(&self.seq, task.to_string().as_bytes())?;
        write(&self.stdout, stdout)?;
        write(&self.stderr, stderr)
    }
}

/// The inputs as parallel names their directories: `1/<first>/2/<second>/...`.
fn inputs_as_dirs(args: &[String]) -> PathBuf {
    let mut path = String::new();
    for (n, arg) in args.iter().enumerate() {
        if n > 0 {
            path.push('/');
        }
        path.push_str(&format!("{}/", n + 1));
        for c in arg.chars() {
            match c {
                '\\' => path.push_str("\\\\"),
                '\t' => path.push_str("\\t"),
                '\0' => path.push_str("\\0"),
                '/' => path.push_str("\\_"),
                c => path.push(c),
            }
        }
    }
    path.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_become_numbered_directories_with_slashes_escaped() {
        let args = ["a/b".to_owned(), "c\\d\te".to_owned()];
        assert_eq!(inputs_as_dirs(&args), PathBuf::from("1/a\\_b/2/c\\\\d\\te"));
        // An empty input is an empty name: its files sit in `1/` itself, as parallel's.
        assert_eq!(
            PathBuf::from("r").join(inputs_as_dirs(&["".to_owned()])).join("seq"),
            PathBuf::from("r/1/seq")
        );
    }

    #[test]
    fn a_templated_path_is_a_directory_when_it_ends_in_a_slash_else_the_stdout_file() {
        let dir = std::env::temp_dir().join("unused");
        let mut results = ResultsDir {
            template: Some(Tag::parse("out/{}/").unwrap()),
            dir: dir.clone(),
            files: HashMap::new(),
            failed: false,
        };
        results.started(1, 1, &["a".to_owned()]);
        assert_eq!(results.files[&1], Files::in_dir("out/a/".into()));
        results.template = Some(Tag::parse("out/{}.txt").unwrap());
        results.started(2, 1, &["b".to_owned()]);
        let files = &results.files[&2];
        assert_eq!(files.stdout, PathBuf::from("out/b.txt"));
        assert_eq!(files.stderr, PathBuf::from("out/b.txt.err"));
        assert_eq!(files.seq, PathBuf::from("out/b.txt.seq"));
    }
}
