//! A loaded plugin: its manifest, digest, grants, limits, prepared instance and health.

use std::path::PathBuf;
use std::sync::Mutex;

use serde::Serialize;

use super::CallError;
use crate::config::Limits;
use crate::host::HostState;
use crate::host::bindings::{action::ActionPre, adapter::AdapterPre};
use crate::manifest::{Capability, Manifest, PluginKind};

/// Where a plugin came from.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Shipped inside the agent binary.
    BuiltIn,
    /// A `.wasm` file named in the config or on the command line.
    File(PathBuf),
}

/// What the config lets a plugin reach. `*` grants every configured object.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Grant {
    /// Connection names the plugin may use, or `*`.
    pub connections: Vec<String>,
    /// Scaler names the plugin may use, or `*`.
    pub scalers: Vec<String>,
}

impl Grant {
    /// Whether the plugin may use connection `name`.
    pub fn allows_connection(&self, name: &str) -> bool {
        self.connections.iter().any(|g| g == "*" || g == name)
    }

    /// Whether the plugin may use scaler `name`.
    pub fn allows_scaler(&self, name: &str) -> bool {
        self.scalers.iter().any(|g| g == "*" || g == name)
    }
}

pub(crate) enum Prepared {
    Action(ActionPre<HostState>),
    Adapter(AdapterPre<HostState>),
}

#[derive(Debug, Default)]
struct Health {
    /// Sandbox failures in a row (traps, deadlines, memory, output).
    failures: u32,
    /// Why the plugin is quarantined, when it is.
    quarantined: Option<String>,
}

/// A plugin ready to instantiate.
pub struct Plugin {
    /// Its `plugin.toml`.
    pub manifest: Manifest,
    /// Hex sha256 of the `.wasm`.
    pub sha256: String,
    /// Where it was loaded from, and so where a reload reads it again.
    pub origin: Origin,
    /// The connections and scalers the config lets it reach.
    pub grant: Grant,
    /// Limits of each call: the config's defaults with this plugin's overrides.
    pub limits: Limits,
    pub(crate) prepared: Prepared,
    health: Mutex<Health>,
}

/// What `qmedic plugin list` and `inspect` show.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    /// The plugin's name.
    pub name: String,
    /// Action or adapter.
    pub kind: PluginKind,
    /// The plugin's own version.
    pub version: String,
    /// The `qmedic:plugin` WIT version it was built against.
    pub wit: String,
    /// One line from its `plugin.toml`.
    pub description: String,
    /// Adapters only: the connection kind it serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// Hex sha256 of its `.wasm`, the value to pin in the config.
    pub sha256: String,
    /// Host interfaces its manifest asks for.
    pub capabilities: Vec<Capability>,
    /// Built in, or the file it was loaded from.
    pub origin: Origin,
    /// The connections and scalers the config lets it reach.
    pub grant: Grant,
    /// Deadline of one call, in milliseconds.
    pub timeout_ms: u64,
    /// Memory cap, in bytes.
    pub memory_bytes: u64,
    /// Output cap, in bytes.
    pub output_bytes: u64,
    /// Why it is quarantined, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<String>,
}

impl Plugin {
    pub(crate) fn new(
        manifest: Manifest,
        sha256: String,
        origin: Origin,
        grant: Grant,
        limits: Limits,
        prepared: Prepared,
    ) -> Self {
        Plugin {
            manifest,
            sha256,
            origin,
            grant,
            limits,
            prepared,
            health: Mutex::default(),
        }
    }

    /// The name configs and playbooks use for it.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// What `qmedic plugin list` and `inspect` show for it.
    pub fn info(&self) -> PluginInfo {
        let m = &self.manifest;
        PluginInfo {
            name: m.name.clone(),
            kind: m.kind,
            version: m.version.clone(),
            wit: m.wit.clone(),
            description: m.description.clone(),
            broker: m.broker.clone(),
            sha256: self.sha256.clone(),
            capabilities: m.capabilities.clone(),
            origin: self.origin.clone(),
            grant: self.grant.clone(),
            timeout_ms: u64::try_from(self.limits.timeout.as_millis()).unwrap_or(u64::MAX),
            memory_bytes: self.limits.memory,
            output_bytes: self.limits.output,
            quarantined: self.quarantined(),
        }
    }

    /// Why it is quarantined, if it is; a reload ends the quarantine.
    pub fn quarantined(&self) -> Option<String> {
        self.health.lock().ok().and_then(|h| h.quarantined.clone())
    }

    /// Refuse to run a quarantined plugin.
    pub(crate) fn ensure_runnable(&self) -> Result<(), CallError> {
        match self.quarantined() {
            Some(last) => Err(CallError::Quarantined {
                plugin: self.manifest.name.clone(),
                last,
            }),
            None => Ok(()),
        }
    }

    pub(crate) fn action_pre(&self) -> Result<&ActionPre<HostState>, CallError> {
        match &self.prepared {
            Prepared::Action(pre) => Ok(pre),
            Prepared::Adapter(_) => Err(self.wrong_kind(PluginKind::Action)),
        }
    }

    pub(crate) fn adapter_pre(&self) -> Result<&AdapterPre<HostState>, CallError> {
        match &self.prepared {
            Prepared::Adapter(pre) => Ok(pre),
            Prepared::Action(_) => Err(self.wrong_kind(PluginKind::Adapter)),
        }
    }

    fn wrong_kind(&self, wanted: PluginKind) -> CallError {
        CallError::WrongKind {
            plugin: self.manifest.name.clone(),
            is: self.manifest.kind,
            wanted,
        }
    }

    pub(crate) fn record_success(&self) {
        if let Ok(mut h) = self.health.lock() {
            h.failures = 0;
        }
    }

    /// Count a sandbox failure; quarantine after `threshold` in a row. Errors the plugin
    /// returned itself do not count: they mean the sandbox works.
    pub(crate) fn record_failure(&self, error: &CallError, threshold: u32) {
        if !error.is_sandbox_failure() {
            return;
        }
        if let Ok(mut h) = self.health.lock() {
            h.failures += 1;
            if h.failures >= threshold && h.quarantined.is_none() {
                tracing::error!(plugin = %self.manifest.name, failures = h.failures, "plugin quarantined: {error}");
                h.quarantined = Some(error.to_string());
            }
        }
    }
}
