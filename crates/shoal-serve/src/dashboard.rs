//! The dashboard: plain HTML, CSS and JavaScript from `assets/`, embedded in the
//! binary (no CDN, no build step). One page that routes by its URL's hash and reads
//! everything through the JSON API (with the token, if the server has one, which it
//! asks for once and keeps in the browser's local storage). Its assets hold no data,
//! so they are served without the token.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::AppState;

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/style.css");

/// The dashboard's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/assets/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}

fn asset(kind: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")], body)
}
