//! Roundtable's browser dashboard: a Yew single-page app served by the
//! node's web bridge (or by `trunk serve` during development).
//!
//! - [`state`]: the state and its reducer (plain Rust, tested natively).
//! - [`view`]: pure helpers for times, the chat's virtual window, the timeline,
//!   the words of training states, chart axes and colours.
//! - [`collab`]: a training's participants as lanes (stragglers, failed,
//!   offline) and metric series (pure, tested natively).
//! - [`api`]: typed calls to the node's `/api`; [`ws`]: the `/ws` event stream.
//! - [`notifications`]: opt-in desktop notifications (what to show is
//!   decided purely, tested natively).
//! - [`app`]: the root component: the state's context, the WebSocket, the
//!   layout and the route switch; [`route`]: the URLs; [`hooks`]: the state
//!   context and clock hooks the pages share.
//! - [`components`]: presentational components, rendered from plain props
//!   so that they can be tested without a server; [`pages`]: routed pages.
//!
//! Imports go one way: app → pages → components → hooks, route, state.

pub mod api;
pub mod app;
pub mod collab;
pub mod components;
pub mod hooks;
pub mod notifications;
pub mod pages;
pub mod route;
pub mod state;
pub mod view;
pub mod ws;

pub use app::App;

/// Mounts the dashboard on the page's `<body>`.
pub fn start() {
    yew::Renderer::<App>::new().render();
}
