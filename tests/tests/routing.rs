//! An action's `broker` calls reach the adapter plugin registered for the connection's kind; the
//! first-party `adjust-prefetch` action, embedded in the agent, works through any adapter.

use qmedic::{CallError, Origin, Runtime};
use qmedic_tests::{failure, plugin_entry, runtime};
use serde_json::{Value, json};

fn agent(extra_connections: &str, extra_plugins: &str) -> Runtime {
    runtime(&format!(
        "connections:\n  mem: {{ kind: memory }}\n  other: {{ kind: nothing-serves-this }}\n{extra_connections}plugins:\n{}{}{extra_plugins}",
        plugin_entry("memory-adapter", ""),
        plugin_entry("broker-probe", "connections: ['*']\nscalers: ['*']"),
    ))
}

async fn probe(rt: &Runtime, steps: Value) -> Result<Vec<Value>, CallError> {
    let report = rt
        .call_action("broker-probe", &json!({ "steps": steps }).to_string())
        .await
        .outcome?;
    let report: Value = serde_json::from_str(&report).expect("probe report is JSON");
    Ok(report["results"].as_array().expect("results").clone())
}

#[tokio::test]
async fn broker_calls_reach_the_adapter_for_the_connection_kind() {
    let rt = agent("", "");
    let r = probe(
        &rt,
        json!([
            { "op": "publish", "connection": "mem", "queue": "orders", "bodies": ["1", "2", "3"] },
            { "op": "publish", "connection": "mem", "queue": "orders-retry", "bodies": ["4"] },
            { "op": "publish", "connection": "mem", "queue": "payments", "bodies": ["5"] },
            { "op": "list", "connection": "mem", "pattern": "orders*" },
            { "op": "receive-settle", "connection": "mem", "queue": "orders", "max": 2, "how": "dead-letter" },
            { "op": "receive-settle", "connection": "mem", "queue": "orders", "max": 5, "how": "requeue" },
            { "op": "stats", "connection": "mem", "queue": "orders" },
            { "op": "stats", "connection": "mem", "queue": "orders.dlq" },
        ]),
    )
    .await
    .expect("probe");
    assert_eq!(r[3], json!(["orders", "orders-retry"]));
    assert_eq!(r[4], json!(["1", "2"]), "first two dead-lettered");
    assert_eq!(r[5], json!(["3"]), "the rest requeued");
    assert_eq!(r[6]["depth"], 1);
    assert_eq!(r[7]["depth"], 2);

    // The adapter keeps its queues in its host state: a later call sees them.
    let r = probe(&rt, json!([{ "op": "receive-settle", "connection": "mem", "queue": "orders.dlq", "max": 10, "how": "ack" }]))
        .await
        .expect("second call");
    assert_eq!(r[0], json!(["1", "2"]));
}

#[tokio::test]
async fn the_built_in_action_works_through_the_adapter() {
    let rt = agent("", "");
    let builtin = rt
        .plugin("adjust-prefetch")
        .expect("built-in plugin is loaded");
    assert_eq!(builtin.origin, Origin::BuiltIn);

    probe(
        &rt,
        json!([{ "op": "publish", "connection": "mem", "queue": "orders", "bodies": ["x", "y"] }]),
    )
    .await
    .expect("publish");
    let params = json!({ "connection": "mem", "queue": "orders", "value": 5000, "max": 1000 });
    let call = rt.call_action("adjust-prefetch", &params.to_string()).await;
    let report: Value =
        serde_json::from_str(&call.outcome.expect("adjust-prefetch")).expect("JSON report");
    assert_eq!(report["applied"], 1000);
    assert_eq!(report["clamped"], true);
    assert_eq!(report["depth-before"], 2);
    assert!(
        call.logs.iter().any(|l| l.plugin == "adjust-prefetch"
            && l.message.contains("set prefetch on orders to 1000"))
    );

    let r = probe(
        &rt,
        json!([{ "op": "stats", "connection": "mem", "queue": "orders" }]),
    )
    .await
    .expect("stats");
    assert_eq!(r[0]["extra"], json!([["limit.prefetch", 1000.0]]));

    // A knob the broker does not have comes back as the adapter's `invalid`, naming the ones it has.
    let params =
        json!({ "connection": "mem", "queue": "orders", "limit": "max-ack-pending", "value": 5 });
    let msg = failure(
        "invalid",
        rt.call_action("adjust-prefetch", &params.to_string())
            .await
            .outcome,
    );
    assert!(msg.contains("prefetch, max-length"), "{msg}");
    // Dry run changes nothing.
    let params = json!({ "connection": "mem", "queue": "orders", "value": 7, "dry-run": true });
    rt.call_action("adjust-prefetch", &params.to_string())
        .await
        .outcome
        .expect("dry run");
    let r = probe(
        &rt,
        json!([{ "op": "stats", "connection": "mem", "queue": "orders" }]),
    )
    .await
    .expect("stats");
    assert_eq!(r[0]["extra"], json!([["limit.prefetch", 1000.0]]));
}

