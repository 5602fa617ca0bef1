//! The host API as plain Rust functions, for actions and adapters alike.

use crate::bindings::action::qmedic::plugin as wit;

pub use wit::types::{Error, Message, Outgoing, QueueStats, Settlement};

// wit-bindgen derives `Display` and `std::error::Error` for the WIT `error` variant.

impl QueueStats {
    /// Stats with this depth and nothing else known, for an adapter to fill in what its broker
    /// tells.
    pub fn with_depth(depth: u64) -> Self {
        QueueStats {
            depth,
            in_flight: 0,
            consumers: None,
            oldest_age_ms: None,
            publish_rate: None,
            ack_rate: None,
            redelivered: None,
            dead_letter: None,
            trend: None,
            extra: Vec::new(),
        }
    }
}

impl Error {
    /// An `invalid` error, for bad parameters.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    /// An `internal` error, for a bug or an unexpected state inside the plugin.
    pub fn internal(msg: impl Into<String>) -> Self {
        Error::Internal(msg.into())
    }
}

/// Queues, messages and limits on any connection; the host routes each call to the adapter for
/// that connection's kind. Actions only.
pub mod broker {
    pub use crate::bindings::action::qmedic::plugin::broker::*;
}

/// Replica counts through the agent's configured scalers. Actions only.
pub mod scale {
    pub use crate::bindings::action::qmedic::plugin::scale::*;
}

/// A small key-value store private to this plugin.
pub mod state {
    pub use crate::bindings::action::qmedic::plugin::state::*;
}

/// Wall-clock time and sleeping within the call's deadline.
pub mod clock {
    pub use crate::bindings::action::qmedic::plugin::clock::*;
}

/// Log lines tagged with the plugin's name.
pub mod log {
    pub use crate::bindings::action::qmedic::plugin::log::{Level, progress, write};

    /// A line at `info`.
    pub fn info(msg: &str) {
        write(Level::Info, msg);
    }

    /// A line at `warn`: something an operator should look at.
    pub fn warn(msg: &str) {
        write(Level::Warn, msg);
    }

    /// A line at `error`.
    pub fn error(msg: &str) {
        write(Level::Error, msg);
    }

    /// A line at `debug`, hidden unless the agent logs at debug.
    pub fn debug(msg: &str) {
        write(Level::Debug, msg);
    }
}
