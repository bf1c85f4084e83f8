//! Presentational components: they render their props and hold no
//! request logic, so tests can render them with any state.

mod header;
mod server_status;

pub use header::{Header, HeaderProps};
pub use server_status::{ServerStatus, ServerStatusProps};
