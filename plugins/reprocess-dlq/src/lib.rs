//! `reprocess-dlq`: move messages from a dead-letter queue back to where they came from.
//!
//! Broker-neutral: it speaks only the `broker` interface. Per batch it publishes every message
//! and waits for the broker's confirmation before it acks the source, so a crash at any point
//! loses nothing and duplicates at most one batch. Each message carries a redrive counter in the
//! `qmedic-redrives` header; one that has been redriven `max-redrives` times goes to the parking
//! queue instead of looping. A destination without consumers is refused unless `force`.
//! Messages it does not move (no origin and no `to`) stay in the dead-letter queue.

use std::collections::BTreeMap;

use qmedic_plugin_sdk::{Action, Error, Message, Outgoing, Settlement, broker, clock, log};
use serde::{Deserialize, Serialize};

/// The header holding how many times qmedic redrove a message.
const COUNTER: &str = "qmedic-redrives";

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Params {
    connection: String,
    /// The dead-letter queue to drain.
    queue: String,
    /// Where to send messages; default: each message's origin.
    #[serde(default)]
    to: Option<String>,
    /// Most messages to handle in this run.
    #[serde(default = "default_max")]
    max: u64,
    /// Messages per receive/publish/settle round.
    #[serde(default = "default_batch")]
    batch: u32,
    /// Messages per second, at most.
    #[serde(default)]
    rate: Option<f64>,
    /// Redrives after which a message is parked instead.
    #[serde(default = "default_max_redrives")]
    max_redrives: u32,
    /// Where parked messages go; default `<queue>.parking`.
    #[serde(default)]
    parking: Option<String>,
    /// Redrive into a destination that has no consumers.
    #[serde(default)]
    force: bool,
    /// Report what would move; move nothing.
    #[serde(default)]
    dry_run: bool,
    /// A Rhai expression; only messages for which it is true are moved, the rest stay. It sees
    /// `headers` (a map of strings), `id` (a string, or `()`), `deliveries` and `origin`.
    #[serde(default)]
    filter: Option<String>,
}

fn default_max() -> u64 {
    1_000
}

fn default_batch() -> u32 {
    100
}

fn default_max_redrives() -> u32 {
    5
}

#[derive(Serialize, Default)]
#[serde(rename_all = "kebab-case")]
struct Report {
    moved: u64,
    parked: u64,
    skipped: u64,
    failed: u64,
    dry_run: bool,
    duration_ms: u64,
    /// Messages handled per second.
    rate: f64,
    /// Messages moved (or, in a dry run, to be moved) per destination.
    destinations: BTreeMap<String, u64>,
    /// What a dry run found that would stop the real run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

fn redrives(m: &Message) -> u32 {
    m.headers
        .iter()
        .find(|(k, _)| k == COUNTER)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Rhai operations one filter evaluation may take before the run fails.
const FILTER_BUDGET: u64 = 10_000;

/// A compiled `filter` with its sandboxed engine.
struct Filter {
    engine: rhai::Engine,
    ast: rhai::AST,
    source: String,
}

impl Filter {
    fn compile(source: &str) -> Result<Filter, Error> {
        let mut engine = rhai::Engine::new();
        engine
            .set_max_operations(FILTER_BUDGET)
            .set_max_expr_depths(32, 32)
            .set_max_string_size(64 << 10);
        let ast = engine
            .compile_expression(source)
            .map_err(|e| Error::invalid(format!("filter `{source}` does not parse: {e}")))?;
        Ok(Filter {
            engine,
            ast,
            source: source.to_string(),
        })
    }

    fn matches(&self, m: &Message) -> Result<bool, Error> {
        let headers: rhai::Map = m
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().into(), rhai::Dynamic::from(v.clone())))
            .collect();
        let mut scope = rhai::Scope::new();
        scope.push_constant("headers", headers);
        scope.push_constant(
            "id",
            m.id.clone()
                .map_or(rhai::Dynamic::UNIT, rhai::Dynamic::from),
        );
        scope.push_constant("deliveries", i64::from(m.deliveries));
        scope.push_constant(
            "origin",
            m.origin
                .clone()
                .map_or(rhai::Dynamic::UNIT, rhai::Dynamic::from),
        );
        self.engine
            .eval_ast_with_scope::<bool>(&mut scope, &self.ast)
            .map_err(|e| {
                Error::invalid(format!(
                    "filter `{}` failed on message {:?}: {e}",
                    self.source, m.id
                ))
            })
    }
}

/// What to do with one message.
enum Plan {
    Move(String),
    Park,
    Skip,
}

struct Redrive {
    p: Params,
    filter: Option<Filter>,
    parking: String,
    report: Report,
    /// Destinations checked for consumers in this run.
    checked: BTreeMap<String, bool>,
}

impl Redrive {
    fn plan(&self, m: &Message) -> Result<Plan, Error> {
        if let Some(filter) = &self.filter
            && !filter.matches(m)?
        {
            return Ok(Plan::Skip);
        }
        if redrives(m) >= self.p.max_redrives {
            return Ok(Plan::Park);
        }
        Ok(match self.p.to.clone().or_else(|| m.origin.clone()) {
            Some(dest) => Plan::Move(dest),
            None => Plan::Skip,
        })
    }

