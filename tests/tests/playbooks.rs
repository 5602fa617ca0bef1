//! The runbook engine against the real sandbox and a real SQLite store: runs and their steps are
//! recorded, dry runs change nothing, scripts are bounded, and the safety gates (cooldown,
//! max-runs, locks with fencing tokens) hold.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use qmedic::playbook::{Catalog, Outcome, RunError, parse};
use qmedic::store::{AuditEntry, RunQuery, now_ms};
use qmedic::{Executor, Metrics, Playbook, Store};
use qmedic_tests::{config, plugin_entry, run_request};

struct Harness {
    executor: Executor,
    catalog: Catalog,
    store: Arc<dyn Store>,
    db: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("runs.db");
    let cfg = config(&format!(
        "connections:\n  mem: {{ kind: memory }}\nplugins:\n{}{}",
        plugin_entry("memory-adapter", ""),
        plugin_entry("noop", ""),
    ));
    let runtime = qmedic::Runtime::new(&cfg).expect("runtime");
    let catalog = Catalog::new(&runtime, &cfg);
    let store = qmedic::store::open(db.to_str().expect("utf-8 path"))
        .await
        .expect("store");
    let executor = Executor::new(runtime, store.clone(), "test-agent".into(), Metrics::new());
    Harness {
        executor,
        catalog,
        store,
        db,
        _dir: dir,
    }
}

impl Harness {
    fn playbook(&self, text: &str) -> Playbook {
        parse(text, Path::new("test.yaml"), &self.catalog)
            .unwrap_or_else(|e| panic!("test playbook is invalid: {e:?}"))
    }

    async fn run(
        &self,
        p: &Playbook,
        params: &[(&str, &str)],
        dry_run: bool,
    ) -> qmedic::RunSummary {
        self.executor
            .run(p, run_request(params, dry_run))
            .await
            .expect("run starts")
    }

    async fn audit_events(&self, run_id: i64) -> Vec<String> {
        let mut events: Vec<String> = self
            .store
            .audit_log(1_000)
            .await
            .expect("audit log")
            .into_iter()
            .filter(|e| e.run_id == Some(run_id))
            .map(|e| e.event)
            .collect();
        events.reverse();
        events
    }
}

const PIPELINE: &str = r#"
name: pipeline
params:
  n: { type: int, default: 3 }
  who: { type: string, default: ops }
steps:
  - id: first
    script: |
      let total = 0;
      for i in 1..=params.n { total += i; }
      log(`sum to ${params.n} is ${total}`);
      #{ total: total, who: params.who }
  - id: echo
    if: steps.first.total > 0
    uses: noop
    with: { doubled: "${{ steps.first.total * 2 }}", label: "for ${{ steps.first.who }}" }
  - id: never
    if: steps.echo.doubled < 0
    uses: noop
  - uses: log
    with: { message: "done: ${{ steps.echo.doubled }}" }
"#;

#[tokio::test]
async fn a_run_records_every_step_with_its_inputs_and_outputs() {
    let h = harness().await;
    let p = h.playbook(PIPELINE);
    let s = h.run(&p, &[("n", "4")], false).await;
    assert_eq!(s.outcome, Outcome::Succeeded, "{s:?}");
    let run = h
        .store
        .run(s.run_id.expect("recorded"))
        .await
        .expect("read")
        .expect("run exists");
    assert_eq!(run.outcome, "succeeded");
    assert_eq!(run.params, serde_json::json!({ "n": 4, "who": "ops" }));
    let outcomes: Vec<&str> = run.steps.iter().map(|s| s.outcome.as_str()).collect();
    assert_eq!(outcomes, ["succeeded", "succeeded", "skipped", "succeeded"]);
    assert_eq!(
        run.steps[0].output,
        serde_json::json!({ "total": 10, "who": "ops" })
    );
    assert_eq!(run.steps[0].log, ["sum to 4 is 10"]);
    // `${{ }}` alone keeps the expression's type; inside text it becomes text.
    assert_eq!(
        run.steps[1].input,
        serde_json::json!({ "doubled": 20, "label": "for ops" })
    );
    assert_eq!(
        run.steps[1].output, run.steps[1].input,
        "noop echoes its params"
    );
    assert_eq!(
        run.steps[3].output,
        serde_json::json!({ "message": "done: 20" })
    );
    assert_eq!(
        run.changes.as_array().map(Vec::len),
        Some(1),
        "{:?}",
        run.changes
    );
    assert_eq!(
        h.audit_events(run.id).await,
        ["run-started", "change", "run-finished"]
    );
}

