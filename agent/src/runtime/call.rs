//! One call into a plugin: its store, its deadline, and what went wrong in words an operator can
//! act on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmtime::{Store, Trap, UpdateDeadline};

use super::limits::LimitHit;
use super::{Env, Plugin};
use crate::host::{HostState, LogLine, Progress, WitError};
use crate::manifest::PluginKind;

/// How long past its deadline a call may take before its future is dropped: the epoch check
/// normally ends it first; this catches a host call that blocks.
const GRACE: Duration = Duration::from_millis(250);

/// Why a plugin call failed. Every variant names the plugin and, for sandbox failures, the
/// limit it hit and how to raise it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// No loaded plugin has that name.
    #[error(
        "no plugin named `{name}` is loaded{suggestion}; `qmedic plugin list` shows the loaded ones"
    )]
    NotFound {
        /// The name that was asked for.
        name: String,
        /// `; did you mean ...?` when a loaded name is close, else empty.
        suggestion: String,
    },
    /// An adapter was called as an action, or the reverse.
    #[error("plugin `{plugin}` is an {is}, not an {wanted}")]
    WrongKind {
        /// The plugin's name.
        plugin: String,
        /// What the plugin is.
        is: PluginKind,
        /// What the caller needed.
        wanted: PluginKind,
    },
    /// Too many sandbox failures in a row; calls are refused until it is reloaded.
    #[error(
        "plugin `{plugin}` is quarantined after repeated failures (last: {last}); fix it and \
         reload it, or restart the agent"
    )]
    Quarantined {
        /// The plugin's name.
        plugin: String,
        /// The failure that quarantined it.
        last: String,
    },
    /// The call ran past its deadline and was stopped.
    #[error(
        "plugin `{plugin}` ran past its deadline of {limit:?} and was stopped; if it needs \
         longer, raise plugins.{plugin}.limits.timeout"
    )]
    Timeout {
        /// The plugin's name.
        plugin: String,
        /// The deadline it ran past.
        limit: Duration,
    },
    /// The plugin tried to grow its memory past its cap and was stopped.
    #[error(
        "plugin `{plugin}` tried to grow its memory to {desired} bytes, past its memory cap of \
         {limit} bytes, and was stopped; if it needs more, raise plugins.{plugin}.limits.memory"
    )]
    Memory {
        /// The plugin's name.
        plugin: String,
        /// The size in bytes it asked for.
        desired: u64,
        /// Its memory cap in bytes.
        limit: u64,
    },
    /// The plugin overflowed its stack and was stopped.
    #[error("plugin `{plugin}` overflowed its stack (unbounded recursion?) and was stopped")]
    StackOverflow {
        /// The plugin's name.
        plugin: String,
    },
    /// The plugin returned more than its output cap; the result was discarded.
    #[error(
        "plugin `{plugin}` returned {size} bytes, past its output cap of {limit} bytes; the \
         result was discarded (raise plugins.{plugin}.limits.output if it is legitimate)"
    )]
    Output {
        /// The plugin's name.
        plugin: String,
        /// How many bytes it returned.
        size: u64,
        /// Its output cap in bytes.
        limit: u64,
    },
    /// The plugin panicked or aborted.
    #[error("plugin `{plugin}` panicked: {message}")]
    Panic {
        /// The plugin's name.
        plugin: String,
        /// What it printed when it panicked, or a plain description.
        message: String,
    },
    /// The plugin trapped for another reason, or the host could not run it.
    #[error("plugin `{plugin}` trapped: {detail}")]
    Trap {
        /// The plugin's name.
        plugin: String,
        /// The trap as wasmtime describes it.
        detail: String,
    },
    /// The plugin ran and returned an error itself; this does not count towards quarantine.
    #[error("plugin `{plugin}` failed: {error}")]
    Plugin {
        /// The plugin's name.
        plugin: String,
        /// The error it returned.
        error: PluginFailure,
    },
    /// Every instance slot is in use; the call never started.
    #[error(
        "plugin `{plugin}` could not start: the agent already runs {detail}; retry later or \
         raise runtime.max_instances"
    )]
    Busy {
        /// The plugin's name.
        plugin: String,
        /// The instance pool's error.
        detail: String,
    },
}