    /// Refuse a destination without consumers: the messages would only pile up again.
    fn check_destination(&mut self, dest: &str) -> Result<(), Error> {
        if self.p.force || self.checked.contains_key(dest) {
            return Ok(());
        }
        let stats = broker::stats(&self.p.connection, dest)?;
        if stats.consumers == Some(0) {
            let problem = format!(
                "`{dest}` has no consumers, so redriven messages would wait there unprocessed; \
                 start its consumers first, or pass force"
            );
            if !self.p.dry_run {
                return Err(Error::invalid(problem));
            }
            self.report.warnings.push(problem);
        }
        self.checked.insert(dest.to_string(), true);
        Ok(())
    }

    fn outgoing(&self, m: &Message, destination: String, counter: u32) -> Outgoing {
        let mut headers: Vec<(String, String)> = m
            .headers
            .iter()
            .filter(|(k, _)| k != COUNTER)
            .cloned()
            .collect();
        headers.push((COUNTER.into(), counter.to_string()));
        Outgoing {
            destination,
            key: None,
            body: m.body.clone(),
            headers,
        }
    }

    /// Sleep as long as the rate limit asks, given how many messages were handled so far.
    fn pace(&self, started_ms: u64, handled: u64) {
        if let Some(rate) = self.p.rate.filter(|r| *r > 0.0) {
            let due_ms = started_ms + (handled as f64 * 1_000.0 / rate) as u64;
            let now = clock::now_ms();
            if due_ms > now {
                clock::sleep_ms(u32::try_from(due_ms - now).unwrap_or(u32::MAX));
            }
        }
    }

    fn run(mut self) -> Result<Report, Error> {
        let started = clock::now_ms();
        let conn = self.p.connection.clone();
        let mut held: Vec<u64> = Vec::new();
        let mut handled = 0u64;
        while handled < self.p.max {
            let want = (self.p.max - handled).min(u64::from(self.p.batch.max(1))) as u32;
            let msgs = broker::receive(&conn, &self.p.queue, want, 1_000)?;
            if msgs.is_empty() {
                break;
            }
            handled += msgs.len() as u64;
            let mut out = Vec::new();
            let mut done = Vec::new();
            let (mut moved, mut parked) = (Vec::new(), 0u64);
            for m in &msgs {
                let plan = match self.plan(m) {
                    Ok(plan) => plan,
                    Err(e) => {
                        // Nothing of this batch was published: all of it stays.
                        held.extend(msgs.iter().map(|m| m.handle));
                        release(&conn, &held)?;
                        return Err(e);
                    }
                };
                match plan {
                    Plan::Skip => {
                        self.report.skipped += 1;
                        held.push(m.handle);
                    }
                    Plan::Park => {
                        parked += 1;
                        out.push(self.outgoing(m, self.parking.clone(), redrives(m)));
                        done.push(m.handle);
                    }
                    Plan::Move(dest) => {
                        if let Err(e) = self.check_destination(&dest) {
                            // Nothing of this batch was published: all of it stays.
                            held.extend(msgs.iter().map(|m| m.handle));
                            release(&conn, &held)?;
                            return Err(e);
                        }
                        out.push(self.outgoing(m, dest.clone(), redrives(m) + 1));
                        moved.push(dest);
                        done.push(m.handle);
                    }
                }
            }
            if self.p.dry_run {
                held.extend(done);
            } else {
                if let Err(e) = broker::publish(&conn, &out) {
                    self.report.failed += done.len() as u64;
                    held.extend(done);
                    release(&conn, &held)?;
                    return Err(Error::Unavailable(format!(
                        "redrive stopped after moving {} and parking {}; the last batch of {} stays \
                         in `{}`: {e}",
                        self.report.moved,
                        self.report.parked,
                        out.len(),
                        self.p.queue
                    )));
                }
                // Confirmed by the broker: only now leave the dead-letter queue.
                broker::settle(&conn, &done, Settlement::Ack)?;
            }
            self.report.parked += parked;
            self.report.moved += moved.len() as u64;
            for dest in moved {
                *self.report.destinations.entry(dest).or_default() += 1;
            }
            log::progress(handled, self.p.max);
            self.pace(started, handled);
        }
        release(&conn, &held)?;
        let elapsed = clock::now_ms().saturating_sub(started);
        self.report.duration_ms = elapsed;
        self.report.rate = if elapsed == 0 {
            0.0
        } else {
            handled as f64 * 1_000.0 / elapsed as f64
        };
        self.report.dry_run = self.p.dry_run;
        log::info(&format!(
            "{}: moved {}, parked {}, skipped {} from {}",
            if self.p.dry_run { "dry run" } else { "redrive" },
            self.report.moved,
            self.report.parked,
            self.report.skipped,
            self.p.queue
        ));
        Ok(self.report)
    }
}

/// Return messages this run took but did not move to their queue, each once.
fn release(conn: &str, handles: &[u64]) -> Result<(), Error> {
    let unique: std::collections::BTreeSet<u64> = handles.iter().copied().collect();
    if unique.is_empty() {
        return Ok(());
    }
    let handles: Vec<u64> = unique.into_iter().collect();
    broker::settle(conn, &handles, Settlement::Requeue)
}

struct ReprocessDlq;

impl Action for ReprocessDlq {
    type Params = Params;
    type Report = Report;

    fn run(p: Params) -> Result<Report, Error> {
        if p.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
            return Err(Error::invalid(
                "rate must be a positive number of messages per second",
            ));
        }
        let parking = p
            .parking
            .clone()
            .unwrap_or_else(|| format!("{}.parking", p.queue));
        let filter = p.filter.as_deref().map(Filter::compile).transpose()?;
        Redrive {
            p,
            filter,
            parking,
            report: Report::default(),
            checked: BTreeMap::new(),
        }
        .run()
    }
}

qmedic_plugin_sdk::export_action!(ReprocessDlq);
