//! `shoal completions SHELL` and `shoal man`: a shell's completion script and the
//! manual page, both generated from the clap definitions ([`crate::cli::Cli`]), so
//! they name every subcommand and option there is.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};

/// `shoal completions`: the script on stdout.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "shoal", &mut out);
    std::io::stdout().lock().write_all(&out)?;
    Ok(())
}

/// `shoal man`: the pages in roff on stdout: shoal(1), then one per subcommand
/// (shoal-run(1) and so on, as git's), each with its options.
pub fn man() -> anyhow::Result<()> {
    let command = Cli::command().version(env!("CARGO_PKG_VERSION"));
    let mut out = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut out)?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("shoal-{}", sub.get_name());
        let bin = format!("shoal {}", sub.get_name());
        let sub = sub.clone().name(name).bin_name(bin).version(env!("CARGO_PKG_VERSION"));
        clap_mangen::Man::new(sub).render(&mut out)?;
    }
    std::io::stdout().lock().write_all(&out)?;
    Ok(())
}
