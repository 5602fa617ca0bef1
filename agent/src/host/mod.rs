//! The host side of the WIT contract: one module per interface, and [`HostState::check`], the
//! one function every host call passes before it does anything.

mod amqp;
pub(crate) mod bindings;
mod broker;
mod clock;
mod http;
mod kafka;
mod log;
mod scale;
mod state;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub(crate) use bindings::WitError;
pub(crate) use broker::AdapterSession;
pub use log::LogLine;

use crate::connections::{AmqpSession, KafkaSession};
use crate::manifest::{Capability, PluginKind};
use crate::runtime::{Env, Limiter, Plugin};

/// Receives `(done, total)` from a plugin's `log.progress`; `total` is `None` when unknown.
pub type Progress = Arc<dyn Fn(u64, Option<u64>) + Send + Sync>;

/// Bytes of a plugin's stdout and stderr kept per call, for its log and its error messages.
const STDIO_CAPACITY: usize = 64 << 10;

/// Everything one plugin instance's store holds: who it is, what it may reach, and what it did.
pub(crate) struct HostState {
    pub(crate) plugin: Arc<Plugin>,
    pub(crate) env: Arc<Env>,
    pub(crate) limiter: Limiter,
    /// When the whole call must end, host calls included.
    pub(crate) deadline: Instant,
    pub(crate) logs: Vec<LogLine>,
    /// Actions only: the adapter instances this call opened, by adapter plugin name.
    pub(crate) adapters: HashMap<String, AdapterSession>,
    /// Who wants to hear how far the call has got (`log.progress`).
    pub(crate) progress: Option<Progress>,
    /// Adapters only: this instance's AMQP channels, by connection name.
    pub(crate) amqp: HashMap<String, AmqpSession>,
    /// How many AMQP channels this instance has opened; tags each channel's handles.
    pub(crate) amqp_generation: u64,
    /// Adapters only: this instance's Kafka consumers.
    pub(crate) kafka: KafkaSession,
    pub(crate) stderr: MemoryOutputPipe,
    pub(crate) stdout: MemoryOutputPipe,
    wasi: WasiCtx,
    table: ResourceTable,
}

