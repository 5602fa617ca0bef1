//! Running a playbook: params, the safety gates (approval, cooldown, max-runs, lock), then the
//! steps in order, each recorded in the store as it ends.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rhai::{Dynamic, Map};
use serde::Serialize;

use super::model::{Builtin, Part, Playbook, Step, StepRun, Template};
use super::script::{Context, ScriptHost, to_dynamic, to_json};
use crate::config::suggest;
use crate::metrics::Metrics;
use crate::runtime::{CallError, Runtime};
use crate::safety::LeaseGuard;
use crate::store::{AuditEntry, Finish, NewRun, StepRecord, Store, StoreError, now_ms};

/// A step that gives no `timeout` fails after this long.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs playbooks against one runtime and one store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Executor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    runtime: Runtime,
    store: Arc<dyn Store>,
    agent: String,
    metrics: Metrics,
}

/// What starts a run and with what.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// `manual`, `schedule`, `alert` or `chat`.
    pub trigger: String,
    /// Who asked.
    pub who: String,
    /// Param values; text is converted to each param's type.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Change nothing, record what would change.
    pub dry_run: bool,
    /// The scheduled tick this run is for (ms since the epoch); claimed once fleet-wide.
    pub tick_at: Option<i64>,
    /// Alert labels or chat details, visible to expressions as `trigger.labels`.
    pub labels: BTreeMap<String, String>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every step that ran succeeded (or was allowed to fail).
    Succeeded,
    /// A step failed.
    Failed,
    /// Skipped: the playbook is cooling down for this target.
    Cooldown,
    /// Skipped: another run holds the lock.
    Locked,
    /// Skipped: `max-runs` for the window was reached.
    RateLimited,
    /// Not started: it needs a human's approval.
    NeedsApproval,
    /// Stopped: the lease was lost before a change.
    LostLease,
    /// Not run: another agent claimed this scheduled tick.
    AlreadyClaimed,
}

impl Outcome {
    /// The word in run records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Cooldown => "cooldown",
            Outcome::Locked => "locked",
            Outcome::RateLimited => "rate-limited",
            Outcome::NeedsApproval => "needs-approval",
            Outcome::LostLease => "lost-lease",
            Outcome::AlreadyClaimed => "already-claimed",
        }
    }

    /// Whether steps ran.
    pub fn ran(self) -> bool {
        matches!(
            self,
            Outcome::Succeeded | Outcome::Failed | Outcome::LostLease
        )
    }
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Its number in the store; `None` when another agent claimed the tick.
    pub run_id: Option<i64>,
    /// The playbook.
    pub playbook: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it failed or was skipped.
    pub error: Option<String>,
    /// Whether it was a dry run.
    pub dry_run: bool,
    /// Its steps.
    pub steps: Vec<StepRecord>,
    /// What it changed, or in a dry run would have changed.
    pub changes: Vec<serde_json::Value>,
    /// Wall-clock time.
    pub duration_ms: u64,
}

