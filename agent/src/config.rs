//! `qmedic.yaml`: connections, scalers, plugin grants and pins, store, listen address.
//!
//! Strings may use `${VAR}` (or `${VAR:-default}`) to read the environment; `$${` is a literal
//! `${`. Secrets can live in files: `password_file` and `token_file` name a file whose content
//! (without its trailing newline) is the secret. Every error points at `file:line:column`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_saphyr::{DefaultMessageFormatter, MessageFormatter, Spanned};

use crate::location::{Located, Location, Problem};

/// The agent's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address `qmedic serve` listens on for `/healthz`, `/metrics`, `/api`, hooks and ChatOps.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Where runs, the audit log, cooldowns and leases live: a SQLite file path (created on
    /// first use) or a `postgres://` URL shared by a fleet of agents.
    #[serde(default = "default_store")]
    pub store: String,
    /// This agent's name in run records, the audit log and leases. Agents sharing one store
    /// need distinct names. Default: the host name.
    #[serde(default)]
    pub agent: Option<String>,
    /// Playbook files, or folders of `*.yaml` / `*.yml` playbooks, relative to this file.
    /// Default: the folder `playbooks` beside this file, when there is one.
    #[serde(default)]
    pub playbooks: Option<Vec<PathBuf>>,
    /// Sandbox settings shared by every plugin.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Brokers and HTTP endpoints, by the name playbooks and plugins use.
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionConfig>,
    /// Backends that change consumer replica counts, by name.
    #[serde(default)]
    pub scalers: BTreeMap<String, ScalerConfig>,
    /// Grants, limits and pins per plugin. First-party plugins need no entry unless their
    /// defaults are to be narrowed; third-party plugins are loaded only from here.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginConfig>,
    /// The file this was read from, for error messages.
    #[serde(skip)]
    pub path: PathBuf,
    /// The expanded text, to point later checks at the right line.
    #[serde(skip)]
    pub(crate) text: String,
}

/// Sandbox settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Where compiled plugins are cached. Default: `$XDG_CACHE_HOME/qmedic` or `~/.cache/qmedic`.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Most plugin instances alive at once (actions and the adapters they call); sizes the
    /// instance pool.
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
    /// Consecutive sandbox failures (trap, deadline, memory, output) after which a plugin is
    /// quarantined until it is reloaded.
    #[serde(default = "default_quarantine_after")]
    pub quarantine_after: u32,
    /// Default limits for every call; a plugin's entry may override them.
    #[serde(default)]
    pub limits: Limits,
}

/// Per-call sandbox limits.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock deadline of one call, including the host calls it makes (`30s`, `500ms`).
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Linear memory cap (`64MiB`).
    #[serde(default = "default_memory", deserialize_with = "de_bytes")]
    pub memory: u64,
    /// Most bytes a call may return (`4MiB`).
    #[serde(default = "default_output", deserialize_with = "de_bytes")]
    pub output: u64,
}

/// Overrides of [`Limits`] for one plugin.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// Replaces `runtime.limits.timeout` for this plugin.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub timeout: Option<Duration>,
    /// Replaces `runtime.limits.memory` for this plugin.
    #[serde(default, deserialize_with = "de_opt_bytes")]
    pub memory: Option<u64>,
    /// Replaces `runtime.limits.output` for this plugin.
    #[serde(default, deserialize_with = "de_opt_bytes")]
    pub output: Option<u64>,
}

impl Limits {
    /// These limits with a plugin's overrides applied; unset overrides keep the default.
    pub fn with(self, o: &LimitOverrides) -> Limits {
        Limits {
            timeout: o.timeout.unwrap_or(self.timeout),
            memory: o.memory.unwrap_or(self.memory),
            output: o.output.unwrap_or(self.output),
        }
    }
}

