//! Hostile plugins fail their own call with an error that names the plugin and the limit it hit,
//! and the agent keeps serving a healthy plugin correctly, one after another and all at once.

use std::time::{Duration, Instant};

use qmedic::{CallError, PluginFailure, Runtime};
use qmedic_tests::{plugin_entry, runtime};
use serde_json::{Value, json};

fn agent(quarantine_after: u32, timeout: &str) -> Runtime {
    let mut yaml = format!(
        "runtime:\n  quarantine_after: {quarantine_after}\n  limits:\n    timeout: {timeout}\n    memory: 64MiB\n    output: 1MiB\n\
         connections:\n  mem: {{ kind: memory }}\n  secret: {{ kind: memory }}\nplugins:\n"
    );
    for hostile in [
        "spin",
        "memory-bomb",
        "deep-recursion",
        "panics",
        "memory-adapter",
    ] {
        yaml += &plugin_entry(hostile, "");
    }
    // Building a 100 MB answer needs room, so only the output cap can stop it.
    yaml += &plugin_entry("big-output", "limits: { memory: 512MiB }");
    yaml += &plugin_entry("broker-probe", "connections: [mem]");
    runtime(&yaml)
}

/// Publish three messages to a queue of its own, check the depth, take and ack them, check again.
async fn healthy_roundtrip(rt: &Runtime, n: usize) -> Result<(), String> {
    // Few queue names: each round trip drains its queue, and the adapter keeps a bounded state.
    let queue = format!("healthy-{}", n % 4);
    let params = json!({ "steps": [
        { "op": "publish", "connection": "mem", "queue": queue, "bodies": ["a", "b", "c"] },
        { "op": "stats", "connection": "mem", "queue": queue },
        { "op": "receive-settle", "connection": "mem", "queue": queue, "max": 10, "how": "ack" },
        { "op": "stats", "connection": "mem", "queue": queue },
    ]});
    let call = rt.call_action("broker-probe", &params.to_string()).await;
    let report: Value = serde_json::from_str(&call.outcome.map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let r = &report["results"];
    let expected = (json!(3), json!(3), json!(["a", "b", "c"]), json!(0));
    let got = (
        r[0].clone(),
        r[1]["depth"].clone(),
        r[2].clone(),
        r[3]["depth"].clone(),
    );
    if got == expected {
        Ok(())
    } else {
        Err(format!("healthy plugin answered {report}"))
    }
}

/// Assert `err` is the failure `plugin` should hit, and that its message says so.
fn assert_hostile(plugin: &str, err: &CallError) {
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("plugin `{plugin}`")),
        "{plugin}: message does not name the plugin: {msg}"
    );
    match plugin {
        "spin" => {
            assert!(matches!(err, CallError::Timeout { .. }), "spin: {err:?}");
            assert!(msg.contains("deadline"), "{msg}");
        }
        "memory-bomb" => {
            assert!(
                matches!(err, CallError::Memory { limit, .. } if *limit == 64 << 20),
                "memory-bomb: {err:?}"
            );
            assert!(msg.contains("memory cap of 67108864 bytes"), "{msg}");
        }
        "deep-recursion" => {
            assert!(
                matches!(err, CallError::StackOverflow { .. }),
                "deep-recursion: {err:?}"
            );
            assert!(msg.contains("stack"), "{msg}");
        }
        "big-output" => {
            assert!(
                matches!(err, CallError::Output { size, limit, .. } if *size == 100 << 20 && *limit == 1 << 20),
                "big-output: {err:?}"
            );
            assert!(msg.contains("output cap of 1048576 bytes"), "{msg}");
        }
        "panics" => {
            assert!(matches!(err, CallError::Panic { .. }), "panics: {err:?}");
            assert!(
                msg.contains("the panics fixture panics on purpose"),
                "{msg}"
            );
        }
        other => panic!("no expectation for {other}"),
    }
}

