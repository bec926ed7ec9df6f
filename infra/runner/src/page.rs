//! The demo page, served at `/` beside the WebSocket (a plain GET gets the page, an upgrade the
//! socket), with the client library it is built on. The files are `clients/js`'s, compiled in,
//! so `cargo run` needs nothing else; they are just as usable as static files elsewhere.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// (path, contents, content type) of every file the page needs, flat: `demo/index.html`'s
/// `../livesync.js` resolves to `/livesync.js`.
const FILES: [(&str, &str, &str); 5] = [
    ("index.html", include_str!("../../../clients/js/demo/index.html"), "text/html; charset=utf-8"),
    ("demo.js", include_str!("../../../clients/js/demo/demo.js"), "text/javascript; charset=utf-8"),
    ("demo.css", include_str!("../../../clients/js/demo/demo.css"), "text/css; charset=utf-8"),
    ("livesync.js", include_str!("../../../clients/js/livesync.js"), "text/javascript; charset=utf-8"),
    ("ot.js", include_str!("../../../clients/js/ot.js"), "text/javascript; charset=utf-8"),
];

fn file(name: &str) -> Response {
    match FILES.iter().find(|(path, _, _)| *path == name) {
        Some((_, contents, kind)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *contents,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file: the demo page is at /").into_response(),
    }
}

/// The page itself, for a GET of `/` that is not a WebSocket upgrade.
pub fn index() -> Response {
    file("index.html")
}

/// `/{name}`: the page's scripts and style.
pub async fn asset(Path(name): Path<String>) -> Response {
    file(&name)
}