#[tokio::test]
async fn a_connection_can_name_its_adapter() {
    let rt = agent(
        "  custom: { kind: in-house, adapter: memory-adapter }\n",
        "",
    );
    let r = probe(
        &rt,
        json!([
            { "op": "publish", "connection": "custom", "queue": "q", "bodies": ["z"] },
            { "op": "stats", "connection": "custom", "queue": "q" },
        ]),
    )
    .await
    .expect("routed by name");
    assert_eq!(r[1]["depth"], 1);
}

#[tokio::test]
async fn errors_name_what_is_missing() {
    let rt = agent("", "");
    let msg = failure(
        "not-found",
        probe(
            &rt,
            json!([{ "op": "stats", "connection": "other", "queue": "q" }]),
        )
        .await,
    );
    assert!(
        msg.contains("no adapter plugin serves connection kind `nothing-serves-this`"),
        "{msg}"
    );
    let msg = failure(
        "not-found",
        probe(
            &rt,
            json!([{ "op": "stats", "connection": "meme", "queue": "q" }]),
        )
        .await,
    );
    assert!(
        msg.contains("no connection named `meme`") && msg.contains("did you mean `mem`"),
        "{msg}"
    );
    match rt.call_action("adjust-prefech", "{}").await.outcome {
        Err(e @ CallError::NotFound { .. }) => assert!(
            e.to_string().contains("did you mean `adjust-prefetch`"),
            "{e}"
        ),
        other => panic!("expected not-found, got {other:?}"),
    }
    match rt.call_action("memory-adapter", "{}").await.outcome {
        Err(e @ CallError::WrongKind { .. }) => assert!(
            e.to_string().contains("is an adapter, not an action"),
            "{e}"
        ),
        other => panic!("expected wrong kind, got {other:?}"),
    }
}

#[tokio::test]
async fn state_persists_per_plugin_across_calls() {
    let rt = agent("", "");
    probe(
        &rt,
        json!([{ "op": "state-set", "key": "k", "value": "v1" }]),
    )
    .await
    .expect("set");
    let r = probe(
        &rt,
        json!([{ "op": "state-get", "key": "k" }, { "op": "state-get", "key": "queues/mem" }]),
    )
    .await
    .expect("get");
    assert_eq!(r[0], "v1");
    assert_eq!(
        r[1],
        Value::Null,
        "the adapter's keys are not visible to another plugin"
    );
}

#[tokio::test]
async fn scalers_run_their_commands_and_grants_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("replicas");
    std::fs::write(&file, "2\n").expect("seed");
    let scalers = format!(
        "scalers:\n  workers:\n    kind: command\n    get: [cat, '{f}']\n    set: [sh, -c, 'echo $0 > {f}', '{{replicas}}']\n  \
         other:\n    kind: command\n    get: [cat, '{f}']\n    set: ['true']\n",
        f = file.display()
    );
    let rt = runtime(&format!(
        "connections:\n  mem: {{ kind: memory }}\n{scalers}plugins:\n{}",
        plugin_entry("broker-probe", "scalers: [workers]"),
    ));
    let r = probe(
        &rt,
        json!([
            { "op": "replicas", "scaler": "workers", "target": "orders" },
            { "op": "set-replicas", "scaler": "workers", "target": "orders", "replicas": 7 },
            { "op": "replicas", "scaler": "workers", "target": "orders" },
        ]),
    )
    .await
    .expect("scale");
    assert_eq!(r, vec![json!(2), json!(7), json!(7)]);
    assert_eq!(std::fs::read_to_string(&file).expect("file").trim(), "7");

    let msg = failure(
        "denied",
        probe(
            &rt,
            json!([{ "op": "replicas", "scaler": "other", "target": "orders" }]),
        )
        .await,
    );
    assert!(msg.contains("scaler `other`"), "{msg}");
    let msg = failure(
        "invalid",
        probe(
            &rt,
            json!([{ "op": "replicas", "scaler": "workers", "target": "--all" }]),
        )
        .await,
    );
    assert!(msg.contains("`--all`"), "{msg}");
    // A third-party plugin without grants reaches nothing.
    let msg = failure(
        "denied",
        probe(
            &rt,
            json!([{ "op": "stats", "connection": "mem", "queue": "q" }]),
        )
        .await,
    );
    assert!(msg.contains("connection `mem`"), "{msg}");
}

#[tokio::test]
async fn the_readme_example_plugin_works() {
    let rt = agent("", &plugin_entry("depth-check", "connections: [mem]"));
    probe(&rt, json!([{ "op": "publish", "connection": "mem", "queue": "orders", "bodies": ["1", "2", "3"] }]))
        .await
        .expect("publish");
    let call = rt
        .call_action(
            "depth-check",
            &json!({ "connection": "mem", "queue": "orders", "warn-above": 2 }).to_string(),
        )
        .await;
    let report: Value = serde_json::from_str(&call.outcome.expect("depth-check")).expect("JSON");
    assert_eq!(report, json!({ "depth": 3, "consumers": 1, "over": true }));
    assert!(
        call.logs
            .iter()
            .any(|l| l.level == "warn" && l.message == "orders holds 3 messages (threshold 2)")
    );

    let msg = failure(
        "invalid",
        rt.call_action(
            "depth-check",
            r#"{"connection":"mem","queue":"orders","warn_above":2}"#,
        )
        .await
        .outcome,
    );
    assert!(msg.contains("warn_above"), "{msg}");
}
