//! The routes, and what every response goes through: the access rules
//! ([`security::guard`]) and JSON errors (a rejection of axum's own, a bad path or
//! query, an unknown route, becomes `{"error": ...}` with its status).
//!
//! Every API route is added through [`Routes`], which lists it, so the test below
//! checks that the OpenAPI document describes exactly the routes served.

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;

use crate::{actions, api, dashboard, events, metrics, security, AppState};

/// The OpenAPI document of the API, kept in the repository.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// A router that lists the routes it is given.
struct Routes {
    router: Router<AppState>,
    listed: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn add(
        mut self,
        method: &'static str,
        path: &'static str,
        route: MethodRouter<AppState>,
    ) -> Self {
        self.listed.push((method, path));
        self.router = self.router.route(path, route);
        self
    }
}

/// The API's routes: (method, path) and their handlers.
fn api_routes() -> Routes {
    Routes { router: Router::new(), listed: Vec::new() }
        .add("get", "/api/v1/openapi.json", get(openapi))
        .add("get", "/api/v1/runs", get(api::runs))
        .add("get", "/api/v1/runs/{run}", get(api::run))
        .add("get", "/api/v1/runs/{run}/stats", get(api::stats))
        .add("get", "/api/v1/runs/{run}/tasks", get(api::tasks))
        .add("get", "/api/v1/runs/{run}/tasks/{task}", get(api::task))
        .add("get", "/api/v1/runs/{run}/failures", get(api::failures))
        .add("get", "/api/v1/runs/{run}/events", get(events::events))
        .add("post", "/api/v1/runs/{run}/cancel", post(actions::cancel))
        .add("post", "/api/v1/runs/{run}/pause", post(actions::pause))
        .add("post", "/api/v1/runs/{run}/unpause", post(actions::unpause))
        .add("post", "/api/v1/runs/{run}/slots", post(actions::slots))
        .add("get", "/metrics", get(metrics::metrics))
}

/// The whole server: the API, `/metrics` and the dashboard.
pub fn router(state: AppState) -> Router {
    api_routes()
        .router
        .merge(dashboard::routes())
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such route") })
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), security::guard))
        .with_state(state)
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// An error response that is not JSON (axum's rejections are plain text) becomes
/// `{"error": <its text>}`, with its status.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let mut message = String::from_utf8_lossy(&text).trim().to_owned();
    if message.is_empty() {
        message = status.canonical_reason().unwrap_or("error").to_owned();
    }
    let body = serde_json::json!({ "error": message }).to_string();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_openapi_document_describes_every_route_served_and_no_other() {
        let doc: serde_json::Value =
            serde_json::from_str(OPENAPI).expect("docs/openapi.json is JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| *k != "parameters")
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect();
        let served: BTreeSet<(String, String)> =
            api_routes().listed.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        assert_eq!(served, documented);
    }
}