const HOSTILE: [&str; 5] = [
    "spin",
    "memory-bomb",
    "deep-recursion",
    "big-output",
    "panics",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_one_after_another_leave_the_agent_working() {
    let rt = agent(100, "2s");
    healthy_roundtrip(&rt, 0).await.expect("healthy before");
    for (i, plugin) in HOSTILE.iter().enumerate() {
        let call = rt.call_action(plugin, "{}").await;
        let err = call.outcome.expect_err(plugin);
        assert_hostile(plugin, &err);
        assert!(err.is_sandbox_failure(), "{plugin}");
        healthy_roundtrip(&rt, i + 1)
            .await
            .unwrap_or_else(|e| panic!("after {plugin}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_all_at_once_beside_a_healthy_one() {
    let rt = agent(100, "2s");
    let hostile: Vec<_> = HOSTILE
        .iter()
        .map(|plugin| {
            let rt = rt.clone();
            tokio::spawn(async move { (plugin, rt.call_action(plugin, "{}").await) })
        })
        .collect();
    // Keep the healthy plugin busy until every hostile call has ended.
    let healthy = {
        let rt = rt.clone();
        tokio::spawn(async move {
            let mut answered = 0;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(3) {
                healthy_roundtrip(&rt, 100 + answered)
                    .await
                    .expect("healthy during the storm");
                answered += 1;
            }
            answered
        })
    };
    for handle in hostile {
        let (plugin, call) = handle.await.expect("hostile task");
        assert_hostile(plugin, &call.outcome.expect_err(plugin));
    }
    let answered = healthy.await.expect("healthy task");
    eprintln!("the healthy plugin answered {answered} round trips while the hostile ones ran");
    assert!(
        answered >= 10,
        "the healthy plugin answered only {answered} times in 3 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ungranted_connection_is_denied() {
    let rt = agent(100, "2s");
    let params = json!({ "steps": [{ "op": "stats", "connection": "secret", "queue": "q" }] });
    let err = rt
        .call_action("broker-probe", &params.to_string())
        .await
        .outcome
        .expect_err("denied");
    match &err {
        CallError::Plugin {
            plugin,
            error: PluginFailure::Denied(msg),
        } => {
            assert_eq!(plugin, "broker-probe");
            assert!(msg.contains("not granted connection `secret`"), "{msg}");
            assert!(msg.contains("plugins.broker-probe.connections"), "{msg}");
        }
        other => panic!("expected denied, got {other:?}"),
    }
    assert!(!err.is_sandbox_failure());
    healthy_roundtrip(&rt, 0)
        .await
        .expect("healthy after denial");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_keeps_failing_is_quarantined_until_reloaded() {
    let rt = agent(2, "200ms");
    for _ in 0..2 {
        let err = rt
            .call_action("spin", "{}")
            .await
            .outcome
            .expect_err("spin");
        assert!(matches!(err, CallError::Timeout { .. }), "{err:?}");
    }
    let started = Instant::now();
    let err = rt
        .call_action("spin", "{}")
        .await
        .outcome
        .expect_err("quarantined");
    assert!(matches!(err, CallError::Quarantined { .. }), "{err:?}");
    assert!(
        err.to_string().contains("plugin `spin` is quarantined"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "a quarantined plugin must not run"
    );
    assert!(rt.plugin("spin").expect("loaded").quarantined().is_some());
    // Other plugins are unaffected.
    healthy_roundtrip(&rt, 0)
        .await
        .expect("healthy beside a quarantined plugin");

    rt.reload("spin").expect("reload");
    let err = rt
        .call_action("spin", "{}")
        .await
        .outcome
        .expect_err("spin runs again");
    assert!(matches!(err, CallError::Timeout { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_instance_pool_refuses_calls_without_blaming_the_plugin() {
    let rt = runtime(&format!(
        "runtime:\n  max_instances: 2\n  quarantine_after: 3\n  limits:\n    timeout: 2s\nplugins:\n{}",
        plugin_entry("spin", "")
    ));
    // Two calls fill the pool for two seconds.
    let running: Vec<_> = (0..2)
        .map(|_| {
            let rt = rt.clone();
            tokio::spawn(async move { rt.call_action("spin", "{}").await.outcome })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    match rt.call_action("spin", "{}").await.outcome {
        Err(CallError::Busy { plugin, detail }) => {
            assert_eq!(plugin, "spin");
            assert!(detail.contains('2'), "{detail}");
        }
        other => panic!("a third call must be refused while the pool is full, got {other:?}"),
    }
    for call in running {
        let outcome = call.await.expect("task");
        assert!(
            matches!(outcome, Err(CallError::Timeout { .. })),
            "{outcome:?}"
        );
    }
    assert!(
        rt.plugin("spin").expect("loaded").quarantined().is_none(),
        "a full pool is not the plugin's fault"
    );
}
