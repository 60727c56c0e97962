//! Who may do what: the bearer token on every request but the dashboard's own
//! assets (which hold no data), and the rules of actions (POSTs): refused in
//! read-only mode, and only with the `X-Shoal-Request: 1` header, which a page of
//! another site cannot send without a CORS preflight this server never grants, so
//! a cross-site form or fetch cannot steer a run.

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::AppState;

/// The header an action must carry.
pub const ACTION_HEADER: &str = "x-shoal-request";

/// The server's rules of access.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The bearer token every request must carry, if any.
    pub token: Option<String>,
    /// Serve no action.
    pub read_only: bool,
}

/// Checks a request against the rules before its handler runs.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let public = !path.starts_with("/api/") && path != "/metrics";
    if let (Some(token), false) = (&state.access.token, public) {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|given| same(given.as_bytes(), token.as_bytes())) {
            let error = ApiError {
                status: StatusCode::UNAUTHORIZED,
                message: "missing or wrong token: send `Authorization: Bearer <token>`".into(),
            };
            let mut response = error.into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    if request.method() == Method::POST {
        if state.access.read_only {
            return forbidden("this server is read-only (--read-only): it serves no action");
        }
        let marked = request.headers().get(ACTION_HEADER).is_some_and(|v| v == "1");
        if !marked {
            return forbidden(
                "an action needs the header `X-Shoal-Request: 1` (a guard against \
                 requests forged by other sites)",
            );
        }
    }
    next.run(request).await
}

fn forbidden(message: &str) -> Response {
    ApiError { status: StatusCode::FORBIDDEN, message: message.into() }.into_response()
}

/// Compares in a time that does not depend on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_compare_whole() {
        assert!(super::same(b"secret", b"secret"));
        assert!(!super::same(b"secret", b"secreT"));
        assert!(!super::same(b"secret", b"secret2"));
        assert!(!super::same(b"", b"x"));
    }
}