/// One broker or endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Which adapter serves it: the `broker` its adapter's manifest names (`rabbitmq`, `kafka`).
    pub kind: String,
    /// The broker's own address (`amqp://host:5672/%2f`, `kafka://host:9092`).
    #[serde(default)]
    pub url: Option<String>,
    /// Base URL of the broker's HTTP API (e.g. RabbitMQ management), the only place the `http`
    /// interface can reach for this connection. Defaults to `url` when that is http(s).
    #[serde(default)]
    pub http_url: Option<String>,
    /// User for basic auth.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for basic auth; prefer `password_file` or `${VAR}` to writing it here.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file holding the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A bearer token, sent instead of basic auth.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the bearer token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Use this adapter plugin instead of the one registered for `kind`.
    #[serde(default)]
    pub adapter: Option<String>,
}

/// A secret: never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    /// The secret itself, to send to a broker; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A scaler backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScalerConfig {
    /// Runs a program (no shell). `{target}` and `{replicas}` in arguments are replaced.
    /// `get` prints the current replica count; `set` changes it and exits 0.
    Command {
        /// Program and arguments that print the current replica count.
        get: Vec<String>,
        /// Program and arguments that set the replica count to `{replicas}`.
        set: Vec<String>,
    },
}

/// Grants, limits and pin of one plugin.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// A third-party plugin's `.wasm`; its `plugin.toml` lies beside it.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Hex sha256 of the `.wasm`. Required with `path`: a file that does not match is refused.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Connections the plugin may use (`*` for all). Default: all for first-party plugins,
    /// none for third-party ones.
    #[serde(default)]
    pub connections: Option<Vec<Spanned<String>>>,
    /// Scalers the plugin may use (`*` for all). Default: all for first-party plugins, none for
    /// third-party ones.
    #[serde(default)]
    pub scalers: Option<Vec<Spanned<String>>>,
    /// Overrides of `runtime.limits`.
    #[serde(default)]
    pub limits: LimitOverrides,
}

fn default_listen() -> String {
    "127.0.0.1:9464".into()
}
fn default_store() -> String {
    "qmedic.db".into()
}
fn default_max_instances() -> u32 {
    64
}
fn default_quarantine_after() -> u32 {
    3
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_memory() -> u64 {
    64 << 20
}
fn default_output() -> u64 {
    4 << 20
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            max_instances: default_max_instances(),
            quarantine_after: default_quarantine_after(),
            limits: Limits::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: default_timeout(),
            memory: default_memory(),
            output: default_output(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            store: default_store(),
            agent: None,
            playbooks: None,
            runtime: RuntimeConfig::default(),
            connections: BTreeMap::new(),
            scalers: BTreeMap::new(),
            plugins: BTreeMap::new(),
            path: PathBuf::from("qmedic.yaml"),
            text: String::new(),
        }
    }
}

/// A config that cannot be read or is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error(
        "cannot read config {path}: {source}; pass --config or create qmedic.yaml (see qmedic.example.yaml)"
    )]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// Why reading it failed.
        source: std::io::Error,
    },
    /// The config was read but is wrong; the error points at `file:line:column`.
    #[error(transparent)]
    Invalid(#[from] Located),
}