#[tokio::test]
async fn a_dry_run_does_not_call_an_action_without_a_dry_run_mode() {
    let h = harness().await;
    // Only its first two steps: later ones read the output of the call a dry run skips.
    let p = h.playbook(PIPELINE.split("  - id: never").next().unwrap_or_default());
    let s = h.run(&p, &[], true).await;
    assert_eq!(s.outcome, Outcome::Succeeded, "{s:?}");
    assert!(s.dry_run);
    assert_eq!(s.steps[1].outcome, "dry-run");
    assert_eq!(s.changes[0]["called"], false, "{:?}", s.changes);
    assert_eq!(
        s.changes[0]["params"],
        serde_json::json!({ "doubled": 12, "label": "for ops" })
    );
    let events = h.audit_events(s.run_id.expect("recorded")).await;
    assert_eq!(events, ["run-started", "would-change", "run-finished"]);
}

#[tokio::test]
async fn params_are_typed_checked_and_suggested() {
    let h = harness().await;
    let p = h.playbook(PIPELINE);
    for (params, says) in [
        (&[("m", "1")][..], "unknown param `m`; did you mean `n`?"),
        (
            &[("n", "three")][..],
            "param `n` is an int; `three` is not one",
        ),
    ] {
        match h.executor.run(&p, run_request(params, false)).await {
            Err(RunError::Params { message, .. }) => assert!(message.contains(says), "{message}"),
            other => panic!("{params:?} must be refused, got {other:?}"),
        }
    }
    let runs = h
        .store
        .runs(&RunQuery {
            playbook: None,
            limit: 10,
        })
        .await
        .expect("runs");
    assert!(runs.is_empty(), "refused params record no run: {runs:?}");
}

#[tokio::test]
async fn a_failing_step_stops_the_run_unless_it_may_fail() {
    let h = harness().await;
    let p = h.playbook(
        r#"
name: failing
steps:
  - id: bad
    continue-on-error: true
    uses: stats
    with: { connection: mem, queue: nowhere }
  - script: '"still here"'
  - uses: stats
    with: { connection: mem, queue: nowhere }
  - uses: log
    with: { message: unreachable }
"#,
    );
    let s = h.run(&p, &[], false).await;
    assert_eq!(s.outcome, Outcome::Failed);
    let outcomes: Vec<&str> = s.steps.iter().map(|s| s.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        ["failed", "succeeded", "failed"],
        "the last step never ran"
    );
    let error = s.error.expect("error");
    assert!(
        error.starts_with("step 3: ") && error.contains("nowhere"),
        "{error}"
    );
}

#[tokio::test]
async fn runaway_scripts_end_their_step_with_a_clear_error() {
    let h = harness().await;
    for (script, says) in [
        ("loop { }", "operations"),
        ("let s = \"xx\"; loop { s += s; }", "grew past its limit"),
        ("fn f(n) { f(n + 1) } f(0)", "nested deeper"),
        ("let a = []; loop { a.push(1); }", "grew past its limit"),
    ] {
        let p = h.playbook(&format!(
            "name: runaway\nsteps:\n  - id: spin\n    script: '{script}'\n  - uses: log\n    with: {{ message: after }}\n"
        ));
        let s = h.run(&p, &[], false).await;
        assert_eq!(s.outcome, Outcome::Failed, "{script}");
        let error = s.steps[0].error.clone().expect("step error");
        assert!(error.contains(says), "{script}: {error}");
        assert_eq!(s.steps.len(), 1, "the run stops at the runaway step");
    }
}

