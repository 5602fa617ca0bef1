//! Host bindings generated from `plugin-sdk/wit/qmedic.wit`, the file plugin authors build
//! against.

/// The `action` world: imports `broker`, `scale`, `state`, `log`, `clock`; exports `run`.
pub(crate) mod action {
    wasmtime::component::bindgen!({
        world: "action",
        path: "../plugin-sdk/wit",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// The `adapter` world: imports `http`, `state`, `log`, `clock`; exports `broker`.
pub(crate) mod adapter {
    wasmtime::component::bindgen!({
        world: "adapter",
        path: "../plugin-sdk/wit",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "qmedic:plugin/types": super::action::qmedic::plugin::types,
            "qmedic:plugin/state": super::action::qmedic::plugin::state,
            "qmedic:plugin/log": super::action::qmedic::plugin::log,
            "qmedic:plugin/clock": super::action::qmedic::plugin::clock,
        },
    });
}

pub(crate) use action::qmedic::plugin::types::{
    Error as WitError, Message, Outgoing, QueueStats, Settlement,
};
