//! Roundtable's wire formats, defined once and used by the backend, the
//! dashboard, the fuzzers and the tests. Pure: no I/O, builds for wasm32.

pub mod api;
pub mod binary;
pub mod directory;
pub mod frame;
pub mod notify;
pub mod peer;
pub mod progress;
pub mod room;
pub mod rpc;
pub mod secure;
pub mod training;
pub mod transfer;

/// The Roundtable version, as reported by `/api/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