#[tokio::test]
async fn cooldown_and_max_runs_hold_between_runs() {
    let h = harness().await;
    let looking = h.playbook(
        "name: looking\nsafety:\n  cooldown: 1h\nsteps:\n  - uses: log\n    with: { message: hi }\n",
    );
    assert_eq!(
        h.run(&looking, &[], false).await.outcome,
        Outcome::Succeeded
    );
    assert_eq!(
        h.run(&looking, &[], false).await.outcome,
        Outcome::Succeeded,
        "a run that changed nothing starts no cooldown"
    );
    let cooling = h.playbook(
        "name: cooling\nsafety:\n  cooldown: 1h\nsteps:\n  - uses: noop\n    with: { x: 1 }\n",
    );
    assert_eq!(
        h.run(&cooling, &[], false).await.outcome,
        Outcome::Succeeded
    );
    let second = h.run(&cooling, &[], false).await;
    assert_eq!(second.outcome, Outcome::Cooldown);
    assert!(second.error.unwrap_or_default().contains("cooling down"));
    assert_eq!(
        h.run(&cooling, &[], true).await.outcome,
        Outcome::Succeeded,
        "a dry run changes nothing, so a cooldown does not stop it"
    );

    let limited = h.playbook(
        "name: limited\nsafety:\n  max-runs: { count: 2, window: 1h }\nsteps:\n  - uses: log\n    with: { message: hi }\n",
    );
    let outcomes = [
        h.run(&limited, &[], false).await.outcome,
        h.run(&limited, &[], false).await.outcome,
        h.run(&limited, &[], false).await.outcome,
    ];
    assert_eq!(
        outcomes,
        [Outcome::Succeeded, Outcome::Succeeded, Outcome::RateLimited]
    );
}

#[tokio::test]
async fn approval_holds_back_a_run_that_needs_it() {
    let h = harness().await;
    let p = h.playbook(
        "name: big\nparams:\n  max: { type: int, default: 10 }\nsafety:\n  approval: { when: \"params.max > 1000\", roles: [oncall] }\nsteps:\n  - uses: noop\n",
    );
    assert_eq!(h.run(&p, &[], false).await.outcome, Outcome::Succeeded);
    let held = h.run(&p, &[("max", "5000")], false).await;
    assert_eq!(held.outcome, Outcome::NeedsApproval);
    assert!(held.steps.is_empty());
    assert!(held.error.unwrap_or_default().contains("oncall"));
}

#[tokio::test]
async fn a_lock_is_exclusive_and_the_fencing_token_refuses_the_late_writer() {
    let h = harness().await;
    let now = now_ms();
    let first = h
        .store
        .acquire_lease("rabbit/orders", "agent-a/run-1", 1_000, now)
        .await
        .expect("store")
        .expect("free");
    let busy = h
        .store
        .acquire_lease("rabbit/orders", "agent-b/run-2", 1_000, now + 10)
        .await
        .expect("store");
    assert!(busy.is_none(), "a live lease is not handed out twice");
    // The first holder stalls past its TTL; the second takes over with a larger token.
    let later = now + 1_500;
    let second = h
        .store
        .acquire_lease("rabbit/orders", "agent-b/run-2", 1_000, later)
        .await
        .expect("store")
        .expect("expired lease is free");
    assert!(second.token > first.token);
    let entry = |who: &str| AuditEntry {
        at: later,
        agent: who.into(),
        run_id: None,
        event: "change".into(),
        detail: serde_json::json!({}),
    };
    assert!(
        !h.store
            .audit_fenced(&first, later, &entry("agent-a"))
            .await
            .expect("store"),
        "the late writer's token is refused"
    );
    assert!(
        h.store
            .renew_lease(&first, 1_000, later)
            .await
            .expect("store")
            .is_none(),
        "the late writer cannot renew either"
    );
    assert!(
        h.store
            .audit_fenced(&second, later, &entry("agent-b"))
            .await
            .expect("store")
    );
    let agents: Vec<String> = h
        .store
        .audit_log(10)
        .await
        .expect("audit")
        .into_iter()
        .map(|e| e.agent)
        .collect();
    assert_eq!(
        agents,
        ["agent-b"],
        "only the live holder's change was recorded"
    );
}

