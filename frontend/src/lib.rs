//! Roundtable's browser dashboard: a Yew single-page app served by the
//! backend's web bridge (or by `trunk serve` during development).
//!
//! - [`app`]: the root component and page layout.
//! - [`api`]: typed calls to the backend's `/api`.
//! - [`components`]: presentational components, rendered from plain props
//!   so that they can be tested without a server.

pub mod api;
pub mod app;
pub mod components;

pub use app::App;

/// Mounts the dashboard on the page's `<body>`.
pub fn start() {
    yew::Renderer::<App>::new().render();
}