/// An error a plugin returned on purpose, as the WIT `error` variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "kebab-case")]
pub enum PluginFailure {
    /// The queue, message or other object it acted on does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The agent's config does not grant what was asked for.
    #[error("denied: {0}")]
    Denied(String),
    /// The broker or backend could not be reached; retrying later may work.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request itself is wrong; retrying will not help.
    #[error("invalid: {0}")]
    Invalid(String),
    /// Something unexpected inside the plugin or host; worth a bug report.
    #[error("internal: {0}")]
    Internal(String),
}

impl PluginFailure {
    /// The WIT name of the error's kind: `not-found`, `denied`, `unavailable`, `invalid`,
    /// `internal`.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginFailure::NotFound(_) => "not-found",
            PluginFailure::Denied(_) => "denied",
            PluginFailure::Unavailable(_) => "unavailable",
            PluginFailure::Invalid(_) => "invalid",
            PluginFailure::Internal(_) => "internal",
        }
    }

    /// What the plugin said.
    pub fn message(&self) -> &str {
        match self {
            PluginFailure::NotFound(m)
            | PluginFailure::Denied(m)
            | PluginFailure::Unavailable(m)
            | PluginFailure::Invalid(m)
            | PluginFailure::Internal(m) => m,
        }
    }
}

impl From<WitError> for PluginFailure {
    fn from(e: WitError) -> Self {
        match e {
            WitError::NotFound(m) => PluginFailure::NotFound(m),
            WitError::Denied(m) => PluginFailure::Denied(m),
            WitError::Unavailable(m) => PluginFailure::Unavailable(m),
            WitError::Invalid(m) => PluginFailure::Invalid(m),
            WitError::Internal(m) => PluginFailure::Internal(m),
        }
    }
}

impl CallError {
    /// Whether the sandbox stopped the plugin (as opposed to the plugin reporting an error or
    /// the call being refused before it started). Only these count towards quarantine.
    pub fn is_sandbox_failure(&self) -> bool {
        matches!(
            self,
            CallError::Timeout { .. }
                | CallError::Memory { .. }
                | CallError::StackOverflow { .. }
                | CallError::Output { .. }
                | CallError::Panic { .. }
                | CallError::Trap { .. }
        )
    }

    /// The plugin the call was for.
    pub fn plugin(&self) -> &str {
        match self {
            CallError::NotFound { name, .. } => name,
            CallError::WrongKind { plugin, .. }
            | CallError::Quarantined { plugin, .. }
            | CallError::Timeout { plugin, .. }
            | CallError::Memory { plugin, .. }
            | CallError::StackOverflow { plugin }
            | CallError::Output { plugin, .. }
            | CallError::Panic { plugin, .. }
            | CallError::Trap { plugin, .. }
            | CallError::Plugin { plugin, .. }
            | CallError::Busy { plugin, .. } => plugin,
        }
    }

    /// One word for metrics: the limit hit, or the plugin's own error kind.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::NotFound { .. } => "not-found",
            CallError::WrongKind { .. } => "wrong-kind",
            CallError::Quarantined { .. } => "quarantined",
            CallError::Timeout { .. } => "timeout",
            CallError::Memory { .. } => "memory",
            CallError::StackOverflow { .. } => "stack",
            CallError::Output { .. } => "output",
            CallError::Panic { .. } => "panic",
            CallError::Trap { .. } => "trap",
            CallError::Plugin { error, .. } => error.kind(),
            CallError::Busy { .. } => "busy",
        }
    }

    /// Whether the caller's input or request was at fault (exit code 2 in the CLI).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            CallError::NotFound { .. } | CallError::WrongKind { .. }
        )
    }
}

/// The result of one action call, with what the plugin logged along the way.
#[derive(Debug)]
pub struct Call {
    /// The action's JSON report, or why the call failed.
    pub outcome: Result<String, CallError>,
    /// Lines the plugin logged, then what it printed to stdout.
    pub logs: Vec<LogLine>,
    /// Wall-clock time of the call, instantiation included.
    pub duration: Duration,
}

/// A store for one instance of `plugin`, with its limits and deadline armed.
pub(crate) fn new_store(
    env: &Arc<Env>,
    plugin: Arc<Plugin>,
    deadline: Instant,
) -> Store<HostState> {
    let mut store = Store::new(&env.engine, HostState::new(plugin, env.clone(), deadline));
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        let state = ctx.data_mut();
        if Instant::now() >= state.deadline {
            state.limiter.hit = Some(LimitHit::Deadline);
            return Err(wasmtime::Error::new(LimitHit::Deadline));
        }
        // Yield at every tick so a busy plugin never holds an executor thread.
        Ok(UpdateDeadline::Yield(1))
    });
    store
}

