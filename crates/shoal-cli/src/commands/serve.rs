//! `shoal serve`: the store over HTTP (the `shoal-serve` crate), with the token read
//! from `--token-file` or `SHOAL_TOKEN`.

use std::io::Write as _;

use shoal_core::store::StoreAddress;
use shoal_serve::{Config, ServeError};

use crate::cli::ServeArgs;

/// `shoal serve [--listen ADDR] [--token-file F] [--read-only]`.
pub fn serve(store: &StoreAddress, args: ServeArgs) -> anyhow::Result<()> {
    let token = match &args.token_file {
        Some(path) => Some(token_from_file(path)?),
        None => std::env::var("SHOAL_TOKEN").ok().filter(|t| !t.trim().is_empty()),
    };
    let config =
        Config { store: store.clone(), listen: args.listen, token, read_only: args.read_only };
    shoal_serve::serve(config, |addr| {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "shoal serve: listening on http://{addr}/");
        let _ = out.flush();
    })?;
    Ok(())
}

/// The token in `path`: its text, trimmed; an empty file is refused.
fn token_from_file(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ServeError::TokenFile { path: path.to_owned(), reason: e.to_string() })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(
            ServeError::TokenFile { path: path.to_owned(), reason: "it is empty".into() }.into()
        );
    }
    Ok(token.to_owned())
}
