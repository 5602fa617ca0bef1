//! The README's worked example: warn when a queue is deeper than a threshold.

use qmedic_plugin_sdk::{Action, Error, broker, export_action, log};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Params {
    connection: String,
    queue: String,
    warn_above: u64,
}

#[derive(Serialize)]
struct Report {
    depth: u64,
    consumers: Option<u32>,
    over: bool,
}

struct DepthCheck;

impl Action for DepthCheck {
    type Params = Params;
    type Report = Report;

    fn run(p: Params) -> Result<Report, Error> {
        let stats = broker::stats(&p.connection, &p.queue)?;
        let over = stats.depth > p.warn_above;
        if over {
            log::warn(&format!(
                "{} holds {} messages (threshold {})",
                p.queue, stats.depth, p.warn_above
            ));
        }
        Ok(Report {
            depth: stats.depth,
            consumers: stats.consumers,
            over,
        })
    }
}

export_action!(DepthCheck);
