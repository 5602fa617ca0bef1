//! The sandbox: one wasmtime engine, the loaded plugins, and calls into them.

pub(crate) mod cache;
pub(crate) mod call;
mod engine;
mod limits;
mod plugin;
mod state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

pub use call::{Call, CallError, PluginFailure, QueueStats};
pub(crate) use limits::Limiter;
pub use plugin::{Grant, Origin, Plugin, PluginInfo};
pub(crate) use state::StateStore;

use crate::config::{Config, ConnectionConfig, Limits};
use crate::connections::{Connection, Scaler};
use crate::host::bindings::{action::ActionPre, adapter::AdapterPre};
use crate::host::{HostState, WitError};
use crate::location::{Located, Location};
use crate::manifest::{Manifest, PluginKind};
use cache::ComponentCache;
use plugin::Prepared;

/// Why the agent could not start its sandbox or load a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The sandbox could not start, or the plugin registry is unusable.
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
    /// A plugin's `.wasm` or `plugin.toml` could not be read.
    #[error("cannot read plugin {path}: {source}")]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// Why reading it failed.
        source: std::io::Error,
    },
    /// A `plugin.toml` is malformed or asks for what its kind may not have.
    #[error(transparent)]
    Manifest(#[from] Located),
    /// A plugin file does not match its sha256 pin; it is not loaded.
    #[error(
        "plugin `{plugin}` ({path}) has sha256 {actual}, but {config} pins {pinned}; refusing to \
         load it. If the new file is trusted, update plugins.{plugin}.sha256"
    )]
    PinMismatch {
        /// The plugin's name.
        plugin: String,
        /// The `.wasm` that was read.
        path: PathBuf,
        /// Hex sha256 of the file as it is now.
        actual: String,
        /// Hex sha256 the config expects.
        pinned: String,
        /// The config file that holds the pin.
        config: PathBuf,
    },
    /// The `.wasm` is not a component wasmtime can compile.
    #[error("plugin `{plugin}` cannot be compiled: {detail}")]
    Compile {
        /// The plugin's name.
        plugin: String,
        /// The compiler's error.
        detail: String,
    },
    /// The plugin imports something the host does not offer, such as filesystem or sockets.
    #[error(
        "plugin `{plugin}` cannot be linked: {detail}. Plugins may only import the qmedic host \
         API and WASI streams, clocks, random and stdio; filesystem and sockets are not available"
    )]
    Link {
        /// The plugin's name.
        plugin: String,
        /// The linker's error, naming the missing import.
        detail: String,
    },
    /// The component's exports do not match the kind its `plugin.toml` declares.
    #[error(
        "plugin `{plugin}` says it is an {kind} in its plugin.toml, but its component does not match: {detail}"
    )]
    Exports {
        /// The plugin's name.
        plugin: String,
        /// The kind its `plugin.toml` declares.
        kind: PluginKind,
        /// What is missing or does not match.
        detail: String,
    },
    /// A plugin entry or connection in the config is wrong.
    #[error("{location}: {message}")]
    Config {
        /// Where in the config.
        location: Location,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// `reload` named a plugin that is not loaded.
    #[error("no plugin named `{name}` is loaded; `qmedic plugin list` shows the loaded ones")]
    NotLoaded {
        /// The name asked for.
        name: String,
    },
    /// A configured connection could not be set up.
    #[error("connection `{conn}`: {message}")]
    Connection {
        /// The connection's name.
        conn: String,
        /// Why it could not be set up.
        message: String,
    },
}

/// What host calls need: the engine, connections, scalers, state and the plugin registry.
pub(crate) struct Env {
    pub(crate) engine: Engine,
    pub(crate) connections: BTreeMap<String, Connection>,
    pub(crate) scalers: BTreeMap<String, Scaler>,
    pub(crate) state: StateStore,
    pub(crate) config_path: PathBuf,
    pub(crate) quarantine_after: u32,
    plugins: RwLock<BTreeMap<String, Arc<Plugin>>>,
}

impl Env {
    /// A configured connection, or `not-found` naming the nearest configured one.
    pub(crate) fn connection(&self, name: &str) -> Result<&Connection, WitError> {
        self.connections.get(name).ok_or_else(|| {
            WitError::NotFound(format!(
                "no connection named `{name}` is configured in {}{}",
                self.config_path.display(),
                crate::config::suggest(name, self.connections.keys())
            ))
        })
    }

