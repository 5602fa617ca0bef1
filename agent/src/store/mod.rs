//! Where runs, the audit log, cooldown marks and leases live: SQLite for one agent, PostgreSQL
//! for a fleet, behind one trait.

mod sql;

use std::sync::Arc;

use serde::Serialize;

pub use sql::SqlStore;

/// A run as it starts.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// The playbook's name.
    pub playbook: String,
    /// `manual`, `schedule`, `alert` or `chat`.
    pub trigger: String,
    /// Who asked: a user, `schedule`, an alert's name.
    pub who: String,
    /// The agent running it.
    pub agent: String,
    /// The scheduled tick it claims (ms since the epoch), for scheduled runs.
    pub tick_at: Option<i64>,
    /// Params after defaults and conversion.
    pub params: serde_json::Value,
    /// Whether it changes nothing.
    pub dry_run: bool,
    /// What its lock and cooldown are about: the lock key, or the playbook's name.
    pub target: String,
    /// When it started (ms since the epoch).
    pub started_at: i64,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Finish {
    /// `succeeded`, `failed`, `cooldown`, `locked`, `rate-limited`, `needs-approval`,
    /// `lost-lease` or `invalid`.
    pub outcome: String,
    /// Why it failed or was skipped.
    pub error: Option<String>,
    /// What it changed, or in a dry run would have changed.
    pub changes: serde_json::Value,
    /// The lease it held: key and fencing token.
    pub lease: Option<(String, i64)>,
    /// When it ended (ms since the epoch).
    pub finished_at: i64,
}

/// One step of a run, as recorded.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepRecord {
    /// Position in the playbook, from 0.
    pub idx: i64,
    /// The step's id or `step N`.
    pub step: String,
    /// What it ran: a built-in, a plugin or `script`.
    pub uses: String,
    /// Its inputs after expressions were evaluated.
    pub input: serde_json::Value,
    /// What it returned.
    pub output: serde_json::Value,
    /// `succeeded`, `failed`, `skipped` or `dry-run`.
    pub outcome: String,
    /// Why it failed.
    pub error: Option<String>,
    /// What it logged: a script's `log()` lines, an action plugin's log.
    pub log: Vec<String>,
    /// When it started (ms since the epoch).
    pub started_at: i64,
    /// How long it took.
    pub duration_ms: i64,
}

/// A recorded run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunRecord {
    /// The run's number in this store.
    pub id: i64,
    /// The playbook's name.
    pub playbook: String,
    /// What started it.
    pub trigger: String,
    /// Who asked.
    pub who: String,
    /// The agent that ran it.
    pub agent: String,
    /// The scheduled tick it claimed (ms since the epoch).
    pub tick_at: Option<i64>,
    /// Its params.
    pub params: serde_json::Value,
    /// Whether it was a dry run.
    pub dry_run: bool,
    /// Lock key or playbook name.
    pub target: String,
    /// The lease key it held.
    pub lease_key: Option<String>,
    /// The fencing token of its lease.
    pub lease_token: Option<i64>,
    /// `running` until it ends; see [`Finish::outcome`].
    pub outcome: String,
    /// Why it failed or was skipped.
    pub error: Option<String>,
    /// What it changed.
    pub changes: serde_json::Value,
    /// When it started (ms since the epoch).
    pub started_at: i64,
    /// When it ended (ms since the epoch).
    pub finished_at: Option<i64>,
    /// Its steps, when asked for one run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    /// Only this playbook's.
    pub playbook: Option<String>,
    /// At most this many, newest first.
    pub limit: u32,
}

/// An entry of the append-only audit log.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditEntry {
    /// When (ms since the epoch).
    pub at: i64,
    /// Which agent.
    pub agent: String,
    /// The run it belongs to.
    pub run_id: Option<i64>,
    /// What happened: `run-started`, `change`, `would-change`, `run-finished`, ...
    pub event: String,
    /// The details, as JSON.
    pub detail: serde_json::Value,
}

/// A lease on a lock key. The token grows with every new holder, so a holder whose lease
/// expired and was taken over can be told apart from the new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// The lock key.
    pub key: String,
    /// Who holds it (agent and run).
    pub holder: String,
    /// The fencing token.
    pub token: i64,
    /// When it expires unless renewed (ms since the epoch).
    pub expires_at: i64,
}

/// A store that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened.
    #[error("cannot open the store {url}: {source}; check `store:` in the config")]
    Open {
        /// The path or URL, without its password.
        url: String,
        /// Why.
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate the store {url}: {source}")]
    Migrate {
        /// The path or URL, without its password.
        url: String,
        /// Why.
        source: sqlx::migrate::MigrateError,
    },
    /// A read or write failed.
    #[error("store {what} failed: {source}")]
    Query {
        /// What was being done.
        what: &'static str,
        /// Why.
        source: sqlx::Error,
    },
}

/// Runs, audit, cooldowns and leases. Every method is one short transaction, so several agents
/// can share one PostgreSQL store.
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Record a run as started. `None` when its scheduled tick was already claimed.
    async fn start_run(&self, run: &NewRun) -> Result<Option<i64>, StoreError>;

    /// Record one step of a run.
    async fn record_step(&self, run_id: i64, step: &StepRecord) -> Result<(), StoreError>;

    /// Record how a run ended.
    async fn finish_run(&self, run_id: i64, finish: &Finish) -> Result<(), StoreError>;

    /// Runs, newest first, without their steps.
    async fn runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError>;

    /// One run with its steps.
    async fn run(&self, id: i64) -> Result<Option<RunRecord>, StoreError>;

    /// The latest tick of `playbook` that some agent claimed.
    async fn last_tick(&self, playbook: &str) -> Result<Option<i64>, StoreError>;

    /// Runs of `playbook` for `target` that started at or after `since` and were not skipped or
    /// dry runs.
    async fn count_runs_since(
        &self,
        playbook: &str,
        target: &str,
        since: i64,
    ) -> Result<u64, StoreError>;

    /// When the cooldown of `playbook` for `target` ends, if one was set.
    async fn cooldown_until(&self, playbook: &str, target: &str)
    -> Result<Option<i64>, StoreError>;

    /// Start a cooldown ending at `until`.
    async fn set_cooldown(
        &self,
        playbook: &str,
        target: &str,
        until: i64,
    ) -> Result<(), StoreError>;

    /// Take the lease on `key` if it is free or expired. `None` when someone else holds it.
    async fn acquire_lease(
        &self,
        key: &str,
        holder: &str,
        ttl_ms: i64,
        now: i64,
    ) -> Result<Option<Lease>, StoreError>;

    /// Extend a lease still held with this token; `None` when it was lost.
    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl_ms: i64,
        now: i64,
    ) -> Result<Option<Lease>, StoreError>;

    /// Give a lease back early.
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError>;

    /// Append `entry` to the audit log only if `lease` is still the live lease on its key: the
    /// fencing check before a change. `false` means the lease was lost and the change must not
    /// happen.
    async fn audit_fenced(
        &self,
        lease: &Lease,
        now: i64,
        entry: &AuditEntry,
    ) -> Result<bool, StoreError>;

    /// Append to the audit log.
    async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// The newest audit entries, newest first.
    async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;

    /// Mark runs that `agent` left `running` (it was stopped mid-run) as `abandoned`.
    async fn abandon_runs(&self, agent: &str, now: i64) -> Result<u64, StoreError>;
}

/// Open the store `config.store` names, creating and migrating it as needed.
pub async fn open(location: &str) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(SqlStore::open(location).await?))
}

/// Milliseconds since the epoch, the store's unit of time.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
