//! [`Store`] over sqlx's `Any` driver: one set of queries for SQLite and PostgreSQL (both take
//! `$n` parameters, `ON CONFLICT` and `RETURNING`); only the schema differs, per backend.

use std::borrow::Cow;
use std::sync::Once;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor, Row, SqlSafeStr};

use super::{
    AuditEntry, Finish, Lease, NewRun, RunQuery, RunRecord, StepRecord, Store, StoreError,
};

/// The SQL store: SQLite when `store:` is a path or `sqlite://` URL, PostgreSQL for `postgres://`.
#[derive(Debug)]
pub struct SqlStore {
    pool: AnyPool,
    backend: &'static str,
}

fn query_error(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { what, source }
}

fn json_text(v: &serde_json::Value) -> String {
    v.to_string()
}

fn parse_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::String(text.to_string()))
}

/// The location without a password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

impl SqlStore {
    /// Open (and for SQLite create) the store at `location`, then bring its schema up to date.
    pub async fn open(location: &str) -> Result<SqlStore, StoreError> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let postgres = location.starts_with("postgres://") || location.starts_with("postgresql://");
        let url = if postgres || location.starts_with("sqlite:") {
            location.to_string()
        } else {
            let path = location
                .replace('%', "%25")
                .replace('?', "%3F")
                .replace('#', "%23");
            format!("sqlite://{path}?mode=rwc")
        };
        let open_error = |source| StoreError::Open {
            url: redact(location),
            source,
        };
        let mut options = AnyPoolOptions::new().max_connections(if postgres { 8 } else { 4 });
        if !postgres {
            // WAL lets `qmedic run` and `qmedic history` work beside `serve`; NORMAL syncs at
            // checkpoints instead of every write, which WAL keeps safe from corruption.
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
                        .await
                        .map(|_| ())
                })
            });
        }
        let pool = options.connect(&url).await.map_err(open_error)?;
        let backend = if postgres { "postgres" } else { "sqlite" };
        let sql = if postgres {
            include_str!("../../migrations/postgres/0001_runs.sql")
        } else {
            include_str!("../../migrations/sqlite/0001_runs.sql")
        };
        let migrator = Migrator::with_migrations(vec![Migration::new(
            1,
            Cow::Borrowed("runs"),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )]);
        migrator
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                url: redact(location),
                source,
            })?;
        Ok(SqlStore { pool, backend })
    }
}

const RUN_COLUMNS: &str = "id, playbook, trigger_kind, who, agent, tick_at, params, dry_run, \
     target, lease_key, lease_token, outcome, error, changes, started_at, finished_at";

fn run_from_row(row: &AnyRow) -> Result<RunRecord, sqlx::Error> {
    Ok(RunRecord {
        id: row.try_get("id")?,
        playbook: row.try_get("playbook")?,
        trigger: row.try_get("trigger_kind")?,
        who: row.try_get("who")?,
        agent: row.try_get("agent")?,
        tick_at: row.try_get("tick_at")?,
        params: parse_json(&row.try_get::<String, _>("params")?),
        dry_run: row.try_get::<i64, _>("dry_run")? != 0,
        target: row.try_get("target")?,
        lease_key: row.try_get("lease_key")?,
        lease_token: row.try_get("lease_token")?,
        outcome: row.try_get("outcome")?,
        error: row.try_get("error")?,
        changes: parse_json(&row.try_get::<String, _>("changes")?),
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        steps: Vec::new(),
    })
}

