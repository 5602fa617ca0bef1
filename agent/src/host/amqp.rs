//! `amqp`: AMQP 0-9-1 for adapters, on a channel of their own per connection.

use std::time::Duration;

use super::bindings::adapter::qmedic::plugin::amqp::{Delivery, Host, Publishing, QueueInfo};
use super::{Access, HostState, WitError};
use crate::connections::AmqpSession;

impl HostState {
    /// This instance's channel on `conn`, opened on first use and again after the broker closed
    /// it (a failed passive declare closes the channel, for instance).
    async fn amqp_session(&mut self, conn: &str) -> Result<&mut AmqpSession, WitError> {
        self.check(Access::Amqp(conn))?;
        if self.amqp.get(conn).is_some_and(AmqpSession::is_closed) {
            self.amqp.remove(conn);
        }
        if !self.amqp.contains_key(conn) {
            let env = self.env.clone();
            let channel = env.connection(conn)?.amqp.channel(conn).await?;
            self.amqp_generation += 1;
            let session = AmqpSession::new(channel, self.amqp_generation);
            self.amqp.insert(conn.to_string(), session);
        }
        self.amqp
            .get_mut(conn)
            .ok_or_else(|| WitError::Internal(format!("AMQP channel for `{conn}` vanished")))
    }
}

impl HostState {
    /// This instance's publishing channel on `conn`, opened on first use beside its session.
    async fn amqp_publisher(&mut self, conn: &str) -> Result<lapin::Channel, WitError> {
        if let Some(channel) = self.amqp_session(conn).await?.publisher() {
            return Ok(channel.clone());
        }
        let env = self.env.clone();
        let channel = env.connection(conn)?.amqp.channel(conn).await?;
        self.amqp_session(conn)
            .await?
            .set_publisher(channel.clone());
        Ok(channel)
    }
}

/// Run `$call` on the instance's channel for `$conn`, or return the error as the call's result.
macro_rules! on_channel {
    ($self:ident, $conn:expr, |$session:ident| $call:expr) => {{
        let $session = match $self.amqp_session($conn).await {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        Ok($call.await)
    }};
}

impl Host for HostState {
    async fn vhost(&mut self, conn: String) -> wasmtime::Result<Result<String, WitError>> {
        if let Err(e) = self.check(Access::Amqp(&conn)) {
            return Ok(Err(e));
        }
        let env = self.env.clone();
        Ok(env.connection(&conn).map(|c| c.amqp.vhost().to_string()))
    }

    async fn declare_passive(
        &mut self,
        conn: String,
        queue: String,
    ) -> wasmtime::Result<Result<QueueInfo, WitError>> {
        on_channel!(self, &conn, |s| s.declare_passive(&conn, &queue))
    }

    async fn consume(
        &mut self,
        conn: String,
        queue: String,
        max: u32,
        wait_ms: u32,
    ) -> wasmtime::Result<Result<Vec<Delivery>, WitError>> {
        let wait = Duration::from_millis(u64::from(wait_ms)).min(self.remaining());
        on_channel!(self, &conn, |s| s.consume(&conn, &queue, max, wait))
    }

    async fn publish(
        &mut self,
        conn: String,
        msgs: Vec<Publishing>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let channel = match self.amqp_publisher(&conn).await {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        Ok(AmqpSession::publish(&channel, &conn, msgs).await)
    }

    async fn ack(
        &mut self,
        conn: String,
        tags: Vec<u64>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        on_channel!(self, &conn, |s| s.ack(&conn, &tags))
    }

    async fn nack(
        &mut self,
        conn: String,
        tags: Vec<u64>,
        requeue: bool,
    ) -> wasmtime::Result<Result<(), WitError>> {
        on_channel!(self, &conn, |s| s.nack(&conn, &tags, requeue))
    }
}
