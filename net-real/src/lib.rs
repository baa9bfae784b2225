//! # ctx-node: the production driver
//!
//! The `ctx-core` engine driven over real TCP: Noise-encrypted, mutually
//! authenticated connections bound to member identities (`secure`, `net`,
//! `peer`), records committed to an embedded database before anything that
//! depends on them leaves the node (`store`, `driver`), and an HTTP admin
//! API with a command-line client (`http`, `admin`, `client`).
//!
//! Nothing here decides protocol behaviour: order, sync and membership are
//! the engine's. This crate moves bytes, time and records.

pub mod admin;
pub mod args;
pub mod client;
pub mod driver;
pub mod http;
pub mod identity;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod net;
pub mod peer;
pub mod repair;
pub mod secure;
pub mod server;
pub mod space;
pub mod store;
