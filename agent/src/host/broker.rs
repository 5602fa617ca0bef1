//! `broker` for actions: each call goes to the adapter plugin registered for the connection's
//! kind. An action call opens at most one instance per adapter and keeps it for the call, so an
//! adapter can hold what it received until the action settles it.

use std::collections::hash_map::Entry;
use std::sync::Arc;

use wasmtime::Store;

use super::bindings::action::qmedic::plugin::broker::Host;
use super::bindings::adapter::Adapter;
use super::bindings::{Message, Outgoing, QueueStats, Settlement};
use super::{Access, HostState, WitError};
use crate::runtime::{CallError, Plugin, call};

/// A live adapter instance, owned by the action call that opened it.
pub(crate) struct AdapterSession {
    store: Store<HostState>,
    bindings: Adapter,
}

impl HostState {
    /// The adapter session serving `conn`, opened on first use; checks the action's grant.
    /// Returns the adapter's name with it.
    async fn session(&mut self, conn: &str) -> Result<(String, &mut AdapterSession), WitError> {
        self.check(Access::Connection(conn))?;
        let connection = self.env.connection(conn)?;
        let adapter = self.env.adapter_for(connection).ok_or_else(|| {
            WitError::NotFound(format!(
                "no adapter plugin serves connection kind `{}` (connection `{conn}`); load an \
                 adapter whose plugin.toml says broker = \"{}\"",
                connection.kind, connection.kind
            ))
        })?;
        let deadline = self.deadline;
        let env = self.env.clone();
        let session = match self.adapters.entry(adapter.clone()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(slot) => {
                let plugin = env
                    .plugin(&adapter)
                    .map_err(|e| WitError::NotFound(e.to_string()))?;
                let (store, bindings) = open(&env, plugin, deadline).await.map_err(|e| {
                    WitError::Unavailable(format!(
                        "cannot start adapter for connection `{conn}`: {e}"
                    ))
                })?;
                slot.insert(AdapterSession { store, bindings })
            }
        };
        Ok((adapter, session))
    }

    /// Account for one adapter call. A sandbox failure in the adapter ends its session and
    /// comes back to the action as an `internal` error naming the adapter and the limit it hit.
    fn finish<T>(
        &mut self,
        adapter: &str,
        outcome: wasmtime::Result<Result<T, WitError>>,
    ) -> Result<T, WitError> {
        let Some(session) = self.adapters.get_mut(adapter) else {
            return Err(WitError::Internal(format!(
                "adapter `{adapter}` session vanished"
            )));
        };
        // The adapter's log lines belong to this call's record too.
        let lines = std::mem::take(&mut session.store.data_mut().logs);
        let plugin = session.store.data().plugin.clone();
        self.logs.extend(lines);
        match outcome {
            Ok(result) => {
                plugin.record_success();
                result
            }
            Err(trap) => {
                let error = match self.adapters.remove(adapter) {
                    Some(s) => call::classify(&plugin, trap, s.store.data()),
                    None => CallError::Trap {
                        plugin: adapter.to_string(),
                        detail: trap.to_string(),
                    },
                };
                plugin.record_failure(&error, self.env.quarantine_after);
                Err(WitError::Internal(error.to_string()))
            }
        }
    }
}

/// Route one `broker` call to the connection's adapter and account for its outcome.
macro_rules! route {
    ($self:ident, $conn:expr, |$broker:ident, $store:ident| $call:expr) => {{
        let (adapter, session) = match $self.session($conn).await {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        let $broker = session.bindings.qmedic_plugin_broker();
        let $store = &mut session.store;
        let outcome = $call.await;
        Ok($self.finish(&adapter, outcome))
    }};
}

async fn open(
    env: &Arc<crate::runtime::Env>,
    plugin: Arc<Plugin>,
    deadline: std::time::Instant,
) -> Result<(Store<HostState>, Adapter), CallError> {
    plugin.ensure_runnable()?;
    let pre = plugin.adapter_pre()?;
    let mut store = call::new_store(env, plugin.clone(), deadline);
    match pre.instantiate_async(&mut store).await {
        Ok(bindings) => Ok((store, bindings)),
        Err(trap) => {
            let error = call::classify(&plugin, trap, store.data());
            plugin.record_failure(&error, env.quarantine_after);
            Err(error)
        }
    }
}

impl Host for HostState {
    async fn stats(
        &mut self,
        conn: String,
        queue: String,
    ) -> wasmtime::Result<Result<QueueStats, WitError>> {
        route!(self, &conn, |b, s| b.call_stats(s, &conn, &queue))
    }

    async fn list(
        &mut self,
        conn: String,
        pattern: String,
    ) -> wasmtime::Result<Result<Vec<String>, WitError>> {
        route!(self, &conn, |b, s| b.call_list(s, &conn, &pattern))
    }

    async fn receive(
        &mut self,
        conn: String,
        queue: String,
        max: u32,
        wait_ms: u32,
    ) -> wasmtime::Result<Result<Vec<Message>, WitError>> {
        route!(self, &conn, |b, s| b
            .call_receive(s, &conn, &queue, max, wait_ms))
    }

    async fn publish(
        &mut self,
        conn: String,
        msgs: Vec<Outgoing>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        route!(self, &conn, |b, s| b.call_publish(s, &conn, &msgs))
    }

    async fn settle(
        &mut self,
        conn: String,
        handles: Vec<u64>,
        how: Settlement,
    ) -> wasmtime::Result<Result<(), WitError>> {
        route!(self, &conn, |b, s| b.call_settle(s, &conn, &handles, how))
    }

    async fn set_limit(
        &mut self,
        conn: String,
        queue: String,
        name: String,
        value: u64,
    ) -> wasmtime::Result<Result<(), WitError>> {
        route!(self, &conn, |b, s| b
            .call_set_limit(s, &conn, &queue, &name, value))
    }
}
