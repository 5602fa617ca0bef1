//! `qmedic serve` with scheduled playbooks and the embedded SQLite store: runaway scripts fail
//! their run while the agent keeps serving, and a cooldown survives a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use qmedic_tests::agent::{Agent, free_port, wait_for};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_qmedic");

/// A config with its store and playbooks in `dir`; returns its path.
fn setup(dir: &Path, port: u16, playbooks: &[(&str, &str)]) -> PathBuf {
    let books = dir.join("playbooks");
    std::fs::create_dir_all(&books).expect("playbooks dir");
    for (name, text) in playbooks {
        std::fs::write(books.join(format!("{name}.yaml")), text).expect("write playbook");
    }
    let config = dir.join("qmedic.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nstore: runs.db\nagent: test-agent\nplaybooks: [playbooks]\nruntime:\n  cache_dir: {}\n",
            dir.join("cache").display()
        ),
    )
    .expect("write config");
    config
}

fn runs(agent: &Agent, playbook: &str) -> Vec<Value> {
    agent
        .json(&format!("/api/runs?playbook={playbook}&limit=1000"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn with_outcome<'a>(runs: &'a [Value], outcome: &str) -> Vec<&'a Value> {
    runs.iter().filter(|r| r["outcome"] == outcome).collect()
}

#[test]
fn a_runaway_script_fails_its_run_and_the_agent_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let every_second = |script: &str| {
        format!("name: NAME\non:\n  schedule: \"* * * * * *\"\nsteps:\n  - script: '{script}'\n")
    };
    let spin = every_second("loop { }").replace("NAME", "spin");
    let bloat = every_second("let s = \"xx\"; loop { s += s; }").replace("NAME", "bloat");
    let healthy = every_second("40 + 2").replace("NAME", "healthy");
    let config = setup(
        dir.path(),
        port,
        &[("spin", &spin), ("bloat", &bloat), ("healthy", &healthy)],
    );
    let mut agent = Agent::start(Path::new(BIN), &config, port);
    for (playbook, says) in [("spin", "operations"), ("bloat", "grew past its limit")] {
        let failed = wait_for(Duration::from_secs(30), playbook, || {
            let runs = runs(&agent, playbook);
            with_outcome(&runs, "failed").first().map(|r| (*r).clone())
        });
        let error = failed["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{playbook}: {error}");
    }
    let before = with_outcome(&runs(&agent, "healthy"), "succeeded").len();
    wait_for(
        Duration::from_secs(10),
        "healthy runs after the runaways",
        || (with_outcome(&runs(&agent, "healthy"), "succeeded").len() >= before + 2).then_some(()),
    );
    assert!(agent.alive(), "the agent survived");
    assert_eq!(agent.get("/healthz").as_deref(), Some("ok\n"));
    let metrics = agent.get("/metrics").expect("/metrics");
    assert!(
        metrics.contains("qmedic_runs_total{playbook=\"spin\",outcome=\"failed\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("qmedic_step_duration_seconds_bucket{"),
        "{metrics}"
    );
}

#[test]
fn a_cooldown_survives_a_restart_of_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let playbook = "name: cool\non:\n  schedule: \"* * * * * *\"\nsafety:\n  cooldown: 1h\nsteps:\n  - uses: noop\n    with: { remediated: true }\n";
    let config = setup(dir.path(), port, &[("cool", playbook)]);
    let mut yaml = std::fs::read_to_string(&config).expect("config");
    yaml += &format!("plugins:\n{}", qmedic_tests::plugin_entry("noop", ""));
    std::fs::write(&config, yaml).expect("config");
    let mut first = Agent::start(Path::new(BIN), &config, port);
    wait_for(Duration::from_secs(15), "the first run", || {
        (!with_outcome(&runs(&first, "cool"), "succeeded").is_empty()).then_some(())
    });
    // A crash, not a clean stop: nothing gets a chance to write anything on the way out.
    first.kill();
    let restarted_at = qmedic::store::now_ms();
    let second = Agent::start(Path::new(BIN), &config, port);
    let after_restart = wait_for(Duration::from_secs(15), "runs after the restart", || {
        let runs = runs(&second, "cool");
        let later: Vec<Value> = runs
            .iter()
            .filter(|r| r["started_at"].as_i64().unwrap_or(0) > restarted_at)
            .cloned()
            .collect();
        (later.len() >= 2).then_some(later)
    });
    for run in &after_restart {
        assert_eq!(run["outcome"], "cooldown", "{run}");
    }
    let all = runs(&second, "cool");
    assert_eq!(with_outcome(&all, "succeeded").len(), 1, "{all:?}");
    let metrics = second.get("/metrics").expect("/metrics");
    assert!(
        metrics.contains("qmedic_runs_total{playbook=\"cool\",outcome=\"cooldown\"}"),
        "{metrics}"
    );
}

#[test]
fn serve_refuses_an_invalid_playbook_with_its_location() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = setup(
        dir.path(),
        port,
        &[("bad", "name: bad\nsteps:\n  - uses: reprocess-dql\n")],
    );
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .output()
        .expect("run qmedic");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "bad.yaml:3:11: unknown plugin `reprocess-dql`; did you mean `reprocess-dlq`?"
        ),
        "{stderr}"
    );
}
