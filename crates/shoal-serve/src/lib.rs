//! `shoal serve`: an HTTP API (JSON under `/api/v1`, described by
//! `docs/openapi.json`), a live dashboard (plain HTML, CSS and JS embedded in the
//! binary) and Prometheus metrics (`/metrics`) over one store, SQLite or PostgreSQL.
//!
//! It owns no state of its own: every answer is read from the store through the same
//! calls the reports use ([`Store`]), a live view follows a run through the store's
//! progress feed (`shoal watch`'s), and every action is a control request
//! ([`Store::request`], `shoal cancel`'s, `pause`'s and `jobs`'s), applied by the
//! process that runs the run. It must not execute, schedule or change anything
//! itself. Store calls are synchronous: each runs on tokio's blocking pool.
//!
//! A crate of its own so that the HTTP stack (axum, hyper) stays out of the core and
//! of the library crate; the `shoal` command line runs it as `shoal serve`.

mod actions;
mod api;
mod dashboard;
mod error;
mod events;
mod metrics;
mod params;
mod routes;
mod security;

use std::net::SocketAddr;
use std::sync::Arc;

use shoal_core::store::{Store, StoreAddress};

pub use error::ServeError;
pub use routes::router;
pub use security::Access;

/// What `shoal serve` was asked for.
#[derive(Debug, Clone)]
pub struct Config {
    /// The store to serve.
    pub store: StoreAddress,
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The bearer token every request must carry, if any: required to listen on
    /// any address but loopback.
    pub token: Option<String>,
    /// Serve no action: the store is opened read-only, every POST is refused.
    pub read_only: bool,
}

/// What every handler shares: the open store and who may do what.
#[derive(Debug, Clone)]
pub struct AppState {
    store: Arc<Store>,
    access: Arc<Access>,
}

/// Opens the store and serves until SIGINT or SIGTERM. `ready` is told the address
/// listened on (port 0 picks one) once connections are taken.
pub fn serve(config: Config, ready: impl FnOnce(SocketAddr)) -> Result<(), ServeError> {
    if !config.listen.ip().is_loopback() && config.token.is_none() {
        return Err(ServeError::TokenRequired { listen: config.listen });
    }
    if let Some(path) = config.store.path().filter(|path| !path.exists()) {
        return Err(ServeError::NoStore { path: path.to_owned() });
    }
    let store = if config.read_only {
        Store::open_read_only(config.store.clone())?
    } else {
        Store::open(config.store.clone())?
    };
    let access = Access { token: config.token, read_only: config.read_only };
    // The store is dropped here, off the runtime: a PostgreSQL client's drop blocks on
    // a runtime of its own, which tokio refuses inside another.
    let store = Arc::new(store);
    let app = router(AppState { store: store.clone(), access: Arc::new(access) });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ServeError::Io { what: "start the runtime", source })?;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServeError::Bind { listen: config.listen, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServeError::Io { what: "read the address", source })?;
        ready(local);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown())
            .await
            .map_err(|source| ServeError::Io { what: "serve", source })
    });
    // Event streams notice a closed client within a poll.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    drop(store);
    served
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
