//! `shoal run --dry-run`: the commands a new run would start, printed in input
//! order; nothing runs and no store is opened.

use std::io::Write;

use super::run::{parse, Parsed};
use crate::cli::RunArgs;
use crate::template::{display, Tag};
use crate::Exit;

/// Prints each task's command as the run would render it, `{%}` being the slot it
/// would get if every task took its turn (as GNU parallel's dry run numbers them).
pub fn dry_run(args: RunArgs) -> anyhow::Result<Exit> {
    let Parsed { template, options, mut rx, .. } = parse(&args)?;
    let tag = options.tag.as_deref().map(Tag::parse).transpose()?;
    let slots = options.jobs.max(1) as usize;
    let mut out = std::io::stdout().lock();
    let mut task = 0;
    while let Some(read) = rx.blocking_recv() {
        let input = read?;
        template.check_groups(input.args.len())?;
        task += 1;
        let slot = (task as usize - 1) % slots + 1;
        let command = display(&template.render(&input.args, task, slot));
        let line = match &tag {
            Some(tag) => format!("{}\t{command}", tag.render(&input.args, task, slot)),
            None => command,
        };
        // A closed stdout (`| head`) ends the listing, not as an error.
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    let _ = out.flush();
    Ok(Exit::Success)
}