/// A run that could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The params are wrong; nothing was recorded.
    #[error("playbook `{playbook}`: {message}")]
    Params {
        /// The playbook.
        playbook: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The mutable part of one run, shared with a script's host functions.
struct RunState {
    executor: Executor,
    playbook: String,
    run_id: i64,
    dry_run: bool,
    lease: Option<Arc<LeaseGuard>>,
    changes: Mutex<Vec<serde_json::Value>>,
    logs: Mutex<Vec<String>>,
    /// Set when the lease check refused a change: the run stops at that step.
    change_refused: std::sync::atomic::AtomicBool,
}

/// Why a step did not succeed.
enum StepFailure {
    Failed(String),
    LostLease(String),
}

impl Executor {
    /// An executor that runs plugins in `runtime` and records in `store` as `agent`.
    pub fn new(runtime: Runtime, store: Arc<dyn Store>, agent: String, metrics: Metrics) -> Self {
        Executor {
            inner: Arc::new(Inner {
                runtime,
                store,
                agent,
                metrics,
            }),
        }
    }

    /// The store runs are recorded in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The metrics runs are counted in.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// This agent's name.
    pub fn agent(&self) -> &str {
        &self.inner.agent
    }

    /// Run `playbook` once.
    pub async fn run(&self, playbook: &Playbook, req: RunRequest) -> Result<RunSummary, RunError> {
        let clock = Instant::now();
        let params = bind_params(playbook, &req.params)?;
        let params_map = json_map(&params);
        let trigger_map = trigger_map(&req);
        let empty = Map::new();
        let cx = Context {
            params: &params_map,
            trigger: &trigger_map,
            steps: &empty,
        };
        let dry_run = req.dry_run || playbook.safety.dry_run;
        let target = match &playbook.safety.lock {
            Some(t) => match render(t, &cx) {
                Ok(serde_json::Value::String(s)) => s,
                Ok(other) => other.to_string(),
                Err(e) => {
                    return Err(RunError::Params {
                        playbook: playbook.name.clone(),
                        message: format!("safety.lock: {e}"),
                    });
                }
            },
            None => playbook.name.clone(),
        };
        let store = &self.inner.store;
        let started_at = now_ms();
        let new = NewRun {
            playbook: playbook.name.clone(),
            trigger: req.trigger.clone(),
            who: req.who.clone(),
            agent: self.inner.agent.clone(),
            tick_at: req.tick_at,
            params: serde_json::Value::Object(params.clone()),
            dry_run,
            target: target.clone(),
            started_at,
        };
        let Some(run_id) = store.start_run(&new).await? else {
            return Ok(RunSummary {
                run_id: None,
                playbook: playbook.name.clone(),
                outcome: Outcome::AlreadyClaimed,
                error: None,
                dry_run,
                steps: Vec::new(),
                changes: Vec::new(),
                duration_ms: 0,
            });
        };
        let summary = |outcome: Outcome, error: Option<String>| RunSummary {
            run_id: Some(run_id),
            playbook: playbook.name.clone(),
            outcome,
            error,
            dry_run,
            steps: Vec::new(),
            changes: Vec::new(),
            duration_ms: clock.elapsed().as_millis() as u64,
        };
        if let Some(refusal) = self.gates(playbook, &cx, &target, dry_run).await? {
            let (outcome, why) = refusal;
            let s = summary(outcome, Some(why));
            self.finish(run_id, &s, None).await?;
            return Ok(s);
        }
        // A dry run changes nothing, so it takes no lease and never holds up a real run.
        let lease = match &playbook.safety.lock {
            Some(_) if !dry_run => {
                let holder = format!("{}/run-{run_id}", self.inner.agent);
                match LeaseGuard::acquire(
                    store.clone(),
                    &target,
                    &holder,
                    playbook.safety.lock_ttl,
                    &self.inner.metrics,
                )
                .await?
                {
                    Some(g) => Some(g),
                    None => {
                        let s = summary(
                            Outcome::Locked,
                            Some(format!("another run holds the lock `{target}`")),
                        );
                        self.finish(run_id, &s, None).await?;
                        return Ok(s);
                    }
                }
            }
            _ => None,
        };
        if let Some(g) = &lease {
            tracing::debug!(key = %target, token = g.lease().token, run_id, "lease taken");
        }
        store
            .audit(&AuditEntry {
                at: now_ms(),
                agent: self.inner.agent.clone(),
                run_id: Some(run_id),
                event: "run-started".into(),
                detail: serde_json::json!({
                    "playbook": playbook.name, "trigger": req.trigger, "who": req.who,
                    "params": params, "dry_run": dry_run,
                    "lease_token": lease.as_ref().map(|g| g.lease().token),
                }),
            })
            .await?;
        let state = Arc::new(RunState {
            executor: self.clone(),
            playbook: playbook.name.clone(),
            run_id,
            dry_run,
            lease: lease.map(Arc::new),
            changes: Mutex::new(Vec::new()),
            logs: Mutex::new(Vec::new()),
            change_refused: std::sync::atomic::AtomicBool::new(false),
        });
        let mut steps_map = Map::new();
        let mut records = Vec::new();
        let mut outcome = Outcome::Succeeded;
        let mut error = None;
        for (idx, step) in playbook.steps.iter().enumerate() {
            let cx = Context {
                params: &params_map,
                trigger: &trigger_map,
                steps: &steps_map,
            };
            let (record, output, failure) = self.step(&state, step, idx, &cx).await;
            store.record_step(run_id, &record).await?;
            self.inner.metrics.step(
                &playbook.name,
                &step.label,
                &record.uses,
                record.duration_ms as f64 / 1000.0,
            );
            records.push(record);
            if let (Some(id), Some(out)) = (&step.id, output) {
                steps_map.insert(id.as_str().into(), out);
            }
            match failure {
                None => {}
                Some(StepFailure::LostLease(why)) => {
                    outcome = Outcome::LostLease;
                    error = Some(why);
                    break;
                }
                Some(StepFailure::Failed(why)) if step.continue_on_error => {
                    tracing::warn!(playbook = %playbook.name, step = %step.label, error = %why, "step failed; continue-on-error");
                }
                Some(StepFailure::Failed(why)) => {
                    outcome = Outcome::Failed;
                    error = Some(format!("{}: {why}", step.label));
                    break;
                }
            }
        }
        let changes = state
            .changes
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default();
        let mut s = summary(outcome, error);
        s.steps = records;
        s.changes = changes;
        // The cooldown follows a change: a run that only looked leaves the next one free.
        if outcome.ran()
            && !dry_run
            && !s.changes.is_empty()
            && let Some(cooldown) = playbook.safety.cooldown
        {
            let until = now_ms() + i64::try_from(cooldown.as_millis()).unwrap_or(i64::MAX / 4);
            store.set_cooldown(&playbook.name, &target, until).await?;
        }
        let lease_id = state
            .lease
            .as_ref()
            .map(|g| (g.lease().key, g.lease().token));
        if let Some(g) = &state.lease {
            if outcome == Outcome::LostLease {
                self.inner.metrics.lease_lost(&target);
            }
            g.release().await?;
        }
        self.finish(run_id, &s, lease_id).await?;
        Ok(s)
    }

    /// Approval, cooldown and max-runs; `Some` when the run must not go ahead.
    async fn gates(
        &self,
        playbook: &Playbook,
        cx: &Context<'_>,
        target: &str,
        dry_run: bool,
    ) -> Result<Option<(Outcome, String)>, RunError> {
        if let Some(approval) = &playbook.safety.approval {
            let needed = match &approval.when {
                None => true,
                Some(when) => match super::scripting().eval(&when.ast, cx) {
                    Ok(v) => v.as_bool().unwrap_or(true),
                    Err(e) => {
                        return Ok(Some((
                            Outcome::Failed,
                            format!("safety.approval.when: {e}"),
                        )));
                    }
                },
            };
            if needed && !dry_run {
                return Ok(Some((
                    Outcome::NeedsApproval,
                    format!(
                        "this run needs approval by {}; run it with --dry-run to see what it would do",
                        if approval.roles.is_empty() {
                            "an operator".to_string()
                        } else {
                            approval.roles.join(" or ")
                        }
                    ),
                )));
            }
        }
        if dry_run {
            return Ok(None);
        }
        let store = &self.inner.store;
        let now = now_ms();
        if playbook.safety.cooldown.is_some()
            && let Some(until) = store.cooldown_until(&playbook.name, target).await?
            && until > now
        {
            return Ok(Some((
                Outcome::Cooldown,
                format!(
                    "cooling down for `{target}` until {} ({}s from now)",
                    format_ms(until),
                    (until - now + 999) / 1000
                ),
            )));
        }
        if let Some(max) = playbook.safety.max_runs {
            let since = now - i64::try_from(max.window.as_millis()).unwrap_or(i64::MAX / 4);
            // This run is already recorded as running, so it counts itself.
            let n = store
                .count_runs_since(&playbook.name, target, since)
                .await?;
            if n > u64::from(max.count) {
                return Ok(Some((
                    Outcome::RateLimited,
                    format!(
                        "max-runs: {} runs for `{target}` in the last {} already",
                        max.count,
                        humantime::format_duration(max.window)
                    ),
                )));
            }
        }
        Ok(None)
    }

    async fn finish(
        &self,
        run_id: i64,
        s: &RunSummary,
        lease: Option<(String, i64)>,
    ) -> Result<(), StoreError> {
        let store = &self.inner.store;
        store
            .finish_run(
                run_id,
                &Finish {
                    outcome: s.outcome.as_str().into(),
                    error: s.error.clone(),
                    changes: serde_json::Value::Array(s.changes.clone()),
                    lease,
                    finished_at: now_ms(),
                },
            )
            .await?;
        store
            .audit(&AuditEntry {
                at: now_ms(),
                agent: self.inner.agent.clone(),
                run_id: Some(run_id),
                event: "run-finished".into(),
                detail: serde_json::json!({
                    "playbook": s.playbook, "outcome": s.outcome.as_str(), "error": s.error,
                }),
            })
            .await?;
        self.inner.metrics.run(&s.playbook, s.outcome.as_str());
        match s.outcome {
            Outcome::Succeeded => {
                tracing::info!(playbook = %s.playbook, run_id, "run succeeded");
            }
            other => {
                tracing::info!(playbook = %s.playbook, run_id, outcome = other.as_str(), error = s.error.as_deref().unwrap_or(""), "run did not succeed");
            }
        }
        Ok(())
    }

    /// Run one step: condition, inputs, the work itself under the step's timeout.
    async fn step(
        &self,
        state: &Arc<RunState>,
        step: &Step,
        idx: usize,
        cx: &Context<'_>,
    ) -> (StepRecord, Option<Dynamic>, Option<StepFailure>) {
        let started_at = now_ms();
        let clock = Instant::now();
        let uses = match &step.run {
            StepRun::Builtin(b) => b.name().to_string(),
            StepRun::Action { plugin, .. } => plugin.clone(),
            StepRun::Script(_) => "script".to_string(),
        };
        let mut record = StepRecord {
            idx: idx as i64,
            step: step.label.clone(),
            uses,
            input: serde_json::Value::Null,
            output: serde_json::Value::Null,
            outcome: "succeeded".into(),
            error: None,
            log: Vec::new(),
            started_at,
            duration_ms: 0,
        };
        let fail = |mut record: StepRecord, why: String, lost: bool| {
            record.outcome = if lost { "lost-lease" } else { "failed" }.into();
            record.error = Some(why.clone());
            record.duration_ms = clock.elapsed().as_millis() as i64;
            let failure = if lost {
                StepFailure::LostLease(why)
            } else {
                StepFailure::Failed(why)
            };
            (record, None, Some(failure))
        };
        if let Some(cond) = &step.condition {
            match super::scripting().eval(&cond.ast, cx) {
                Ok(v) => match v.as_bool() {
                    Ok(true) => {}
                    Ok(false) => {
                        record.outcome = "skipped".into();
                        record.duration_ms = clock.elapsed().as_millis() as i64;
                        return (record, None, None);
                    }
                    Err(t) => {
                        return fail(
                            record,
                            format!("if: must be true or false, got a {t}"),
                            false,
                        );
                    }
                },
                Err(e) => return fail(record, format!("if: {e}"), false),
            }
        }
        let mut input = serde_json::Map::new();
        for (key, t) in &step.with {
            match render(t, cx) {
                Ok(v) => {
                    input.insert(key.clone(), v);
                }
                Err(e) => return fail(record, format!("with.{key}: {e}"), false),
            }
        }
        record.input = serde_json::Value::Object(input.clone());
        let timeout = step.timeout.unwrap_or(DEFAULT_STEP_TIMEOUT);
        let work = self.work(state, step, input, cx, timeout);
        let result = match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(StepFailure::Failed(format!(
                "timed out after {}",
                humantime::format_duration(timeout)
            ))),
        };
        record.duration_ms = clock.elapsed().as_millis() as i64;
        record.log = state
            .logs
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        match result {
            Ok((output, outcome)) => {
                record.output = output.clone();
                record.outcome = outcome.into();
                let dynamic = to_dynamic(&output).unwrap_or(Dynamic::UNIT);
                (record, Some(dynamic), None)
            }
            Err(StepFailure::Failed(why)) => fail(record, why, false),
            Err(StepFailure::LostLease(why)) => fail(record, why, true),
        }
    }

    /// The step's work; returns its output and the step outcome word.
    async fn work(
        &self,
        state: &Arc<RunState>,
        step: &Step,
        input: serde_json::Map<String, serde_json::Value>,
        cx: &Context<'_>,
        timeout: Duration,
    ) -> Result<(serde_json::Value, &'static str), StepFailure> {
        let text = |key: &str| -> Result<String, StepFailure> {
            match input.get(key) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(other) => Ok(other.to_string()),
                None => Err(StepFailure::Failed(format!("needs `{key}`"))),
            }
        };
        match &step.run {
            StepRun::Builtin(Builtin::Stats) => {
                let stats = self
                    .inner
                    .runtime
                    .stats(&text("connection")?, &text("queue")?)
                    .await
                    .map_err(|e| self.call_failed(e))?;
                Ok((stats_json(&stats), "succeeded"))
            }
            StepRun::Builtin(Builtin::List) => {
                let names = self
                    .inner
                    .runtime
                    .list(&text("connection")?, &text("pattern")?)
                    .await
                    .map_err(|e| self.call_failed(e))?;
                Ok((serde_json::json!(names), "succeeded"))
            }
            StepRun::Builtin(Builtin::Log) => {
                let message = text("message")?;
                let level = input
                    .get("level")
                    .and_then(|l| l.as_str())
                    .unwrap_or("info");
                match level {
                    "error" => {
                        tracing::error!(playbook = %state.playbook, run_id = state.run_id, "{message}")
                    }
                    "warn" => {
                        tracing::warn!(playbook = %state.playbook, run_id = state.run_id, "{message}")
                    }
                    _ => {
                        tracing::info!(playbook = %state.playbook, run_id = state.run_id, "{message}")
                    }
                }
                Ok((serde_json::json!({ "message": message }), "succeeded"))
            }
            StepRun::Builtin(Builtin::Sleep) => {
                let text = text("duration")?;
                let d = humantime::parse_duration(&text).map_err(|e| {
                    StepFailure::Failed(format!("`{text}` is not a duration ({e})"))
                })?;
                if !d.is_zero() {
                    tokio::time::sleep(d).await;
                }
                Ok((
                    serde_json::json!({ "slept_ms": d.as_millis() as u64 }),
                    "succeeded",
                ))
            }
            StepRun::Action { plugin, dry_run } => {
                state
                    .action(
                        plugin,
                        *dry_run,
                        serde_json::Value::Object(input),
                        &step.label,
                    )
                    .await
            }
            StepRun::Script(expr) => {
                let host: Arc<dyn ScriptHost> = Arc::new(ScriptBridge {
                    state: state.clone(),
                    handle: tokio::runtime::Handle::current(),
                    step: step.label.clone(),
                });
                let ast = expr.ast.clone();
                let (params, trigger, steps) =
                    (cx.params.clone(), cx.trigger.clone(), cx.steps.clone());
                let deadline = Instant::now() + timeout;
                let out = tokio::task::spawn_blocking(move || {
                    let cx = Context {
                        params: &params,
                        trigger: &trigger,
                        steps: &steps,
                    };
                    super::scripting()
                        .run_script(&ast, &cx, host, deadline)
                        .and_then(|v| to_json(&v))
                })
                .await
                .map_err(|e| StepFailure::Failed(format!("script stopped: {e}")))?;
                if state
                    .change_refused
                    .load(std::sync::atomic::Ordering::SeqCst)
                {
                    let why = out.err().unwrap_or_else(|| "lost its lease".into());
                    return Err(StepFailure::LostLease(why));
                }
                out.map(|v| (v, "succeeded")).map_err(StepFailure::Failed)
            }
        }
    }

    fn call_failed(&self, e: CallError) -> StepFailure {
        self.inner.metrics.plugin_failure(e.plugin(), e.kind());
        StepFailure::Failed(e.to_string())
    }
}