/// What a host call wants to reach; [`HostState::check`] decides.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Access<'a> {
    /// Queues on a connection, through its adapter (actions).
    Connection(&'a str),
    /// HTTP to a connection's base URL (adapters, for the connections they serve).
    Http(&'a str),
    /// AMQP on a connection (adapters, for the connections they serve).
    Amqp(&'a str),
    /// Kafka on a connection (adapters, for the connections they serve).
    Kafka(&'a str),
    Scaler(&'a str),
    State,
}

impl HostState {
    pub(crate) fn new(plugin: Arc<Plugin>, env: Arc<Env>, deadline: Instant) -> Self {
        let stdout = MemoryOutputPipe::new(STDIO_CAPACITY);
        let stderr = MemoryOutputPipe::new(STDIO_CAPACITY);
        // No preopens, no environment, no arguments, no network: everything real goes through
        // the qmedic host interfaces.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let limiter = Limiter::new(plugin.limits);
        HostState {
            plugin,
            env,
            limiter,
            deadline,
            logs: Vec::new(),
            adapters: HashMap::new(),
            amqp: HashMap::new(),
            amqp_generation: 0,
            kafka: KafkaSession::default(),
            progress: None,
            stderr,
            stdout,
            wasi,
            table: ResourceTable::new(),
        }
    }

    /// The sandbox's rules, in one place. Every host call that reaches outside the plugin calls
    /// this first and returns its `denied` or `not-found` error unchanged.
    pub(crate) fn check(&self, access: Access<'_>) -> Result<(), WitError> {
        let plugin = &self.plugin;
        let name = &plugin.manifest.name;
        let (needed, kind) = match access {
            Access::Connection(_) => (Capability::Broker, PluginKind::Action),
            Access::Http(_) => (Capability::Http, PluginKind::Adapter),
            Access::Amqp(_) => (Capability::Amqp, PluginKind::Adapter),
            Access::Kafka(_) => (Capability::Kafka, PluginKind::Adapter),
            Access::Scaler(_) => (Capability::Scale, PluginKind::Action),
            Access::State => (Capability::State, plugin.manifest.kind),
        };
        if plugin.manifest.kind != kind || !plugin.manifest.has(needed) {
            return Err(WitError::Denied(format!(
                "plugin `{name}` did not ask for the `{needed}` capability in its plugin.toml"
            )));
        }
        match access {
            Access::Connection(conn) => {
                self.env.connection(conn)?;
                self.granted_connection(conn)?;
            }
            Access::Http(conn) | Access::Amqp(conn) | Access::Kafka(conn) => {
                let connection = self.env.connection(conn)?;
                if self.env.adapter_for(connection).as_deref() != Some(name.as_str()) {
                    return Err(WitError::Denied(format!(
                        "adapter `{name}` may only reach the connections it serves; `{conn}` \
                         is a `{}` connection",
                        connection.kind
                    )));
                }
                self.granted_connection(conn)?;
            }
            Access::Scaler(scaler) => {
                if !self.env.scalers.contains_key(scaler) {
                    return Err(WitError::NotFound(format!(
                        "no scaler named `{scaler}` is configured"
                    )));
                }
                if !plugin.grant.allows_scaler(scaler) {
                    return Err(WitError::Denied(format!(
                        "plugin `{name}` is not granted scaler `{scaler}`; add it to \
                         plugins.{name}.scalers in {}",
                        self.env.config_path.display()
                    )));
                }
            }
            Access::State => {}
        }
        Ok(())
    }

    fn granted_connection(&self, conn: &str) -> Result<(), WitError> {
        if self.plugin.grant.allows_connection(conn) {
            return Ok(());
        }
        let name = &self.plugin.manifest.name;
        Err(WitError::Denied(format!(
            "plugin `{name}` is not granted connection `{conn}`; add it to \
             plugins.{name}.connections in {}",
            self.env.config_path.display()
        )))
    }

    /// Time left before the call's deadline.
    pub(crate) fn remaining(&self) -> std::time::Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::action::qmedic::plugin::types::Host for HostState {}

/// Add the WASI interfaces a Rust guest imports even when it does no I/O: streams, clocks,
/// random, stdio and environment. Filesystem and sockets are never linked, so a plugin that
/// imports them fails to load with a message naming the import.
pub(crate) fn add_wasi(
    linker: &mut wasmtime::component::Linker<HostState>,
) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::p2::bindings::{cli, random};
    use wasmtime_wasi::random::WasiRandom;

    wasmtime_wasi::p2::add_to_linker_proxy_interfaces_async(linker)?;
    let l = linker;
    random::insecure::add_to_linker::<HostState, WasiRandom>(l, |s| s.wasi.random())?;
    random::insecure_seed::add_to_linker::<HostState, WasiRandom>(l, |s| s.wasi.random())?;
    cli::exit::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::environment::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_input::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_output::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    Ok(())
}

/// Build the linkers for both worlds.
pub(crate) fn linkers(
    engine: &wasmtime::Engine,
) -> wasmtime::Result<(
    wasmtime::component::Linker<HostState>,
    wasmtime::component::Linker<HostState>,
)> {
    use wasmtime::component::{HasSelf, Linker};

    let mut action = Linker::new(engine);
    add_wasi(&mut action)?;
    bindings::action::Action::add_to_linker::<HostState, HasSelf<HostState>>(&mut action, |s| s)?;
    let mut adapter = Linker::new(engine);
    add_wasi(&mut adapter)?;
    bindings::adapter::Adapter::add_to_linker::<HostState, HasSelf<HostState>>(
        &mut adapter,
        |s| s,
    )?;
    Ok((action, adapter))
}