    /// The adapter plugin that serves `conn`: the one the connection names, else the one whose
    /// manifest declares the connection's kind.
    pub(crate) fn adapter_for(&self, connection: &Connection) -> Option<String> {
        if let Some(name) = &connection.adapter {
            return Some(name.clone());
        }
        let plugins = self.plugins.read().ok()?;
        plugins
            .values()
            .find(|p| p.manifest.broker.as_deref() == Some(connection.kind.as_str()))
            .map(|p| p.manifest.name.clone())
    }

    pub(crate) fn plugin(&self, name: &str) -> Result<Arc<Plugin>, CallError> {
        let plugins = self.plugins.read().map_err(|_| CallError::NotFound {
            name: name.to_string(),
            suggestion: " (plugin registry is unusable after a panic)".into(),
        })?;
        plugins
            .get(name)
            .cloned()
            .ok_or_else(|| CallError::NotFound {
                name: name.to_string(),
                suggestion: crate::config::suggest(name, plugins.keys()),
            })
    }
}

/// The agent's sandbox: load plugins once, call them many times, from many tasks at once.
#[derive(Clone)]
pub struct Runtime {
    env: Arc<Env>,
    loader: Arc<Loader>,
    _ticker: Arc<engine::EpochTicker>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("plugins", &self.plugins().len())
            .finish_non_exhaustive()
    }
}

/// What loading needs beyond [`Env`]: linkers, cache and the config's plugin entries.
struct Loader {
    action_linker: Linker<HostState>,
    adapter_linker: Linker<HostState>,
    cache: ComponentCache,
    config: Config,
    defaults: Limits,
}

impl Runtime {
    /// Start the engine and load the built-in plugins and those the config names.
    pub fn new(config: &Config) -> Result<Runtime, LoadError> {
        let defaults = config.runtime.limits;
        let max_memory = config
            .plugins
            .values()
            .filter_map(|p| p.limits.memory)
            .fold(defaults.memory, u64::max);
        let engine = engine::build(&config.runtime, max_memory)
            .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let (action_linker, adapter_linker) =
            crate::host::linkers(&engine).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let connections = config
            .connections
            .iter()
            .map(|(name, c)| Ok((name.clone(), connection(name, c)?)))
            .collect::<Result<_, LoadError>>()?;
        let scalers = config
            .scalers
            .iter()
            .map(|(n, s)| (n.clone(), Scaler::new(s)))
            .collect();
        let env = Arc::new(Env {
            engine: engine.clone(),
            connections,
            scalers,
            state: StateStore::default(),
            config_path: config.path.clone(),
            quarantine_after: config.runtime.quarantine_after.max(1),
            plugins: RwLock::new(BTreeMap::new()),
        });
        let loader = Arc::new(Loader {
            action_linker,
            adapter_linker,
            cache: ComponentCache::new(&engine, &config.cache_dir()),
            config: config.clone(),
            defaults,
        });
        let runtime = Runtime {
            env,
            loader,
            _ticker: Arc::new(engine::EpochTicker::start(&engine)),
        };

        for (name, manifest, wasm) in crate::builtin::PLUGINS {
            let path = PathBuf::from(format!("plugins/{name}/plugin.toml"));
            let manifest = Manifest::parse(manifest, &path)?;
            runtime.install(manifest, wasm, Origin::BuiltIn)?;
        }
        for (name, entry) in &config.plugins {
            match &entry.path {
                Some(path) => {
                    let plugin = runtime.load_file(path)?;
                    if plugin.name() != name {
                        return Err(LoadError::Config {
                            location: config.locate(name),
                            message: format!(
                                "plugins.{name} loads {}, whose plugin.toml names it `{}`; use that \
                                 name as the key",
                                path.display(),
                                plugin.name()
                            ),
                        });
                    }
                }
                None if runtime.env.plugin(name).is_err() => {
                    let known: Vec<String> = crate::builtin::PLUGINS
                        .iter()
                        .map(|p| p.0.to_string())
                        .collect();
                    return Err(LoadError::Config {
                        location: config.locate(name),
                        message: format!(
                            "plugins.{name}: no built-in plugin has that name{}; give `path:` and \
                             `sha256:` to load a third-party plugin",
                            crate::config::suggest(name, &known)
                        ),
                    });
                }
                None => {}
            }
        }
        runtime.check_connections(config)?;
        Ok(runtime)
    }

