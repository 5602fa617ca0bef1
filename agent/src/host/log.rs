//! `log`: lines into the agent's log (tracing) and into the call's record.

use serde::Serialize;

use super::HostState;
use super::bindings::action::qmedic::plugin::log::{Host, Level};

/// Lines kept per call; later ones are counted, not kept.
const MAX_LINES: usize = 1_000;
/// Longest line kept; longer ones are cut.
const MAX_LINE: usize = 4 << 10;

/// One line a plugin logged during a call.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LogLine {
    /// The plugin's name.
    pub plugin: String,
    /// `trace`, `debug`, `info`, `warn` or `error`; stdout lines are `info`.
    pub level: &'static str,
    /// The line, cut at 4 KiB.
    pub message: String,
}

impl HostState {
    pub(crate) fn push_log(&mut self, level: &'static str, mut message: String) {
        let plugin = &self.plugin.manifest.name;
        match level {
            "error" => tracing::error!(plugin = %plugin, "{message}"),
            "warn" => tracing::warn!(plugin = %plugin, "{message}"),
            "info" => tracing::info!(plugin = %plugin, "{message}"),
            _ => tracing::debug!(plugin = %plugin, "{message}"),
        }
        if self.logs.len() >= MAX_LINES {
            return;
        }
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        self.logs.push(LogLine {
            plugin: plugin.clone(),
            level,
            message,
        });
    }
}

impl Host for HostState {
    async fn write(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        self.push_log(level, message);
        Ok(())
    }

    async fn progress(&mut self, done: u64, total: u64) -> wasmtime::Result<()> {
        if let Some(observe) = &self.progress {
            observe(done, (total > 0).then_some(total));
        }
        Ok(())
    }
}
