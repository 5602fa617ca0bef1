//! Two `qmedic serve` agents on one PostgreSQL store: each scheduled tick runs once fleet-wide,
//! and when the lease holder is killed mid-run the other agent takes over after the TTL while
//! the dead holder's fencing token is refused.
//!
//! PostgreSQL comes from the machine (`QMEDIC_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432`); each test makes and drops its own database.

use std::path::{Path, PathBuf};
use std::time::Duration;

use qmedic_tests::agent::{Agent, free_port};
use sqlx::{PgPool, Row};

const BIN: &str = env!("CARGO_BIN_EXE_qmedic");

fn server() -> String {
    std::env::var("QMEDIC_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A fresh database, dropped when the test ends.
struct Database {
    name: String,
    url: String,
    admin: PgPool,
}

impl Database {
    async fn create(tag: &str) -> Database {
        let admin = PgPool::connect(&format!("{}/postgres", server()))
            .await
            .expect("PostgreSQL is reachable (set QMEDIC_TEST_POSTGRES to point elsewhere)");
        let name = format!("qmedic_{tag}_{}", std::process::id());
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await
        .expect("drop old database");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create database");
        let url = format!("{}/{name}", server());
        Database { name, url, admin }
    }

    async fn drop_it(self) {
        self.admin.close().await;
        let admin = PgPool::connect(&format!("{}/postgres", server()))
            .await
            .expect("reconnect");
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&admin)
        .await;
    }
}

/// Two agents' configs sharing `store` and one playbooks folder.
fn setup(dir: &Path, store: &str, playbook: &str) -> [(PathBuf, u16); 2] {
    let books = dir.join("playbooks");
    std::fs::create_dir_all(&books).expect("playbooks dir");
    std::fs::write(books.join("playbook.yaml"), playbook).expect("write playbook");
    ["agent-a", "agent-b"].map(|name| {
        let port = free_port();
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\nstore: {store}\nagent: {name}\nplaybooks: [playbooks]\nruntime:\n  cache_dir: {}\n",
                dir.join("cache").display()
            ),
        )
        .expect("write config");
        (config, port)
    })
}

struct Run {
    agent: String,
    tick: i64,
    outcome: String,
    started: i64,
    token: Option<i64>,
}

async fn runs(pool: &PgPool, playbook: &str) -> Vec<Run> {
    sqlx::query(
        "SELECT agent, tick_at, outcome, started_at, lease_token FROM runs \
         WHERE playbook = $1 ORDER BY tick_at",
    )
    .bind(playbook)
    .fetch_all(pool)
    .await
    .expect("read runs")
    .iter()
    .map(|r| Run {
        agent: r.get("agent"),
        tick: r.get::<Option<i64>, _>("tick_at").unwrap_or_default(),
        outcome: r.get("outcome"),
        started: r.get("started_at"),
        token: r.get("lease_token"),
    })
    .collect()
}