impl RunState {
    /// Call an action: fenced by the lease, audited, and in a dry run either told to change
    /// nothing or not called at all.
    async fn action(
        &self,
        plugin: &str,
        supports_dry_run: bool,
        mut params: serde_json::Value,
        step: &str,
    ) -> Result<(serde_json::Value, &'static str), StepFailure> {
        let inner = &self.executor.inner;
        let entry = AuditEntry {
            at: now_ms(),
            agent: inner.agent.clone(),
            run_id: Some(self.run_id),
            event: if self.dry_run {
                "would-change"
            } else {
                "change"
            }
            .into(),
            detail: serde_json::json!({ "step": step, "plugin": plugin, "params": params }),
        };
        if self.dry_run {
            inner.store.audit(&entry).await.map_err(store_failed)?;
            if !supports_dry_run {
                let change = serde_json::json!({
                    "step": step, "plugin": plugin, "params": params,
                    "dry_run": true, "called": false,
                });
                self.push_change(change);
                return Ok((
                    serde_json::json!({
                        "skipped": format!("dry run: `{plugin}` has no dry-run mode, so it was not called")
                    }),
                    "dry-run",
                ));
            }
            if let serde_json::Value::Object(map) = &mut params {
                map.insert("dry-run".into(), serde_json::Value::Bool(true));
            }
        } else if let Some(guard) = &self.lease {
            if !guard.fence(&entry).await.map_err(store_failed)? {
                self.change_refused
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                let lease = guard.lease();
                return Err(StepFailure::LostLease(format!(
                    "lost the lease on `{}` (fencing token {}) before calling `{plugin}`; another \
                     run holds it now, so this run stops without the change",
                    lease.key, lease.token
                )));
            }
        } else {
            inner.store.audit(&entry).await.map_err(store_failed)?;
        }
        let call = inner.runtime.call_action(plugin, &params.to_string()).await;
        if let Ok(mut logs) = self.logs.lock() {
            logs.extend(call.logs.iter().map(|l| format!("{plugin}: {}", l.message)));
        }
        let report = call.outcome.map_err(|e| self.executor.call_failed(e))?;
        let report: serde_json::Value =
            serde_json::from_str(&report).unwrap_or(serde_json::Value::String(report));
        self.push_change(serde_json::json!({
            "step": step, "plugin": plugin, "params": params,
            "dry_run": self.dry_run, "report": report,
        }));
        Ok((report, if self.dry_run { "dry-run" } else { "succeeded" }))
    }