impl Config {
    /// Read, expand and check a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Config::parse(&text, path)?)
    }

    /// Parse and check config text; `path` is used in errors and to resolve relative files.
    pub fn parse(text: &str, path: &Path) -> Result<Config, Located> {
        let expanded = expand_env(text, path)?;
        let mut config: Config = if expanded.trim().is_empty() {
            Config::default()
        } else {
            serde_saphyr::from_str(&expanded).map_err(|e| yaml_error(&e, path))?
        };
        config.path = path.to_path_buf();
        config.check(&expanded)?;
        config.text = expanded;
        Ok(config)
    }

    fn check(&mut self, text: &str) -> Result<(), Located> {
        let path = self.path.clone();
        let at = |key: &str| Location::of_key(&path, text, key);
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(paths) = &mut self.playbooks {
            for p in paths.iter_mut() {
                *p = base.join(&*p);
            }
        }
        if !self.store.contains("://") {
            self.store = base.join(&self.store).to_string_lossy().into_owned();
        } else if !self.store.starts_with("postgres://")
            && !self.store.starts_with("postgresql://")
            && !self.store.starts_with("sqlite://")
        {
            return Err(at("store").error(format!(
                "store `{}` is neither a file path, a sqlite:// URL nor a postgres:// URL",
                self.store
            )));
        }
        if self.runtime.max_instances == 0 {
            return Err(at("max_instances").error("runtime.max_instances must be at least 1"));
        }
        for (name, conn) in &mut self.connections {
            let here = || at(name);
            if conn.password.is_some() && conn.password_file.is_some() {
                return Err(here().error(format!(
                    "connection `{name}` sets both password and password_file; keep one"
                )));
            }
            if conn.token.is_some() && conn.token_file.is_some() {
                return Err(here().error(format!(
                    "connection `{name}` sets both token and token_file; keep one"
                )));
            }
            if let Some(file) = conn.password_file.take() {
                conn.password = Some(read_secret(&base.join(&file), name, here())?);
            }
            if let Some(file) = conn.token_file.take() {
                conn.token = Some(read_secret(&base.join(&file), name, here())?);
            }
            for url in [&conn.url, &conn.http_url].into_iter().flatten() {
                if !url.contains("://") {
                    return Err(here().error(format!(
                        "connection `{name}`: `{url}` is not a URL; write it as scheme://host:port"
                    )));
                }
            }
        }
        for (name, plugin) in &mut self.plugins {
            if let Some(p) = &plugin.path {
                if plugin.sha256.is_none() {
                    return Err(at(name).error(format!(
                        "plugin `{name}` is loaded from {} but has no sha256 pin; add \
                         `sha256: <hex>` (`sha256sum` prints it)",
                        p.display()
                    )));
                }
                plugin.path = Some(base.join(p));
            }
            if let Some(sha) = &plugin.sha256
                && (sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()))
            {
                return Err(at("sha256").error(format!(
                    "plugin `{name}`: sha256 must be 64 hex digits, got `{sha}`"
                )));
            }
            for grant in plugin.connections.iter().flatten() {
                let g = &grant.value;
                if g != "*" && !self.connections.contains_key(g) {
                    return Err(spanned(&path, grant).problem(Problem::UnknownName, format!(
                        "plugin `{name}` is granted connection `{g}`, which is not configured{}",
                        suggest(g, self.connections.keys())
                    )));
                }
            }
            for grant in plugin.scalers.iter().flatten() {
                let g = &grant.value;
                if g != "*" && !self.scalers.contains_key(g) {
                    return Err(spanned(&path, grant).problem(
                        Problem::UnknownName,
                        format!(
                            "plugin `{name}` is granted scaler `{g}`, which is not configured{}",
                            suggest(g, self.scalers.keys())
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Where `key` is defined in this config, for errors found after parsing.
    pub fn locate(&self, key: &str) -> Location {
        Location::of_key(&self.path, &self.text, key)
    }

    /// Where playbooks are read from: `playbooks` as configured, else the `playbooks` folder
    /// beside the config if it exists (none otherwise).
    pub fn playbook_paths(&self) -> Vec<PathBuf> {
        if let Some(paths) = &self.playbooks {
            return paths.clone();
        }
        let default = self
            .path
            .parent()
            .unwrap_or(Path::new("."))
            .join("playbooks");
        if default.is_dir() {
            vec![default]
        } else {
            Vec::new()
        }
    }

    /// This agent's name: `agent` from the config, else the host name.
    pub fn agent_name(&self) -> String {
        if let Some(name) = &self.agent {
            return name.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "qmedic".into())
    }

    /// Where compiled components are cached.
    pub fn cache_dir(&self) -> PathBuf {
        if let Some(dir) = &self.runtime.cache_dir {
            return dir.clone();
        }
        let xdg = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from);
        let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"));
        xdg.or(home)
            .unwrap_or_else(std::env::temp_dir)
            .join("qmedic")
    }
}

fn spanned<T>(path: &Path, s: &Spanned<T>) -> Location {
    Location::at(path, s.referenced.line(), s.referenced.column())
}

fn read_secret(file: &Path, conn: &str, at: Location) -> Result<Secret, Located> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        at.clone().problem(
            Problem::Environment,
            format!(
                "connection `{conn}`: cannot read secret file {}: {e}",
                file.display()
            ),
        )
    })?;
    Ok(Secret(text.trim_end_matches(['\n', '\r']).to_string()))
}

/// `; did you mean `x`?` when one name is close to `wrong`.
pub(crate) fn suggest<'a>(wrong: &str, names: impl IntoIterator<Item = &'a String>) -> String {
    names
        .into_iter()
        .map(|n| (edit_distance(wrong, n), n))
        .filter(|(d, n)| *d <= 2.max(n.len() / 4))
        .min()
        .map(|(_, n)| format!("; did you mean `{n}`?"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// A YAML error as `file:line:column: message`.
pub(crate) fn yaml_error(e: &serde_saphyr::Error, path: &Path) -> Located {
    let location = e
        .location()
        .map(|l| Location::at(path, l.line(), l.column()))
        .unwrap_or_else(|| Location::file(path));
    let message = DefaultMessageFormatter
        .format_message(e)
        .escape_debug()
        .to_string();
    location.problem(yaml_problem(e), message)
}

/// What sort of mistake a YAML error is.
fn yaml_problem(e: &serde_saphyr::Error) -> Problem {
    use serde_saphyr::Error as E;
    match e.without_snippet() {
        E::SerdeUnknownField { .. } => Problem::UnknownField,
        E::SerdeMissingField { .. } => Problem::Missing,
        E::SerdeInvalidType { .. }
        | E::SerdeInvalidLength { .. }
        | E::InvalidScalar { .. }
        | E::NullIntoString { .. }
        | E::Unexpected { .. } => Problem::WrongType,
        E::SerdeUnknownVariant { .. } | E::SerdeInvalidValue { .. } | E::Message { .. } => {
            Problem::BadValue
        }
        E::DuplicateMappingKey { .. } => Problem::Duplicate,
        _ => Problem::Syntax,
    }
}

/// Replace `${VAR}` and `${VAR:-default}` with the environment's values, outside comments.
fn expand_env(text: &str, path: &Path) -> Result<String, Located> {
    let mut out = String::with_capacity(text.len());
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let code_end = comment_start(line).unwrap_or(line.len());
        expand_line(&line[..code_end], &mut out, |i| {
            Location::from_offset(path, text, line_start + i)
        })?;
        out.push_str(&line[code_end..]);
        line_start += line.len();
    }
    Ok(out)
}

/// Where a YAML comment starts on `line`: a `#` at the start or after white space, outside quotes.
fn comment_start(line: &str) -> Option<usize> {
    let (mut single, mut double, mut prev) = (false, false, ' ');
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single && prev != '\\' => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return Some(i),
            _ => {}
        }
        prev = c;
    }
    None
}