#[tokio::test]
async fn a_run_that_lost_its_lease_stops_before_its_next_change() {
    let h = harness().await;
    let p = h.playbook(
        "name: guarded\nsafety:\n  lock: rabbit/orders\n  lock-ttl: 30s\nsteps:\n  - uses: sleep\n    with: { duration: 1500ms }\n  - id: change\n    uses: noop\n    with: { x: 1 }\n",
    );
    let run = tokio::spawn({
        let executor = h.executor.clone();
        async move { executor.run(&p, run_request(&[], false)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Someone takes the lease over behind the run's back (as another agent would after the
    // run stalled past its TTL).
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", h.db.display()))
        .await
        .expect("open store");
    let stolen = sqlx::query(
        "UPDATE leases SET holder = 'thief', token = token + 1 WHERE lease_key = 'rabbit/orders'",
    )
    .execute(&pool)
    .await
    .expect("steal");
    assert_eq!(stolen.rows_affected(), 1, "the run holds a lease to steal");
    let s = run.await.expect("join").expect("run");
    assert_eq!(s.outcome, Outcome::LostLease, "{s:?}");
    assert_eq!(s.steps[1].outcome, "lost-lease");
    assert!(s.error.unwrap_or_default().contains("fencing token"));
    let events = h.audit_events(s.run_id.expect("recorded")).await;
    assert!(
        !events.contains(&"change".to_string()),
        "no change was made: {events:?}"
    );
    assert!(s.changes.is_empty());
}

#[tokio::test]
async fn runs_of_one_lock_key_never_overlap() {
    let h = harness().await;
    let p = Arc::new(h.playbook(
        "name: exclusive\nsafety:\n  lock: one-at-a-time\nsteps:\n  - uses: sleep\n    with: { duration: 700ms }\n",
    ));
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let (executor, p) = (h.executor.clone(), p.clone());
            tokio::spawn(async move { executor.run(&p, run_request(&[], false)).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for r in runs {
        outcomes.push(r.await.expect("join").expect("run").outcome);
    }
    outcomes.sort_by_key(|o| o.as_str());
    assert_eq!(
        outcomes,
        [
            Outcome::Locked,
            Outcome::Locked,
            Outcome::Locked,
            Outcome::Succeeded
        ]
    );
    // Released at the end of the run: the next one need not wait for the TTL.
    assert_eq!(h.run(&p, &[], false).await.outcome, Outcome::Succeeded);
    // A dry run takes no lease, so it never holds up a real run.
    let dry = tokio::spawn({
        let (executor, p) = (h.executor.clone(), p.clone());
        async move { executor.run(&p, run_request(&[], true)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.run(&p, &[], false).await.outcome, Outcome::Succeeded);
    assert_eq!(
        dry.await.expect("join").expect("run").outcome,
        Outcome::Succeeded
    );
}

#[tokio::test]
async fn a_scheduled_tick_is_claimed_once_and_a_missed_one_runs_once() {
    let h = harness().await;
    let p = h.playbook(
        "name: ticking\non:\n  schedule: \"*/10 * * * * *\"\nsteps:\n  - uses: log\n    with: { message: tick }\n",
    );
    let tick = 1_700_000_000_000_i64;
    let mut req = run_request(&[], false);
    req.tick_at = Some(tick);
    assert_eq!(
        h.executor.run(&p, req.clone()).await.expect("run").outcome,
        Outcome::Succeeded
    );
    assert_eq!(
        h.executor.run(&p, req).await.expect("run").outcome,
        Outcome::AlreadyClaimed,
        "a second agent asking for the same tick does not run it"
    );
    // The agent was down for an hour: only the latest missed tick runs.
    let now = chrono::DateTime::from_timestamp_millis(tick + 3_600_000 + 4_000).expect("time");
    let missed = qmedic::triggers::tick_after_downtime(&h.executor, &p, now)
        .await
        .expect("store")
        .expect("ticks were missed");
    assert_eq!(missed.timestamp_millis(), tick + 3_600_000);
}

#[tokio::test]
async fn the_audit_log_is_append_only() {
    let h = harness().await;
    let p = h.playbook(PIPELINE);
    h.run(&p, &[], false).await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", h.db.display()))
        .await
        .expect("open store");
    for sql in ["UPDATE audit SET event = 'nothing'", "DELETE FROM audit"] {
        let e = sqlx::query(sql).execute(&pool).await.expect_err(sql);
        assert!(e.to_string().contains("append-only"), "{sql}: {e}");
    }
}

#[tokio::test]
async fn a_lease_dropped_on_an_error_path_is_given_back_at_once() {
    let h = harness().await;
    let metrics = Metrics::new();
    let guard = qmedic::safety::LeaseGuard::acquire(
        h.store.clone(),
        "rabbit/orders",
        "agent-a/run-1",
        Duration::from_secs(60),
        &metrics,
    )
    .await
    .expect("store")
    .expect("free");
    assert!(
        metrics
            .encode()
            .contains("qmedic_lease_held{key=\"rabbit/orders\"} 1")
    );
    // The run ends on an error: no release() call, only the drop.
    drop(guard);
    let mut next = None;
    for _ in 0..50 {
        next = h
            .store
            .acquire_lease("rabbit/orders", "agent-b/run-2", 60_000, now_ms())
            .await
            .expect("store");
        if next.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        next.is_some(),
        "the lease came back long before its 60 s TTL"
    );
    assert!(
        metrics
            .encode()
            .contains("qmedic_lease_held{key=\"rabbit/orders\"} 0")
    );
}
