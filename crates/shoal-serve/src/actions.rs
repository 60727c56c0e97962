//! The actions: each is a control request written into the store
//! ([`Store::request`](shoal_core::store::Store::request)), the same as `shoal
//! cancel`, `pause`, `unpause` and `jobs` write, applied by the process that runs the
//! run; the answer says what the run made of each. Nothing else is ever done.
//!
//! Retrying failed tasks is not an action yet: the engine has no control request
//! that runs an ended task again in a live run (`shoal run --resume` reruns an ended
//! run's unsucceeded tasks, in a process of its own).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use shoal_core::store::{requester, ControlAction};

use crate::api::read;
use crate::error::ApiError;
use crate::AppState;

/// How long an action waits for the run to take it, as the CLI's commands do.
const TAKE_WAIT: Duration = Duration::from_secs(5);

/// The body of a cancel: no body (or no tasks) cancels the whole run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    #[serde(default)]
    tasks: Vec<u64>,
}

/// The body of a change of slots.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotsBody {
    slots: u32,
}

/// A JSON body, or `None` for an empty one; malformed JSON is a 400 that says why.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<Option<T>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(bytes)
        .map(Some)
        .map_err(|e| ApiError::bad(format!("bad JSON body: {e}")))
}

/// Asks the run and answers with what it made of each request.
async fn steer(
    state: &AppState,
    run: i64,
    actions: Vec<ControlAction>,
) -> Result<Json<Value>, ApiError> {
    read(state, move |store| {
        let records = store.request(run, &actions, &requester("shoal serve"), TAKE_WAIT)?;
        Ok(Json(json!({ "requests": records })))
    })
    .await
}

/// `POST /api/v1/runs/{run}/cancel`, body `{"tasks": [N, ...]}` or none.
pub async fn cancel(
    State(state): State<AppState>,
    Path(run): Path<i64>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let tasks = body::<CancelBody>(&bytes)?.unwrap_or_default().tasks;
    let actions = if tasks.is_empty() {
        vec![ControlAction::CancelRun]
    } else {
        tasks.into_iter().map(|task| ControlAction::CancelTask { task }).collect()
    };
    steer(&state, run, actions).await
}

/// `POST /api/v1/runs/{run}/pause`.
pub async fn pause(
    State(state): State<AppState>,
    Path(run): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    steer(&state, run, vec![ControlAction::Pause]).await
}

/// `POST /api/v1/runs/{run}/unpause`.
pub async fn unpause(
    State(state): State<AppState>,
    Path(run): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    steer(&state, run, vec![ControlAction::Unpause]).await
}

/// `POST /api/v1/runs/{run}/slots`, body `{"slots": N}`.
pub async fn slots(
    State(state): State<AppState>,
    Path(run): Path<i64>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = body::<SlotsBody>(&bytes)?
        .ok_or_else(|| ApiError::bad("the body must be {\"slots\": N}"))?;
    steer(&state, run, vec![ControlAction::SetSlots { slots: body.slots }]).await
}
