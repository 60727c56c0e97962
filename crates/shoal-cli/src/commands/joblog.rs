//! `--joblog FILE`: a line per finished task in GNU parallel's exact format, which
//! tools parse: `Seq Host Starttime JobRuntime Send Receive Exitval Signal Command`,
//! tab-separated.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::UNIX_EPOCH;

use anyhow::Context;
use shoal_core::engine::Ended;
use shoal_core::TaskId;

const HEADER: &str = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n";

/// The open job log and the command of each running task.
pub struct Joblog {
    file: File,
    commands: HashMap<TaskId, String>,
    /// A write failed (said once; the run goes on, its results are in the store).
    failed: bool,
}

impl Joblog {
    /// Creates (or empties) the log and writes its header; `append` (a resume) adds
    /// to an existing log instead, as parallel's `--resume` does.
    pub fn open(path: &Path, append: bool) -> anyhow::Result<Joblog> {
        let mut options = OpenOptions::new();
        if append {
            options.append(true).create(true);
        } else {
            options.write(true).create(true).truncate(true);
        }
        let cannot = || format!("cannot write to --joblog {}", path.display());
        let mut file = options.open(path).with_context(cannot)?;
        if file.metadata().with_context(cannot)?.len() == 0 {
            file.write_all(HEADER.as_bytes()).with_context(cannot)?;
        }
        Ok(Joblog { file, commands: HashMap::new(), failed: false })
    }

    /// An attempt of `task` starts with `command` (as shown to a shell).
    pub fn started(&mut self, task: TaskId, command: String) {
        self.commands.insert(task, command);
    }

    /// Writes the task's line when this attempt was its last. Receive is the bytes of
    /// standard output, as parallel counts it; Send is 0 (nothing is sent locally).
    pub fn ended(&mut self, ended: &Ended) {
        if ended.final_status.is_none() {
            return;
        }
        let command = self.commands.remove(&ended.task).unwrap_or_default();
        let start = ended.at.checked_sub(ended.duration).unwrap_or(ended.at);
        let start = start.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let line = format!(
            "{}\t:\t{start:.3}\t{:>10.3}\t0\t{}\t{}\t{}\t{command}\n",
            ended.task,
            ended.duration.as_secs_f64(),
            ended.stdout.bytes.len(),
            ended.exit_code.unwrap_or(0),
            ended.signal.unwrap_or(0),
        );
        if let Err(e) = self.file.write_all(line.as_bytes()) {
            if !std::mem::replace(&mut self.failed, true) {
                note!("shoal: --joblog: {e}; the run goes on, its results are in the store");
            }
        }
    }
}
