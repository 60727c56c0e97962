//! The server's errors: [`ServeError`] when it cannot start, [`ApiError`] for a
//! request, always a JSON body `{"error": "..."}` with a status that says whose fault
//! it was (4xx the request's, 503 the store's).

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use shoal_core::Error;

/// Why `shoal serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address without a token.
    #[error(
        "listening on {listen} needs a token (--token-file F or SHOAL_TOKEN): \
         only a loopback address may be served without one"
    )]
    TokenRequired {
        /// The address asked for.
        listen: SocketAddr,
    },
    /// The token file could not be read, or holds no token.
    #[error("token file {path}: {reason}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A SQLite store that does not exist: serving never creates one.
    #[error("no store at {} (`shoal run` creates it; --store names another)", path.display())]
    NoStore {
        /// The missing file.
        path: PathBuf,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] Error),
    /// The address could not be listened on.
    #[error("cannot listen on {listen}: {source}")]
    Bind {
        /// The address.
        listen: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Another I/O failure.
    #[error("cannot {what}: {source}")]
    Io {
        /// What failed.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// A request's failure: its status and a message for a person.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What was wrong.
    pub message: String,
}

impl ApiError {
    /// A bad request (400) with `message`.
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> ApiError {
        let status = match &err {
            Error::NoSuchRun { .. } | Error::NoSuchTask { .. } => StatusCode::NOT_FOUND,
            Error::RunEnded { .. } | Error::TaskEnded { .. } | Error::ControlNotTaken { .. } => {
                StatusCode::CONFLICT
            }
            Error::InvalidConfig { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError { status, message: err.to_string() }
    }
}
