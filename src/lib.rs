//! Tandem: two-way, real-time change-data-capture between two SQL databases whose schemas
//! differ, built on the transactional outbox. See DESIGN.md for the invariants.
//!
//! Modules follow the data flow: config → model → mapping → endpoint → sync → cli.

pub mod backfill;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod endpoint;
pub mod init;
pub mod logging;
pub mod mapping;
pub mod model;
pub mod progress;
pub mod secret;
pub mod service;
pub mod side;
pub mod sync;
pub mod verify;
