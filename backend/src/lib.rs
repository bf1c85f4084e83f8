//! Roundtable's backend: the eurechat directory server, the participant
//! node and its web bridge. The `roundtable` binary is a thin CLI over this.

pub mod caps;
pub mod demo;
pub mod directory;
pub mod events;
pub mod fl_drive;
pub mod framing;
pub mod node;
pub mod notify;
pub mod overlay;
pub mod progress;
pub mod store;
pub mod transfer;
pub mod web;