fn expand_line(
    code: &str,
    out: &mut String,
    at: impl Fn(usize) -> Location,
) -> Result<(), Located> {
    let mut rest = code;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let offset = code.len() - rest.len() + i;
        let after = &rest[i + 1..];
        if let Some(literal) = after.strip_prefix("${") {
            out.push_str("${");
            rest = literal;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err(
                at(offset).error("`${` is not closed; write `${VAR}`, or `$${` for a literal `${`")
            );
        };
        let (name, default) = match body[..end].split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (&body[..end], None),
        };
        let value = match (std::env::var(name), default) {
            (Ok(v), _) => v,
            (Err(_), Some(d)) => d.to_string(),
            (Err(_), None) => {
                return Err(at(offset).problem(Problem::Environment, format!(
                    "environment variable `{name}` is not set; set it or write `${{{name}:-default}}`"
                )));
            }
        };
        if value.contains('\n') {
            return Err(at(offset).problem(
                Problem::Environment,
                format!(
                    "environment variable `{name}` holds a line break; use a *_file secret instead"
                ),
            ));
        }
        out.push_str(&value);
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(())
}

pub(crate) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration ({e}); write e.g. 30s, 500ms, 2m"
        ))
    })
}

pub(crate) fn de_opt_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Number(n) => Ok(n),
        Raw::Text(t) => parse_bytes(&t).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{t}` is not a size; write e.g. 64MiB, 512KiB, 1GiB"
            ))
        }),
    }
}

fn de_opt_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_bytes(d).map(Some)
}

/// `64MiB`, `512KiB`, `1GiB`, `100MB`, `4096`.
pub(crate) fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, Located> {
        Config::parse(text, Path::new("qmedic.yaml"))
    }

    #[test]
    fn the_example_config_parses() {
        // SAFETY: tests in this module do not read these variables concurrently.
        unsafe { std::env::set_var("RABBIT_PASSWORD", "guest") };
        let text = include_str!("../../qmedic.example.yaml");
        let config =
            Config::parse(text, Path::new("../qmedic.example.yaml")).expect("example parses");
        assert!(config.connections.contains_key("rabbit-local"));
    }

    #[test]
    fn unknown_field_points_at_file_line_column() {
        let err = parse("listen: 127.0.0.1:1\nconections: {}\n").unwrap_err();
        assert_eq!((err.location.line, err.location.column), (2, 1), "{err}");
        assert!(err.to_string().starts_with("qmedic.yaml:2:1: "), "{err}");
        assert!(err.message.contains("conections"), "{err}");
    }

    #[test]
    fn wrong_type_points_at_the_value() {
        let err = parse("runtime:\n  max_instances: lots\n").unwrap_err();
        assert_eq!(err.location.line, 2, "{err}");
    }

    #[test]
    fn bad_duration_says_how_to_write_one() {
        let err = parse("runtime:\n  limits:\n    timeout: soon\n").unwrap_err();
        assert_eq!(err.location.line, 3, "{err}");
        assert!(err.message.contains("not a duration"), "{err}");
    }

    #[test]
    fn env_references_expand_and_missing_ones_point_at_themselves() {
        unsafe { std::env::set_var("QMEDIC_TEST_URL", "amqp://h:5672") };
        let c =
            parse("connections:\n  r:\n    kind: rabbitmq\n    url: ${QMEDIC_TEST_URL}\n").unwrap();
        assert_eq!(c.connections["r"].url.as_deref(), Some("amqp://h:5672"));
        let err = parse("listen: x\nstore: ${QMEDIC_TEST_UNSET_VAR}\n").unwrap_err();
        assert_eq!((err.location.line, err.location.column), (2, 8), "{err}");
        let c = parse("store: ${QMEDIC_TEST_UNSET_VAR:-fallback.db}\n").unwrap();
        assert_eq!(c.store, "fallback.db");
        let c = parse("store: \"$${NOT_EXPANDED}\"\n").unwrap();
        assert_eq!(c.store, "${NOT_EXPANDED}");
        let c =
            parse("# uses ${QMEDIC_TEST_UNSET_VAR} in a comment\nstore: a.db # ${ALSO_UNSET}\n")
                .unwrap();
        assert_eq!(c.store, "a.db");
    }

    #[test]
    fn secret_files_are_read_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let path = dir.path().join("qmedic.yaml");
        let text = "connections:\n  r:\n    kind: rabbitmq\n    password_file: pw\n";
        let c = Config::parse(text, &path).unwrap();
        let conn = &c.connections["r"];
        assert_eq!(conn.password.as_ref().map(Secret::expose), Some("s3cret"));
        assert!(!format!("{conn:?}").contains("s3cret"));
    }

    #[test]
    fn unknown_grant_suggests_the_near_name() {
        let text = "connections:\n  rabbit-prod: { kind: rabbitmq }\nplugins:\n  reprocess-dlq:\n    connections: [rabit-prod]\n";
        let err = parse(text).unwrap_err();
        assert_eq!((err.location.line, err.location.column), (5, 19), "{err}");
        assert!(err.message.contains("did you mean `rabbit-prod`"), "{err}");
    }

    #[test]
    fn third_party_plugin_without_pin_is_refused() {
        let err = parse("plugins:\n  mine:\n    path: mine.wasm\n").unwrap_err();
        assert!(err.message.contains("no sha256 pin"), "{err}");
        assert_eq!(err.location.line, 2);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("64MiB"), Some(64 << 20));
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("lots"), None);
    }
}
