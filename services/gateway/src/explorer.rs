//! The API explorer at `/docs`: Swagger UI reading `/openapi.json`, where a person
//! reads every route and tries it.
//!
//! Swagger UI's files are checked in (`assets/swagger-ui/`, with its version and
//! licence) and embedded in the binary: the page loads nothing from elsewhere, and
//! its Content-Security-Policy says so to the browser.

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use http::HeaderValue;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};

const PAGE: &[u8] = include_bytes!("../assets/explorer.html");
const SCRIPT: &[u8] = include_bytes!("../assets/explorer.js");
const BUNDLE: &[u8] = include_bytes!("../assets/swagger-ui/swagger-ui-bundle.js");
const STYLE: &[u8] = include_bytes!("../assets/swagger-ui/swagger-ui.css");

/// Scripts and styles from this origin only (Swagger UI sets inline styles, and shows
/// its icons as `data:` images); calls to this origin only.
const POLICY: HeaderValue = HeaderValue::from_static(
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'",
);

/// `GET /docs` and its files (`/docs/…`).
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/docs", get(|| file(PAGE, "text/html; charset=utf-8")))
        .route(
            "/docs/explorer.js",
            get(|| file(SCRIPT, "text/javascript; charset=utf-8")),
        )
        .route(
            "/docs/swagger-ui-bundle.js",
            get(|| file(BUNDLE, "text/javascript; charset=utf-8")),
        )
        .route(
            "/docs/swagger-ui.css",
            get(|| file(STYLE, "text/css; charset=utf-8")),
        )
}

async fn file(body: &'static [u8], content_type: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (CONTENT_SECURITY_POLICY, POLICY),
            // The files change with the binary only; an hour spares reloads.
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        body,
    )
}