    fn push_change(&self, change: serde_json::Value) {
        if let Ok(mut c) = self.changes.lock() {
            c.push(change);
        }
    }
}

fn store_failed(e: StoreError) -> StepFailure {
    StepFailure::Failed(e.to_string())
}

/// A script's way to the agent: blocking calls from Rhai's thread into the async runtime.
struct ScriptBridge {
    state: Arc<RunState>,
    handle: tokio::runtime::Handle,
    step: String,
}

impl ScriptHost for ScriptBridge {
    fn stats(&self, connection: &str, queue: &str) -> Result<serde_json::Value, String> {
        let runtime = &self.state.executor.inner.runtime;
        self.handle
            .block_on(runtime.stats(connection, queue))
            .map(|s| stats_json(&s))
            .map_err(|e| e.to_string())
    }

    fn list(&self, connection: &str, pattern: &str) -> Result<Vec<String>, String> {
        let runtime = &self.state.executor.inner.runtime;
        self.handle
            .block_on(runtime.list(connection, pattern))
            .map_err(|e| e.to_string())
    }

    fn log(&self, message: &str) {
        tracing::info!(playbook = %self.state.playbook, run_id = self.state.run_id, step = %self.step, "{message}");
        if let Ok(mut logs) = self.state.logs.lock() {
            logs.push(message.to_string());
        }
    }

