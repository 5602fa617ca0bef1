//! `plugin.toml`: what a plugin is and what it asks for. Plain data, no runtime.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::location::{Located, Location};

/// The WIT contract version this agent speaks. A plugin built for another `0.1.x` is accepted.
pub const WIT_VERSION: &str = "0.1.0";

/// The manifest beside every plugin's `.wasm`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Lowercase letters, digits and `-`; how configs and playbooks name the plugin.
    pub name: String,
    /// The plugin's own version (semver).
    pub version: String,
    /// Action or adapter; decides which exports the `.wasm` must have.
    pub kind: PluginKind,
    /// The `qmedic:plugin` WIT version the plugin was built against.
    pub wit: String,
    /// One line for `qmedic plugin list`.
    #[serde(default)]
    pub description: String,
    /// Adapters only: the connection kind this adapter serves (`rabbitmq`, `kafka`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// Host interfaces the plugin uses. The agent config grants the objects (connections,
    /// scalers) they may reach; a call to an interface not listed here is denied.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// Actions only: the action takes `"dry-run": true` in its params and then changes nothing,
    /// so a playbook's dry run calls it; other actions are skipped in a dry run.
    #[serde(default)]
    pub dry_run: bool,
}

/// Whether a plugin exports `broker` (adapter) or `run` (action).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// Exports `run`: a remediation step that playbooks call.
    Action,
    /// Exports `broker`: speaks one kind of broker on behalf of actions.
    Adapter,
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PluginKind::Action => "action",
            PluginKind::Adapter => "adapter",
        })
    }
}

/// A host interface a plugin may ask for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// Actions: queues and messages on granted connections, through their adapters.
    Broker,
    /// Actions: replica counts through granted scalers.
    Scale,
    /// A private key-value store.
    State,
    /// Adapters: HTTP to the base URL of the connections they serve.
    Http,
    /// Adapters: AMQP 0-9-1 on the connections they serve.
    Amqp,
    /// Adapters: Kafka on the connections they serve.
    Kafka,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::Broker => "broker",
            Capability::Scale => "scale",
            Capability::State => "state",
            Capability::Http => "http",
            Capability::Amqp => "amqp",
            Capability::Kafka => "kafka",
        })
    }
}

impl Manifest {
    /// Parse and check a manifest; errors point at `path:line:column`.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, Located> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| {
            let location = e
                .span()
                .map(|span| Location::from_offset(path, text, span.start))
                .unwrap_or_else(|| Location::file(path));
            location.error(e.message().to_string())
        })?;
        manifest.check(text, path)?;
        Ok(manifest)
    }

    /// Whether the plugin asked for `capability`; host calls to unlisted interfaces are denied.
    pub fn has(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }

    fn check(&self, text: &str, path: &Path) -> Result<(), Located> {
        let at = |key: &str| Location::of_key(path, text, key);
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(at("name").error(format!(
                "plugin name `{}` must be lowercase letters, digits and `-`",
                self.name
            )));
        }
        if !wit_compatible(&self.wit) {
            return Err(at("wit").error(format!(
                "plugin `{}` was built for qmedic:plugin@{}, this agent speaks @{WIT_VERSION}; \
                 rebuild it against qmedic-plugin-sdk {WIT_VERSION}",
                self.name, self.wit
            )));
        }
        match (self.kind, &self.broker) {
            (PluginKind::Adapter, None) => {
                return Err(at("kind").error(format!(
                    "adapter `{}` must say which connection kind it serves: add `broker = \"<kind>\"`",
                    self.name
                )));
            }
            (PluginKind::Action, Some(_)) => {
                return Err(at("broker").error(format!(
                    "`broker` names the connection kind an adapter serves; `{}` is an action",
                    self.name
                )));
            }
            _ => {}
        }
        let allowed: &[Capability] = match self.kind {
            PluginKind::Action => &[Capability::Broker, Capability::Scale, Capability::State],
            PluginKind::Adapter => &[
                Capability::Amqp,
                Capability::Http,
                Capability::Kafka,
                Capability::State,
            ],
        };
        if let Some(bad) = self.capabilities.iter().find(|c| !allowed.contains(c)) {
            return Err(at("capabilities").error(format!(
                "an {} cannot ask for `{bad}`; it may ask for {}",
                self.kind,
                allowed
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(())
    }
}

/// `0.1.x` plugins run on a `0.1.y` agent: the contract only grows within a minor version.
fn wit_compatible(version: &str) -> bool {
    let major_minor = |v: &str| {
        let mut parts = v.split('.');
        (
            parts.next().map(str::to_owned),
            parts.next().map(str::to_owned),
        )
    };
    version.split('.').count() == 3 && major_minor(version) == major_minor(WIT_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "reprocess-dlq"
version = "0.1.0"
kind = "action"
wit = "0.1.0"
capabilities = ["broker", "state"]
"#;

    #[test]
    fn parses_a_good_manifest() {
        let m = Manifest::parse(GOOD, Path::new("plugin.toml")).expect("valid manifest");
        assert_eq!(m.kind, PluginKind::Action);
        assert!(m.has(Capability::Broker));
        assert!(!m.has(Capability::Scale));
    }

    #[test]
    fn unknown_field_points_at_its_line() {
        let text = GOOD.replace("wit = \"0.1.0\"", "wit = \"0.1.0\"\ncapabilites = []");
        let err = Manifest::parse(&text, Path::new("p/plugin.toml")).unwrap_err();
        assert_eq!((err.location.line, err.location.column), (6, 1), "{err}");
        assert!(
            err.to_string()
                .starts_with("p/plugin.toml:6:1: unknown field `capabilites`"),
            "{err}"
        );
    }

    #[test]
    fn incompatible_wit_version_is_refused() {
        let text = GOOD.replace("wit = \"0.1.0\"", "wit = \"0.2.0\"");
        let err = Manifest::parse(&text, Path::new("plugin.toml")).unwrap_err();
        assert_eq!(err.location.line, 5);
        assert!(err.message.contains("rebuild it"), "{err}");
    }

    #[test]
    fn action_cannot_ask_for_http() {
        let text = GOOD.replace(r#"["broker", "state"]"#, r#"["http"]"#);
        let err = Manifest::parse(&text, Path::new("plugin.toml")).unwrap_err();
        assert!(err.message.contains("cannot ask for `http`"), "{err}");
    }

    #[test]
    fn adapter_must_name_its_broker() {
        let text = GOOD
            .replace("\"action\"", "\"adapter\"")
            .replace(r#"["broker", "state"]"#, "[]");
        let err = Manifest::parse(&text, Path::new("plugin.toml")).unwrap_err();
        assert_eq!(err.location.line, 4);
    }
}
