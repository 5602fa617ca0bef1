//! Scaler backends: what the `scale` interface drives.

use std::time::Duration;

use tokio::process::Command;

use crate::config::ScalerConfig;
use crate::host::WitError;

/// A configured scaler.
pub(crate) enum Scaler {
    /// A program run without a shell; `{target}` and `{replicas}` in its arguments are replaced.
    Command { get: Vec<String>, set: Vec<String> },
}

impl Scaler {
    pub(crate) fn new(config: &ScalerConfig) -> Scaler {
        match config {
            ScalerConfig::Command { get, set } => Scaler::Command {
                get: get.clone(),
                set: set.clone(),
            },
        }
    }

    pub(crate) async fn replicas(
        &self,
        name: &str,
        target: &str,
        timeout: Duration,
    ) -> Result<u32, WitError> {
        match self {
            Scaler::Command { get, .. } => {
                let out = run(name, get, target, None, timeout).await?;
                out.trim().parse().map_err(|_| {
                    WitError::Unavailable(format!(
                        "scaler `{name}`: `get` printed `{}`, not a replica count",
                        out.trim().chars().take(80).collect::<String>()
                    ))
                })
            }
        }
    }

    pub(crate) async fn set_replicas(
        &self,
        name: &str,
        target: &str,
        replicas: u32,
        timeout: Duration,
    ) -> Result<(), WitError> {
        match self {
            Scaler::Command { set, .. } => run(name, set, target, Some(replicas), timeout)
                .await
                .map(|_| ()),
        }
    }
}

/// Target names reach a program's arguments, so they are restricted to what workload names use.
fn valid_target(target: &str) -> bool {
    !target.is_empty()
        && target.len() <= 253
        && !target.starts_with('-')
        && target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':'))
}

async fn run(
    name: &str,
    argv: &[String],
    target: &str,
    replicas: Option<u32>,
    timeout: Duration,
) -> Result<String, WitError> {
    if !valid_target(target) {
        return Err(WitError::Invalid(format!(
            "scaler target `{target}` may only hold letters, digits and - _ . / :"
        )));
    }
    let replicas = replicas.map(|r| r.to_string()).unwrap_or_default();
    let args: Vec<String> = argv
        .iter()
        .map(|a| {
            a.replace("{target}", target)
                .replace("{replicas}", &replicas)
        })
        .collect();
    let (program, rest) = args
        .split_first()
        .ok_or_else(|| WitError::Invalid(format!("scaler `{name}` has an empty command")))?;
    let child = Command::new(program).args(rest).kill_on_drop(true).output();
    let output = tokio::time::timeout(timeout, child)
        .await
        .map_err(|_| {
            WitError::Unavailable(format!(
                "scaler `{name}`: `{program}` did not finish before the deadline"
            ))
        })?
        .map_err(|e| {
            WitError::Unavailable(format!("scaler `{name}`: cannot run `{program}`: {e}"))
        })?;
    if !output.status.success() {
        return Err(WitError::Unavailable(format!(
            "scaler `{name}`: `{program}` exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
                .trim()
                .chars()
                .take(500)
                .collect::<String>()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