/// Turn a trap or host error into a [`CallError`] naming the plugin and the limit it hit.
pub(crate) fn classify(plugin: &Plugin, err: wasmtime::Error, state: &HostState) -> CallError {
    let name = plugin.manifest.name.clone();
    if let Some(pool) = err.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return CallError::Busy {
            plugin: name,
            detail: pool.to_string(),
        };
    }
    let limit = state
        .limiter
        .hit
        .or_else(|| err.downcast_ref::<LimitHit>().copied());
    match limit {
        Some(LimitHit::Memory { desired }) => {
            return CallError::Memory {
                plugin: name,
                desired,
                limit: plugin.limits.memory,
            };
        }
        Some(LimitHit::Deadline) => {
            return CallError::Timeout {
                plugin: name,
                limit: plugin.limits.timeout,
            };
        }
        Some(LimitHit::Table { desired }) => {
            return CallError::Trap {
                plugin: name,
                detail: format!("table grew to {desired} elements, past its cap"),
            };
        }
        None => {}
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => CallError::StackOverflow { plugin: name },
        Some(Trap::Interrupt) => CallError::Timeout {
            plugin: name,
            limit: plugin.limits.timeout,
        },
        Some(Trap::UnreachableCodeReached) => CallError::Panic {
            plugin: name,
            message: panic_message(state),
        },
        Some(trap) => CallError::Trap {
            plugin: name,
            detail: trap.to_string(),
        },
        None => CallError::Trap {
            plugin: name,
            detail: format!("{err:#}"),
        },
    }
}

/// What a Rust guest printed when it panicked, or a plain description.
fn panic_message(state: &HostState) -> String {
    let stderr = state.stderr.contents();
    let text = String::from_utf8_lossy(&stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.iter().position(|l| l.contains("panicked at")) {
        Some(i) => lines[i..]
            .iter()
            .take(3)
            .copied()
            .collect::<Vec<_>>()
            .join(" "),
        None if !lines.is_empty() => lines[lines.len().saturating_sub(3)..].join(" "),
        None => "it reached an unreachable instruction (a Rust panic or abort)".into(),
    }
}

/// Run an action's `run` export with JSON `params`.
pub(crate) async fn run_action(
    env: &Arc<Env>,
    plugin: Arc<Plugin>,
    params: &str,
    progress: Option<Progress>,
) -> Call {
    let started = Instant::now();
    let limits = plugin.limits;
    let mut store = new_store(env, plugin.clone(), started + limits.timeout);
    store.data_mut().progress = progress;
    let outcome = match (plugin.ensure_runnable(), plugin.action_pre()) {
        (Err(e), _) | (_, Err(e)) => Err(e),
        (Ok(()), Ok(pre)) => {
            let call = async {
                let instance = pre.instantiate_async(&mut store).await?;
                instance.call_run(&mut store, params).await
            };
            match tokio::time::timeout(limits.timeout + GRACE, call).await {
                Err(_elapsed) => Err(CallError::Timeout {
                    plugin: plugin.manifest.name.clone(),
                    limit: limits.timeout,
                }),
                Ok(Err(trap)) => Err(classify(&plugin, trap, store.data())),
                Ok(Ok(Err(returned))) => Err(CallError::Plugin {
                    plugin: plugin.manifest.name.clone(),
                    error: returned.into(),
                }),
                Ok(Ok(Ok(report))) if report.len() as u64 > limits.output => {
                    Err(CallError::Output {
                        plugin: plugin.manifest.name.clone(),
                        size: report.len() as u64,
                        limit: limits.output,
                    })
                }
                Ok(Ok(Ok(report))) => Ok(report),
            }
        }
    };
    match &outcome {
        Ok(_) => plugin.record_success(),
        Err(e) => plugin.record_failure(e, env.quarantine_after),
    }
    let state = store.data_mut();
    let stdout = state.stdout.contents();
    for line in String::from_utf8_lossy(&stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        state.push_log("info", line.to_string());
    }
    Call {
        outcome,
        logs: std::mem::take(&mut state.logs),
        duration: started.elapsed(),
    }
}

/// Health of one queue, as an adapter reports it (the WIT `queue-stats`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueStats {
    /// Messages waiting (for Kafka: total lag).
    pub depth: u64,
    /// Delivered, not yet settled.
    pub in_flight: u64,
    /// Consumers attached, where known.
    pub consumers: Option<u32>,
    /// Age of the oldest waiting message, where known.
    pub oldest_age_ms: Option<u64>,
    /// Messages per second published, where known.
    pub publish_rate: Option<f64>,
    /// Messages per second acknowledged, where known.
    pub ack_rate: Option<f64>,
    /// Redeliveries, where known.
    pub redelivered: Option<u64>,
    /// Where the queue dead-letters to, where known.
    pub dead_letter: Option<String>,
    /// The adapter's verdict on the queue's trend (Kafka: `OK`, `WARN`, `STALL`, `STOP`,
    /// `REWIND`), where it judges one.
    pub trend: Option<String>,
    /// Adapter-specific figures.
    pub extra: Vec<(String, f64)>,
}