/// The first run of `playbook` that `pick` accepts, polling every 200 ms for up to `limit`.
async fn wait_for_run(
    pool: &PgPool,
    playbook: &str,
    limit: Duration,
    pick: impl Fn(&Run) -> bool,
) -> Run {
    let started = std::time::Instant::now();
    loop {
        if let Some(r) = runs(pool, playbook).await.into_iter().find(|r| pick(r)) {
            return r;
        }
        assert!(
            started.elapsed() < limit,
            "timed out waiting for a run of {playbook}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_scheduled_tick_runs_once_across_two_agents() {
    let db = Database::create("ticks").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let playbook = "name: every-second\non:\n  schedule: \"* * * * * *\"\nsteps:\n  - uses: log\n    with: { message: tick }\n  - uses: sleep\n    with: { duration: 100ms }\n";
    let [(a, pa), (b, pb)] = setup(dir.path(), &db.url, playbook);
    let agents = [
        Agent::start(Path::new(BIN), &a, pa),
        Agent::start(Path::new(BIN), &b, pb),
    ];
    tokio::time::sleep(Duration::from_secs(30)).await;
    drop(agents);
    let pool = PgPool::connect(&db.url).await.expect("connect");
    let runs = runs(&pool, "every-second").await;
    pool.close().await;
    db.drop_it().await;

    assert!(
        runs.len() >= 27,
        "about 30 ticks in 30 seconds, got {}",
        runs.len()
    );
    let mut ticks: Vec<i64> = runs.iter().map(|r| r.tick).collect();
    ticks.dedup();
    assert_eq!(ticks.len(), runs.len(), "a tick ran twice");
    for r in &runs[..runs.len() - 1] {
        assert_eq!(r.outcome, "succeeded", "tick {} by {}", r.tick, r.agent);
    }
    let gaps: Vec<i64> = ticks
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d != 1_000)
        .collect();
    assert!(
        gaps.len() <= 1 && gaps.iter().all(|d| *d <= 2_000),
        "ticks must follow each other with at most one missed around start-up: {gaps:?}"
    );
    let by_a = runs.iter().filter(|r| r.agent == "agent-a").count();
    println!(
        "ticks: {} (agent-a {by_a}, agent-b {})",
        runs.len(),
        runs.len() - by_a
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_lease_holder_is_taken_over_after_the_ttl_and_fenced_off() {
    let db = Database::create("lease").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let playbook = "name: long\non:\n  schedule: \"* * * * * *\"\nsafety:\n  lock: fleet/long\n  lock-ttl: 3s\nsteps:\n  - uses: sleep\n    with: { duration: 4s }\n";
    let [(a, pa), (b, pb)] = setup(dir.path(), &db.url, playbook);
    let mut agents = [
        Agent::start(Path::new(BIN), &a, pa),
        Agent::start(Path::new(BIN), &b, pb),
    ];
    let pool = PgPool::connect(&db.url).await.expect("connect");
    // Whoever holds the lease has a run going; find it and kill that agent mid-run.
    let holder = wait_for_run(&pool, "long", Duration::from_secs(20), |r| {
        r.outcome == "running"
    })
    .await
    .agent;
    let lease =
        sqlx::query("SELECT holder, token, expires_at FROM leases WHERE lease_key = 'fleet/long'")
            .fetch_one(&pool)
            .await
            .expect("the lease row");
    let (dead_holder, dead_token): (String, i64) = (lease.get("holder"), lease.get("token"));
    assert!(
        dead_holder.starts_with(&holder),
        "{dead_holder} is {holder}'s"
    );
    let victim = usize::from(holder == "agent-b");
    agents[victim].kill();
    let killed_at = qmedic::store::now_ms();
    let expired_at: i64 =
        sqlx::query("SELECT expires_at FROM leases WHERE lease_key = 'fleet/long'")
            .fetch_one(&pool)
            .await
            .expect("lease")
            .get("expires_at");
    let survivor = if victim == 0 { "agent-b" } else { "agent-a" };
    // The survivor's runs finish with a newer token once it has taken over.
    let taken_over = wait_for_run(&pool, "long", Duration::from_secs(30), |r| {
        r.agent == survivor && r.outcome == "succeeded" && r.started > killed_at
    })
    .await;
    assert_eq!(
        taken_over.token,
        Some(dead_token + 1),
        "one takeover, one new token"
    );
    let all = runs(&pool, "long").await;
    for r in all
        .iter()
        .filter(|r| r.agent == survivor && r.started > killed_at)
    {
        if r.started + 50 < expired_at - 1_000 {
            assert_eq!(
                r.outcome, "locked",
                "before the TTL ran out the lock held: {}",
                r.tick
            );
        }
    }
    // The dead holder's token is refused if it ever writes again.
    let store = qmedic::store::open(&db.url).await.expect("store");
    let late = qmedic::store::Lease {
        key: "fleet/long".into(),
        holder: dead_holder,
        token: dead_token,
        expires_at: expired_at,
    };
    let entry = qmedic::store::AuditEntry {
        at: qmedic::store::now_ms(),
        agent: holder.clone(),
        run_id: None,
        event: "change".into(),
        detail: serde_json::json!({ "late": true }),
    };
    assert!(
        !store
            .audit_fenced(&late, qmedic::store::now_ms(), &entry)
            .await
            .expect("store"),
        "the late writer is refused"
    );
    drop(agents);
    pool.close().await;
    db.drop_it().await;
}