    /// Every connection has exactly one adapter: the one it names, or the only one serving its
    /// kind. Checked at start, so a missing adapter is not discovered at 3 a.m.
    fn check_connections(&self, config: &Config) -> Result<(), LoadError> {
        let plugins = self.plugins();
        for (name, conn) in &config.connections {
            let fail = |message: String| {
                Err(LoadError::Config {
                    location: config.locate(name),
                    message,
                })
            };
            match &conn.adapter {
                Some(adapter) => match plugins.iter().find(|p| p.name() == adapter) {
                    Some(p) if p.manifest.kind == PluginKind::Adapter => {}
                    Some(_) => {
                        return fail(format!(
                            "connection `{name}` names `{adapter}` as its adapter, but it is an action"
                        ));
                    }
                    None => {
                        let names: Vec<String> =
                            plugins.iter().map(|p| p.name().to_string()).collect();
                        return fail(format!(
                            "connection `{name}` names adapter `{adapter}`, which is not loaded{}",
                            crate::config::suggest(adapter, &names)
                        ));
                    }
                },
                None => {
                    let serving: Vec<&str> = plugins
                        .iter()
                        .filter(|p| p.manifest.broker.as_deref() == Some(conn.kind.as_str()))
                        .map(|p| p.name())
                        .collect();
                    if serving.len() > 1 {
                        return fail(format!(
                            "connection `{name}`: adapters {} all serve kind `{}`; pick one with \
                             connections.{name}.adapter",
                            serving.join(", "),
                            conn.kind
                        ));
                    }
                    if serving.is_empty() {
                        tracing::warn!(
                            "connection `{name}`: no loaded adapter serves kind `{}`; calls on it \
                             will fail until one is loaded",
                            conn.kind
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Load a third-party plugin from its `.wasm`, with the `plugin.toml` beside it, and
    /// register it. If the config has an entry for it, its pin and grants apply; otherwise it
    /// gets no grants.
    pub fn load_file(&self, wasm_path: &Path) -> Result<Arc<Plugin>, LoadError> {
        let wasm = std::fs::read(wasm_path).map_err(|source| LoadError::Read {
            path: wasm_path.to_path_buf(),
            source,
        })?;
        let manifest_path = wasm_path.with_file_name("plugin.toml");
        let text = std::fs::read_to_string(&manifest_path).map_err(|source| LoadError::Read {
            path: manifest_path.clone(),
            source,
        })?;
        let manifest = Manifest::parse(&text, &manifest_path)?;
        if let Some(pinned) = self
            .loader
            .config
            .plugins
            .get(&manifest.name)
            .and_then(|p| p.sha256.as_ref())
        {
            let actual = sha256_hex(&wasm);
            if !actual.eq_ignore_ascii_case(pinned) {
                return Err(LoadError::PinMismatch {
                    plugin: manifest.name.clone(),
                    path: wasm_path.to_path_buf(),
                    actual,
                    pinned: pinned.clone(),
                    config: self.loader.config.path.clone(),
                });
            }
        }
        self.install(manifest, &wasm, Origin::File(wasm_path.to_path_buf()))
    }

    fn install(
        &self,
        manifest: Manifest,
        wasm: &[u8],
        origin: Origin,
    ) -> Result<Arc<Plugin>, LoadError> {
        let name = manifest.name.clone();
        let sha256 = sha256_hex(wasm);
        let entry = self.loader.config.plugins.get(&name);
        // Unset grants default to everything for first-party plugins, nothing for others.
        let default = || {
            if origin == Origin::BuiltIn {
                vec!["*".to_string()]
            } else {
                Vec::new()
            }
        };
        let names = |g: Option<&Vec<serde_saphyr::Spanned<String>>>| {
            g.map(|g| g.iter().map(|s| s.value.clone()).collect())
                .unwrap_or_else(default)
        };
        let grant = Grant {
            connections: names(entry.and_then(|e| e.connections.as_ref())),
            scalers: names(entry.and_then(|e| e.scalers.as_ref())),
        };
        let limits = entry.map_or(self.loader.defaults, |e| {
            self.loader.defaults.with(&e.limits)
        });
        let component = self
            .loader
            .cache
            .load(&self.env.engine, wasm, &sha256)
            .map_err(|e| LoadError::Compile {
                plugin: name.clone(),
                detail: format!("{e:#}"),
            })?;
        let prepared = self.prepare(&manifest, &component)?;
        let plugin = Arc::new(Plugin::new(
            manifest, sha256, origin, grant, limits, prepared,
        ));
        let mut plugins =
            self.env.plugins.write().map_err(|_| {
                LoadError::Engine("plugin registry is unusable after a panic".into())
            })?;
        plugins.insert(name, plugin.clone());
        Ok(plugin)
    }

    fn prepare(&self, manifest: &Manifest, component: &Component) -> Result<Prepared, LoadError> {
        let name = manifest.name.clone();
        let linker = match manifest.kind {
            PluginKind::Action => &self.loader.action_linker,
            PluginKind::Adapter => &self.loader.adapter_linker,
        };
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| LoadError::Link {
                plugin: name.clone(),
                detail: format!("{e:#}"),
            })?;
        let exports = |e: wasmtime::Error| LoadError::Exports {
            plugin: name.clone(),
            kind: manifest.kind,
            detail: format!("{e:#}"),
        };
        Ok(match manifest.kind {
            PluginKind::Action => Prepared::Action(ActionPre::new(pre).map_err(exports)?),
            PluginKind::Adapter => Prepared::Adapter(AdapterPre::new(pre).map_err(exports)?),
        })
    }

    /// Every loaded plugin, by name.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.env
            .plugins
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    /// One loaded plugin.
    pub fn plugin(&self, name: &str) -> Result<Arc<Plugin>, CallError> {
        self.env.plugin(name)
    }

    /// Run an action with JSON parameters and return its JSON report.
    pub async fn call_action(&self, name: &str, params: &str) -> Call {
        match self.env.plugin(name) {
            Ok(plugin) => call::run_action(&self.env, plugin, params, None).await,
            Err(e) => Call {
                outcome: Err(e),
                logs: Vec::new(),
                duration: std::time::Duration::ZERO,
            },
        }
    }

    /// Like [`Runtime::call_action`], telling `progress` how far the plugin says it has got.
    pub async fn call_action_with_progress(
        &self,
        name: &str,
        params: &str,
        progress: crate::host::Progress,
    ) -> Call {
        match self.env.plugin(name) {
            Ok(plugin) => call::run_action(&self.env, plugin, params, Some(progress)).await,
            Err(e) => Call {
                outcome: Err(e),
                logs: Vec::new(),
                duration: std::time::Duration::ZERO,
            },
        }
    }

    /// A queue's stats from the adapter serving `connection`.
    pub async fn stats(&self, connection: &str, queue: &str) -> Result<QueueStats, CallError> {
        call::adapter_stats(&self.env, connection, queue).await
    }

    /// Queue names matching a glob, from the adapter serving `connection`.
    pub async fn list(&self, connection: &str, pattern: &str) -> Result<Vec<String>, CallError> {
        call::adapter_list(&self.env, connection, pattern).await
    }

    /// Load a plugin again from where it came from, ending its quarantine.
    pub fn reload(&self, name: &str) -> Result<Arc<Plugin>, LoadError> {
        let plugin = self.env.plugin(name).map_err(|_| LoadError::NotLoaded {
            name: name.to_string(),
        })?;
        match &plugin.origin {
            Origin::File(path) => self.load_file(path),
            Origin::BuiltIn => {
                let (_, manifest, wasm) = crate::builtin::PLUGINS
                    .iter()
                    .find(|p| p.0 == name)
                    .ok_or_else(|| {
                        LoadError::Engine(format!("built-in plugin `{name}` is missing"))
                    })?;
                let manifest = Manifest::parse(manifest, Path::new("plugin.toml"))?;
                self.install(manifest, wasm, Origin::BuiltIn)
            }
        }
    }
}

fn connection(name: &str, config: &ConnectionConfig) -> Result<Connection, LoadError> {
    Connection::new(config).map_err(|message| LoadError::Connection {
        conn: name.to_string(),
        message,
    })
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
