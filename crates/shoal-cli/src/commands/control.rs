//! `shoal cancel`, `pause`, `unpause` and `jobs`: steer a live run from another
//! terminal. Each writes a request into the store and waits until the run has taken
//! it (the run polls the store); what the run made of it is printed.

use std::time::Duration;

use anyhow::bail;
use shoal_core::store::{requester, ControlAction, Store, StoreAddress};

use crate::cli::{CancelArgs, JobsArgs, RunArg};
use crate::Exit;

/// How long a request waits for the run to take it: a live `shoal run` takes it
/// within about 100 ms; past this the process running the run takes none.
const TAKE_WAIT: Duration = Duration::from_secs(5);

/// `shoal cancel RUN [--task N ...]`.
pub fn cancel(address: &StoreAddress, args: CancelArgs) -> anyhow::Result<Exit> {
    let actions: Vec<ControlAction> = if args.tasks.is_empty() {
        vec![ControlAction::CancelRun]
    } else {
        args.tasks.iter().map(|&task| ControlAction::CancelTask { task }).collect()
    };
    steer(address, args.run, &actions, "shoal cancel")
}

/// `shoal pause RUN`.
pub fn pause(address: &StoreAddress, args: RunArg) -> anyhow::Result<Exit> {
    steer(address, args.run, &[ControlAction::Pause], "shoal pause")
}

/// `shoal unpause RUN`.
pub fn unpause(address: &StoreAddress, args: RunArg) -> anyhow::Result<Exit> {
    steer(address, args.run, &[ControlAction::Unpause], "shoal unpause")
}

/// `shoal jobs RUN N`.
pub fn jobs(address: &StoreAddress, args: JobsArgs) -> anyhow::Result<Exit> {
    steer(address, args.run, &[ControlAction::SetSlots { slots: args.jobs }], "shoal jobs")
}

/// Asks the run, waits for it to take the requests, and prints what it made of each.
fn steer(
    address: &StoreAddress,
    run: i64,
    actions: &[ControlAction],
    front: &str,
) -> anyhow::Result<Exit> {
    if let Some(path) = address.path().filter(|path| !path.exists()) {
        bail!("no store at {} (`shoal run` creates it; --store names another)", path.display());
    }
    let store = Store::open(address)?;
    for record in store.request(run, actions, &requester(front), TAKE_WAIT)? {
        println!("run {run}: {}", record.result.unwrap_or_default());
    }
    Ok(Exit::Success)
}
