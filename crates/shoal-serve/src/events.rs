//! `GET /api/v1/runs/{run}/events`: a Server-Sent Events stream of a run for live
//! views, from the store's progress feed (`shoal watch`'s: it reads only what
//! changed). Events: `progress` (the run's counts and running attempts, when they
//! change, and every few seconds), `task` (a task that reached its end), `end` (the
//! run is no longer live; the stream closes).
//!
//! A blocking thread polls the feed and hands events to the response over a bounded
//! channel; it stops when the client goes (the channel closes) or the run ends.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde_json::json;
use shoal_core::store::{ProgressFeed, RunStatus, Store};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::AppState;

/// How often the feed is polled.
const POLL: Duration = Duration::from_millis(200);

/// How often progress is sent even if unchanged, and liveness checked.
const REFRESH: Duration = Duration::from_secs(2);

/// The stream of run `run`'s events.
pub async fn events(
    State(state): State<AppState>,
    Path(run): Path<i64>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (tx, rx) = mpsc::channel(64);
    let (opened, open) = oneshot::channel();
    let store = state.store.clone();
    // The feed lives and dies on this thread: a PostgreSQL feed's connection must
    // not be dropped on the runtime's.
    tokio::task::spawn_blocking(move || match store.follow(run) {
        Ok(feed) => {
            if opened.send(Ok(())).is_ok() {
                follow(&store, run, feed, &tx);
            }
        }
        Err(err) => drop(opened.send(Err(ApiError::from(err)))),
    });
    open.await.map_err(|_| ApiError {
        status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
        message: "the stream could not start".into(),
    })??;
    let events = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// Polls the feed and sends what changed until the client goes or the run ends.
fn follow(store: &Store, run: i64, mut feed: Box<dyn ProgressFeed>, tx: &mpsc::Sender<Event>) {
    let send = |name: &str, data: serde_json::Value| {
        tx.blocking_send(Event::default().event(name).data(data.to_string())).is_ok()
    };
    let mut last = None;
    let mut refreshed = Instant::now() - REFRESH;
    while !tx.is_closed() {
        let ends = match feed.poll() {
            Ok(ends) => ends,
            Err(err) => {
                let _ = send("error", json!({ "error": err.to_string() }));
                return;
            }
        };
        for end in ends {
            if !send("task", json!(end)) {
                return;
            }
        }
        let progress = feed.progress().clone();
        let stale = refreshed.elapsed() >= REFRESH;
        if last.as_ref() != Some(&progress) || stale {
            if !send("progress", json!(progress)) {
                return;
            }
            last = Some(progress.clone());
        }
        if stale {
            refreshed = Instant::now();
        }
        // A run stored as ended, or whose holder is gone, is over: its final status
        // is the store's (`died` for a holder that died).
        if progress.status != RunStatus::Running || (stale && !store.is_alive(run)) {
            if let Ok(ends) = feed.poll() {
                for end in ends {
                    send("task", json!(end));
                }
            }
            let status = store.run(run).map(|r| r.status.as_str()).unwrap_or("died");
            send("end", json!({ "run": run, "status": status }));
            return;
        }
        std::thread::sleep(POLL);
    }
}