impl From<crate::host::bindings::QueueStats> for QueueStats {
    fn from(s: crate::host::bindings::QueueStats) -> Self {
        QueueStats {
            depth: s.depth,
            in_flight: s.in_flight,
            consumers: s.consumers,
            oldest_age_ms: s.oldest_age_ms,
            publish_rate: s.publish_rate,
            ack_rate: s.ack_rate,
            redelivered: s.redelivered,
            dead_letter: s.dead_letter,
            trend: s.trend,
            extra: s.extra,
        }
    }
}

/// A read an adapter answers directly for the CLI and the playbook built-ins.
enum Query<'a> {
    Stats(&'a str),
    List(&'a str),
}

enum Answer {
    Stats(QueueStats),
    List(Vec<String>),
}

/// A queue's stats from the adapter serving `conn`.
pub(crate) async fn adapter_stats(
    env: &Arc<Env>,
    conn: &str,
    queue: &str,
) -> Result<QueueStats, CallError> {
    match adapter_query(env, conn, Query::Stats(queue)).await? {
        Answer::Stats(stats) => Ok(stats),
        Answer::List(_) => Err(mismatch("stats")),
    }
}

/// Queue names matching `pattern` from the adapter serving `conn`.
pub(crate) async fn adapter_list(
    env: &Arc<Env>,
    conn: &str,
    pattern: &str,
) -> Result<Vec<String>, CallError> {
    match adapter_query(env, conn, Query::List(pattern)).await? {
        Answer::List(names) => Ok(names),
        Answer::Stats(_) => Err(mismatch("list")),
    }
}

fn mismatch(query: &str) -> CallError {
    CallError::Plugin {
        plugin: "qmedic".into(),
        error: PluginFailure::Internal(format!("a {query} query got another query's answer")),
    }
}

async fn adapter_query(env: &Arc<Env>, conn: &str, query: Query<'_>) -> Result<Answer, CallError> {
    let not_found = |msg: String| CallError::Plugin {
        plugin: "qmedic".into(),
        error: PluginFailure::NotFound(msg),
    };
    let connection = env
        .connection(conn)
        .map_err(|e| not_found(PluginFailure::from(e).message().to_string()))?;
    let adapter = env.adapter_for(connection).ok_or_else(|| {
        not_found(format!(
            "no adapter plugin serves connection kind `{}` (connection `{conn}`)",
            connection.kind
        ))
    })?;
    let plugin = env.plugin(&adapter)?;
    plugin.ensure_runnable()?;
    let pre = plugin.adapter_pre()?;
    let limits = plugin.limits;
    let mut store = new_store(env, plugin.clone(), Instant::now() + limits.timeout);
    let call = async {
        let instance = pre.instantiate_async(&mut store).await?;
        let broker = instance.qmedic_plugin_broker();
        Ok::<_, wasmtime::Error>(match query {
            Query::Stats(queue) => broker
                .call_stats(&mut store, conn, queue)
                .await?
                .map(|s| Answer::Stats(QueueStats::from(s))),
            Query::List(pattern) => broker
                .call_list(&mut store, conn, pattern)
                .await?
                .map(Answer::List),
        })
    };
    let outcome = match tokio::time::timeout(limits.timeout + GRACE, call).await {
        Err(_) => Err(CallError::Timeout {
            plugin: adapter.clone(),
            limit: limits.timeout,
        }),
        Ok(Err(trap)) => Err(classify(&plugin, trap, store.data())),
        Ok(Ok(Err(returned))) => Err(CallError::Plugin {
            plugin: adapter.clone(),
            error: returned.into(),
        }),
        Ok(Ok(Ok(answer))) => Ok(answer),
    };
    match &outcome {
        Ok(_) => plugin.record_success(),
        Err(e) => plugin.record_failure(e, env.quarantine_after),
    }
    outcome
}
