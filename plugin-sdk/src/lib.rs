//! Write qmedic plugins in ordinary Rust.
//!
//! A plugin is either an **action** (broker-neutral remediation: implement [`Action`] and call
//! [`export_action!`]) or an **adapter** (one broker kind's semantics: implement [`Adapter`] and
//! call [`export_adapter!`]). Build it with `cargo build --target wasm32-wasip2 --release`; the
//! `.wasm` it produces is a component the agent loads beside its `plugin.toml`.
//!
//! ```no_run
//! use qmedic_plugin_sdk::{Action, Error, broker, export_action};
//!
//! #[derive(serde::Deserialize)]
//! struct Params { connection: String, queue: String }
//!
//! #[derive(serde::Serialize)]
//! struct Report { depth: u64 }
//!
//! struct Depth;
//! impl Action for Depth {
//!     type Params = Params;
//!     type Report = Report;
//!     fn run(p: Params) -> Result<Report, Error> {
//!         Ok(Report { depth: broker::stats(&p.connection, &p.queue)?.depth })
//!     }
//! }
//! export_action!(Depth);
//! ```

#![warn(missing_docs)]

extern crate self as qmedic_plugin_sdk;

mod action;
mod adapter;
mod glob;
mod host;

pub use action::{Action, run_json};
pub use adapter::{Adapter, amqp, http, kafka};
pub use glob::glob;
pub use host::{Error, Message, Outgoing, QueueStats, Settlement};
pub use host::{broker, clock, log, scale, state};

/// The generated bindings, for the export macros and for plugins that need the raw contract.
/// Their documentation is the WIT file's.
#[allow(missing_docs)]
pub mod bindings {
    /// The `action` world.
    pub mod action {
        wit_bindgen::generate!({
            world: "action",
            path: "wit",
            pub_export_macro: true,
            export_macro_name: "__export_action_world",
            default_bindings_module: "::qmedic_plugin_sdk::bindings::action",
            runtime_path: "::qmedic_plugin_sdk::__wit_bindgen::rt",
        });
    }

    /// The `adapter` world; it shares the action world's types and host interfaces.
    pub mod adapter {
        wit_bindgen::generate!({
            world: "adapter",
            path: "wit",
            pub_export_macro: true,
            export_macro_name: "__export_adapter_world",
            default_bindings_module: "::qmedic_plugin_sdk::bindings::adapter",
            runtime_path: "::qmedic_plugin_sdk::__wit_bindgen::rt",
            with: {
                "qmedic:plugin/types@0.1.0": crate::bindings::action::qmedic::plugin::types,
                "qmedic:plugin/state@0.1.0": crate::bindings::action::qmedic::plugin::state,
                "qmedic:plugin/log@0.1.0": crate::bindings::action::qmedic::plugin::log,
                "qmedic:plugin/clock@0.1.0": crate::bindings::action::qmedic::plugin::clock,
            },
        });
    }
}

#[doc(hidden)]
pub use serde_json as __serde_json;
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;
