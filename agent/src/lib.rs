//! qmedic: a self-healing agent for message brokers.
//!
//! Broker semantics and remediation logic run as sandboxed WebAssembly plugins that share one
//! host API (`plugin-sdk/wit/qmedic.wit`). This crate is the agent: its configuration, the
//! sandbox ([`Runtime`]), the host side of the contract, and the connections it owns on the
//! plugins' behalf.

#![warn(missing_docs)]

mod builtin;
pub mod config;
mod connections;
pub(crate) mod host;
pub mod location;
pub mod manifest;
pub mod metrics;
pub mod playbook;
pub mod runtime;
pub mod safety;
pub mod server;
pub mod store;
pub mod triggers;

pub use config::{Config, ConfigError, Limits};
pub use host::{LogLine, Progress};
pub use location::{Located, Location, Problem};
pub use manifest::{Capability, Manifest, PluginKind};
pub use metrics::Metrics;
pub use playbook::{Catalog, Executor, Playbook, RunRequest, RunSummary};
pub use runtime::{
    Call, CallError, Grant, LoadError, Origin, Plugin, PluginFailure, PluginInfo, QueueStats,
    Runtime, sha256_hex,
};
pub use store::Store;