    fn warn(&self, message: &str) {
        tracing::warn!(playbook = %self.state.playbook, run_id = self.state.run_id, step = %self.step, "{message}");
        if let Ok(mut logs) = self.state.logs.lock() {
            logs.push(format!("warning: {message}"));
        }
    }

    fn action(&self, plugin: &str, params: serde_json::Value) -> Result<serde_json::Value, String> {
        let inner = &self.state.executor.inner;
        let plugin_info = inner.runtime.plugin(plugin).map_err(|e| e.to_string())?;
        if plugin_info.manifest.kind != crate::PluginKind::Action {
            return Err(format!("`{plugin}` is an adapter, not an action"));
        }
        let dry_run = plugin_info.manifest.dry_run;
        self.handle
            .block_on(self.state.action(plugin, dry_run, params, &self.step))
            .map(|(v, _)| v)
            .map_err(|f| match f {
                StepFailure::Failed(why) | StepFailure::LostLease(why) => why,
            })
    }
}

/// Params after defaults and conversion to their declared types.
fn bind_params(
    playbook: &Playbook,
    given: &BTreeMap<String, serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>, RunError> {
    let bad = |message: String| RunError::Params {
        playbook: playbook.name.clone(),
        message,
    };
    let declared: Vec<String> = playbook.params.keys().cloned().collect();
    for name in given.keys() {
        if !playbook.params.contains_key(name) {
            let known = if declared.is_empty() {
                "it takes no params".to_string()
            } else {
                format!("it takes {}", declared.join(", "))
            };
            return Err(bad(format!(
                "unknown param `{name}`{}; {known}",
                suggest(name, &declared)
            )));
        }
    }
    let mut bound = serde_json::Map::new();
    for (name, p) in &playbook.params {
        let value = match given.get(name) {
            Some(v) => p.ty.coerce(v).ok_or_else(|| {
                bad(format!(
                    "param `{name}` is {} {}; `{}` is not one",
                    if p.ty == super::ParamType::Int {
                        "an"
                    } else {
                        "a"
                    },
                    p.ty,
                    v.as_str().map_or_else(|| v.to_string(), str::to_string)
                ))
            })?,
            None => p.default.clone().ok_or_else(|| {
                bad(format!(
                    "param `{name}` ({}) has no default; pass --param {name}=…",
                    p.ty
                ))
            })?,
        };
        bound.insert(name.clone(), value);
    }
    Ok(bound)
}

fn json_map(m: &serde_json::Map<String, serde_json::Value>) -> Map {
    m.iter()
        .map(|(k, v)| (k.as_str().into(), to_dynamic(v).unwrap_or(Dynamic::UNIT)))
        .collect()
}

fn trigger_map(req: &RunRequest) -> Map {
    let mut m = Map::new();
    m.insert("kind".into(), Dynamic::from(req.trigger.clone()));
    m.insert("who".into(), Dynamic::from(req.who.clone()));
    m.insert("dry_run".into(), Dynamic::from(req.dry_run));
    m.insert(
        "tick".into(),
        req.tick_at.map_or(Dynamic::UNIT, Dynamic::from),
    );
    let labels: Map = req
        .labels
        .iter()
        .map(|(k, v)| (k.as_str().into(), Dynamic::from(v.clone())))
        .collect();
    m.insert("labels".into(), Dynamic::from_map(labels));
    m
}

/// Evaluate the expressions in a template.
fn render(t: &Template, cx: &Context<'_>) -> Result<serde_json::Value, String> {
    match t {
        Template::Literal(v) => Ok(v.clone()),
        Template::Expr(e) => to_json(&super::scripting().eval(&e.ast, cx)?),
        Template::Text(parts) => {
            let mut out = String::new();
            for p in parts {
                match p {
                    Part::Text(s) => out.push_str(s),
                    Part::Expr(e) => {
                        let v = super::scripting().eval(&e.ast, cx)?;
                        if v.is_unit() {
                            continue;
                        }
                        out.push_str(&v.to_string());
                    }
                }
            }
            Ok(serde_json::Value::String(out))
        }
        Template::List(items) => items
            .iter()
            .map(|i| render(i, cx))
            .collect::<Result<Vec<_>, _>>()
            .map(serde_json::Value::Array),
        Template::Map(entries) => entries
            .iter()
            .map(|(k, v)| render(v, cx).map(|v| (k.clone(), v)))
            .collect::<Result<serde_json::Map<_, _>, _>>()
            .map(serde_json::Value::Object),
    }
}

/// Stats as a step's output: `extra` becomes a map so expressions can say `extra.lag`.
fn stats_json(s: &crate::QueueStats) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(map) = &mut v {
        let extra: serde_json::Map<String, serde_json::Value> = s
            .extra
            .iter()
            .map(|(k, f)| (k.clone(), serde_json::json!(f)))
            .collect();
        map.insert("extra".into(), serde_json::Value::Object(extra));
    }
    v
}

fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}