#[async_trait::async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        self.backend
    }

    async fn start_run(&self, run: &NewRun) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "INSERT INTO runs (playbook, trigger_kind, who, agent, tick_at, params, dry_run, \
             target, outcome, changes, started_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'running', '[]', $9) \
             ON CONFLICT (playbook, tick_at) DO NOTHING RETURNING id",
        )
        .bind(&run.playbook)
        .bind(&run.trigger)
        .bind(&run.who)
        .bind(&run.agent)
        .bind(run.tick_at)
        .bind(json_text(&run.params))
        .bind(i64::from(run.dry_run))
        .bind(&run.target)
        .bind(run.started_at)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_error("recording a run"))?;
        row.map(|r| r.try_get::<i64, _>("id"))
            .transpose()
            .map_err(query_error("recording a run"))
    }

    async fn record_step(&self, run_id: i64, step: &StepRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO steps (run_id, idx, step, uses, input, output, outcome, error, log, \
             started_at, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(run_id)
        .bind(step.idx)
        .bind(&step.step)
        .bind(&step.uses)
        .bind(json_text(&step.input))
        .bind(json_text(&step.output))
        .bind(&step.outcome)
        .bind(step.error.as_deref())
        .bind(serde_json::to_string(&step.log).unwrap_or_default())
        .bind(step.started_at)
        .bind(step.duration_ms)
        .execute(&self.pool)
        .await
        .map_err(query_error("recording a step"))?;
        Ok(())
    }

    async fn finish_run(&self, run_id: i64, finish: &Finish) -> Result<(), StoreError> {
        let (key, token) = finish
            .lease
            .as_ref()
            .map_or((None, None), |(k, t)| (Some(k.as_str()), Some(*t)));
        sqlx::query(
            "UPDATE runs SET outcome = $1, error = $2, changes = $3, lease_key = $4, \
             lease_token = $5, finished_at = $6 WHERE id = $7",
        )
        .bind(&finish.outcome)
        .bind(finish.error.as_deref())
        .bind(json_text(&finish.changes))
        .bind(key)
        .bind(token)
        .bind(finish.finished_at)
        .bind(run_id)
        .execute(&self.pool)
        .await
        .map_err(query_error("finishing a run"))?;
        Ok(())
    }

    async fn runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        let limit = i64::from(query.limit.max(1));
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE playbook = COALESCE($1, playbook) \
             ORDER BY id DESC LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(query.playbook.as_deref())
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("listing runs"))?;
        rows.iter()
            .map(run_from_row)
            .collect::<Result<_, _>>()
            .map_err(query_error("listing runs"))
    }

    async fn run(&self, id: i64) -> Result<Option<RunRecord>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("reading a run"))?
        else {
            return Ok(None);
        };
        let mut run = run_from_row(&row).map_err(query_error("reading a run"))?;
        let steps = sqlx::query(
            "SELECT idx, step, uses, input, output, outcome, error, log, started_at, duration_ms \
             FROM steps WHERE run_id = $1 ORDER BY idx",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("reading a run's steps"))?;
        run.steps = steps
            .iter()
            .map(|r| {
                Ok(StepRecord {
                    idx: r.try_get("idx")?,
                    step: r.try_get("step")?,
                    uses: r.try_get("uses")?,
                    input: parse_json(&r.try_get::<String, _>("input")?),
                    output: parse_json(&r.try_get::<String, _>("output")?),
                    outcome: r.try_get("outcome")?,
                    error: r.try_get("error")?,
                    log: serde_json::from_str(&r.try_get::<String, _>("log")?).unwrap_or_default(),
                    started_at: r.try_get("started_at")?,
                    duration_ms: r.try_get("duration_ms")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_error("reading a run's steps"))?;
        Ok(Some(run))
    }

    async fn last_tick(&self, playbook: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT MAX(tick_at) AS tick FROM runs WHERE playbook = $1")
            .bind(playbook)
            .fetch_one(&self.pool)
            .await
            .map_err(query_error("reading the last tick"))?;
        row.try_get::<Option<i64>, _>("tick")
            .map_err(query_error("reading the last tick"))
    }

    async fn count_runs_since(
        &self,
        playbook: &str,
        target: &str,
        since: i64,
    ) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM runs WHERE playbook = $1 AND target = $2 \
             AND started_at >= $3 AND dry_run = 0 \
             AND outcome IN ('running', 'succeeded', 'failed', 'lost-lease', 'abandoned')",
        )
        .bind(playbook)
        .bind(target)
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .map_err(query_error("counting runs"))?;
        let n: i64 = row.try_get("n").map_err(query_error("counting runs"))?;
        Ok(n.max(0) as u64)
    }

    async fn cooldown_until(
        &self,
        playbook: &str,
        target: &str,
    ) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT until_at FROM cooldowns WHERE playbook = $1 AND target = $2")
            .bind(playbook)
            .bind(target)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("reading a cooldown"))?;
        row.map(|r| r.try_get::<i64, _>("until_at"))
            .transpose()
            .map_err(query_error("reading a cooldown"))
    }

    async fn set_cooldown(
        &self,
        playbook: &str,
        target: &str,
        until: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cooldowns (playbook, target, until_at) VALUES ($1, $2, $3) \
             ON CONFLICT (playbook, target) DO UPDATE SET until_at = excluded.until_at",
        )
        .bind(playbook)
        .bind(target)
        .bind(until)
        .execute(&self.pool)
        .await
        .map_err(query_error("setting a cooldown"))?;
        Ok(())
    }

    async fn acquire_lease(
        &self,
        key: &str,
        holder: &str,
        ttl_ms: i64,
        now: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let row = sqlx::query(
            "INSERT INTO leases (lease_key, holder, token, expires_at) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (lease_key) DO UPDATE SET holder = excluded.holder, \
             token = leases.token + 1, expires_at = excluded.expires_at \
             WHERE leases.expires_at < $4 RETURNING token",
        )
        .bind(key)
        .bind(holder)
        .bind(now + ttl_ms)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_error("taking a lease"))?;
        let Some(row) = row else { return Ok(None) };
        let token: i64 = row
            .try_get("token")
            .map_err(query_error("taking a lease"))?;
        Ok(Some(Lease {
            key: key.to_string(),
            holder: holder.to_string(),
            token,
            expires_at: now + ttl_ms,
        }))
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl_ms: i64,
        now: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let done = sqlx::query(
            "UPDATE leases SET expires_at = $1 \
             WHERE lease_key = $2 AND token = $3 AND expires_at >= $4",
        )
        .bind(now + ttl_ms)
        .bind(&lease.key)
        .bind(lease.token)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query_error("renewing a lease"))?;
        Ok((done.rows_affected() == 1).then(|| Lease {
            expires_at: now + ttl_ms,
            ..lease.clone()
        }))
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        // Expire it rather than delete it, so the next holder's token is still larger.
        sqlx::query("UPDATE leases SET expires_at = 0 WHERE lease_key = $1 AND token = $2")
            .bind(&lease.key)
            .bind(lease.token)
            .execute(&self.pool)
            .await
            .map_err(query_error("releasing a lease"))?;
        Ok(())
    }

    async fn audit_fenced(
        &self,
        lease: &Lease,
        now: i64,
        entry: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO audit (at, agent, run_id, event, detail) \
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM leases \
             WHERE lease_key = $6 AND token = $7 AND expires_at >= $8)",
        )
        .bind(entry.at)
        .bind(&entry.agent)
        .bind(entry.run_id)
        .bind(&entry.event)
        .bind(json_text(&entry.detail))
        .bind(&lease.key)
        .bind(lease.token)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query_error("checking a lease before a change"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit (at, agent, run_id, event, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(entry.at)
        .bind(&entry.agent)
        .bind(entry.run_id)
        .bind(&entry.event)
        .bind(json_text(&entry.detail))
        .execute(&self.pool)
        .await
        .map_err(query_error("appending to the audit log"))?;
        Ok(())
    }

    async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, agent, run_id, event, detail FROM audit ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit.max(1)))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("reading the audit log"))?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: r.try_get("at")?,
                    agent: r.try_get("agent")?,
                    run_id: r.try_get("run_id")?,
                    event: r.try_get("event")?,
                    detail: parse_json(&r.try_get::<String, _>("detail")?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_error("reading the audit log"))
    }

    async fn abandon_runs(&self, agent: &str, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE runs SET outcome = 'abandoned', finished_at = $1, \
             error = 'the agent stopped during the run' WHERE agent = $2 AND outcome = 'running'",
        )
        .bind(now)
        .bind(agent)
        .execute(&self.pool)
        .await
        .map_err(query_error("marking abandoned runs"))?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgres://qmedic:s3cret@db:5432/q"),
            "postgres://qmedic:***@db:5432/q"
        );
        assert_eq!(redact("/var/lib/qmedic.db"), "/var/lib/qmedic.db");
    }
}
