//! Adapters: one broker kind behind the broker-neutral `broker` interface.

use crate::{Error, Message, Outgoing, QueueStats, Settlement};

/// One broker kind's semantics. Every method receives the connection name the action used; pass
/// it on to the host's protocol calls, which inject the connection's address and credentials.
pub trait Adapter {
    /// Health of one queue, topic or stream.
    fn stats(conn: String, queue: String) -> Result<QueueStats, Error>;
    /// Queue names matching a glob (`*`, `?`).
    fn list(conn: String, pattern: String) -> Result<Vec<String>, Error>;
    /// Up to `max` messages, waiting at most `wait_ms` for the first; they stay unsettled until
    /// [`Adapter::settle`].
    fn receive(conn: String, queue: String, max: u32, wait_ms: u32) -> Result<Vec<Message>, Error>;
    /// Return only after the broker confirmed every message durably.
    fn publish(conn: String, msgs: Vec<Outgoing>) -> Result<(), Error>;
    /// Ack, requeue or dead-letter received messages by handle.
    fn settle(conn: String, handles: Vec<u64>, how: Settlement) -> Result<(), Error>;
    /// Set a prefetch-like knob; `invalid` naming the knobs the broker has for any other name.
    fn set_limit(conn: String, queue: String, name: String, value: u64) -> Result<(), Error>;
}

/// Export a type implementing [`Adapter`] as this component's `broker` interface.
#[macro_export]
macro_rules! export_adapter {
    ($ty:ty) => {
        const _: () = {
            use $crate::bindings::adapter::exports::qmedic::plugin::broker as __broker;
            struct __QmedicAdapter;
            impl __broker::Guest for __QmedicAdapter {
                fn stats(conn: String, queue: String) -> Result<$crate::QueueStats, $crate::Error> {
                    <$ty as $crate::Adapter>::stats(conn, queue)
                }
                fn list(conn: String, pattern: String) -> Result<Vec<String>, $crate::Error> {
                    <$ty as $crate::Adapter>::list(conn, pattern)
                }
                fn receive(
                    conn: String,
                    queue: String,
                    max: u32,
                    wait_ms: u32,
                ) -> Result<Vec<$crate::Message>, $crate::Error> {
                    <$ty as $crate::Adapter>::receive(conn, queue, max, wait_ms)
                }
                fn publish(conn: String, msgs: Vec<$crate::Outgoing>) -> Result<(), $crate::Error> {
                    <$ty as $crate::Adapter>::publish(conn, msgs)
                }
                fn settle(
                    conn: String,
                    handles: Vec<u64>,
                    how: $crate::Settlement,
                ) -> Result<(), $crate::Error> {
                    <$ty as $crate::Adapter>::settle(conn, handles, how)
                }
                fn set_limit(
                    conn: String,
                    queue: String,
                    name: String,
                    value: u64,
                ) -> Result<(), $crate::Error> {
                    <$ty as $crate::Adapter>::set_limit(conn, queue, name, value)
                }
            }
            $crate::bindings::adapter::__export_adapter_world!(__QmedicAdapter with_types_in $crate::bindings::adapter);
        };
    };
}

/// HTTP to a connection's base URL, for adapters that speak a broker's management API.
pub mod http {
    pub use crate::bindings::adapter::qmedic::plugin::http::{Request, Response, send};
}

/// AMQP 0-9-1 on a connection, for adapters of AMQP brokers.
pub mod amqp {
    pub use crate::bindings::adapter::qmedic::plugin::amqp::*;
}

/// Kafka on a connection: offsets, group-less consumers, an idempotent producer, commits.
pub mod kafka {
    pub use crate::bindings::adapter::qmedic::plugin::kafka::*;
}
