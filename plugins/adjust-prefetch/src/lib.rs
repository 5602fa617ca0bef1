//! `adjust-prefetch`: set a prefetch-like limit (prefetch, max in-flight, max-ack-pending) on a
//! queue through its connection's adapter, clamped to operator-given bounds.
//!
//! Broker-neutral: which knobs exist is the adapter's business; an unknown knob comes back as the
//! adapter's `invalid` error, which names the knobs it has.

use qmedic_plugin_sdk::{Action, Error, broker, export_action, log};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Params {
    connection: String,
    queue: String,
    /// The knob's name as the adapter knows it.
    #[serde(default = "default_limit")]
    limit: String,
    value: u64,
    /// Bounds the value is clamped to, so a computed value cannot starve or flood consumers.
    #[serde(default = "default_min")]
    min: u64,
    #[serde(default = "default_max")]
    max: u64,
    #[serde(default)]
    dry_run: bool,
}

fn default_limit() -> String {
    "prefetch".into()
}

fn default_min() -> u64 {
    1
}

fn default_max() -> u64 {
    10_000
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Report {
    connection: String,
    queue: String,
    limit: String,
    requested: u64,
    applied: u64,
    clamped: bool,
    dry_run: bool,
    depth_before: u64,
    in_flight_before: u64,
    consumers_before: Option<u32>,
}

struct AdjustPrefetch;

impl Action for AdjustPrefetch {
    type Params = Params;
    type Report = Report;

    fn run(p: Params) -> Result<Report, Error> {
        if p.min > p.max {
            return Err(Error::invalid(format!(
                "min ({}) is greater than max ({})",
                p.min, p.max
            )));
        }
        let applied = p.value.clamp(p.min, p.max);
        let before = broker::stats(&p.connection, &p.queue)?;
        if p.dry_run {
            log::info(&format!(
                "dry run: would set {} on {} to {applied}",
                p.limit, p.queue
            ));
        } else {
            broker::set_limit(&p.connection, &p.queue, &p.limit, applied)?;
            log::info(&format!("set {} on {} to {applied}", p.limit, p.queue));
        }
        Ok(Report {
            clamped: applied != p.value,
            requested: p.value,
            applied,
            dry_run: p.dry_run,
            depth_before: before.depth,
            in_flight_before: before.in_flight,
            consumers_before: before.consumers,
            connection: p.connection,
            queue: p.queue,
            limit: p.limit,
        })
    }
}

export_action!(AdjustPrefetch);
