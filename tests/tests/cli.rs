//! The `qmedic` binary: plugin list, inspect and call, JSON output, and exit codes 0, 1 and 2.

use std::path::Path;
use std::process::{Command, Output};

use qmedic_tests::{fixture, fixture_sha256, plugin_entry, qmedic_bin};
use serde_json::Value;

fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("qmedic.yaml");
    let yaml = format!(
        "runtime:\n  cache_dir: {}\n  limits:\n    timeout: 300ms\nconnections:\n  mem: {{ kind: memory }}\nplugins:\n{}{}{}",
        dir.join("cache").display(),
        plugin_entry("memory-adapter", ""),
        plugin_entry("broker-probe", "connections: [mem]"),
        plugin_entry("spin", ""),
    );
    std::fs::write(&path, yaml).expect("write config");
    path
}

fn qmedic(config: &Path, args: &[&str]) -> Output {
    Command::new(qmedic_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run qmedic")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn plugin_list_shows_every_plugin_with_its_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let out = qmedic(&config, &["plugin", "list", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let list: Value = serde_json::from_str(&stdout(&out)).expect("one JSON document on stdout");
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    for expected in ["adjust-prefetch", "broker-probe", "memory-adapter", "spin"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let probe = list
        .as_array()
        .expect("array")
        .iter()
        .find(|p| p["name"] == "broker-probe")
        .expect("probe");
    assert_eq!(probe["sha256"], fixture_sha256("broker-probe"));
    assert_eq!(probe["kind"], "action");
    assert_eq!(
        probe["capabilities"],
        serde_json::json!(["broker", "state", "scale"])
    );

    let out = qmedic(&config, &["plugin", "list"]);
    let text = stdout(&out);
    assert!(text.starts_with("NAME"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("memory-adapter") && l.contains("adapter")),
        "{text}"
    );
}

#[test]
fn plugin_inspect_by_name_and_by_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let out = qmedic(&config, &["plugin", "inspect", "memory-adapter"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("kind:         adapter"), "{text}");
    assert!(text.contains("serves:       memory connections"), "{text}");

    let path = fixture("panics");
    let out = qmedic(
        &config,
        &[
            "plugin",
            "inspect",
            path.to_str().expect("utf-8 path"),
            "--output",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let info: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(info["name"], "panics");
    assert_eq!(
        info["grant"]["connections"],
        serde_json::json!([]),
        "an unconfigured file gets no grants"
    );
}

#[test]
fn plugin_call_prints_the_report_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let input = r#"{"steps":[{"op":"publish","connection":"mem","queue":"q","bodies":["a"]},{"op":"stats","connection":"mem","queue":"q"}]}"#;
    let out = qmedic(
        &config,
        &[
            "plugin",
            "call",
            "broker-probe",
            "--input",
            input,
            "--output",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("one JSON document");
    assert_eq!(doc["plugin"], "broker-probe");
    assert_eq!(doc["report"]["results"][1]["depth"], 1);
}

#[test]
fn exit_codes_say_failed_or_usage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());

    let out = qmedic(&config, &["plugin", "call", "spin"]);
    assert_eq!(out.status.code(), Some(1), "a plugin that fails exits 1");
    assert!(
        stderr(&out).contains("plugin `spin` ran past its deadline of 300ms"),
        "{}",
        stderr(&out)
    );

    let out = qmedic(
        &config,
        &[
            "plugin",
            "call",
            "broker-probe",
            "--input",
            r#"{"steps":[{"op":"stats","connection":"nope","queue":"q"}]}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no connection named `nope`"),
        "{}",
        stderr(&out)
    );

    let out = qmedic(&config, &["plugin", "call", "spinn"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown plugin is a usage error"
    );
    assert!(
        stderr(&out).contains("did you mean `spin`"),
        "{}",
        stderr(&out)
    );

    let out = qmedic(
        &config,
        &["plugin", "call", "broker-probe", "--input", "{not json"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--input is not JSON"),
        "{}",
        stderr(&out)
    );

    let out = qmedic(&config, &["plugin", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "listen: 1\nstore: [\n").expect("write");
    let out = qmedic(&bad, &["plugin", "list", "--output", "json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with(&format!("qmedic: {}:", bad.display())),
        "{}",
        stderr(&out)
    );
    let doc: Value =
        serde_json::from_str(&stdout(&out)).expect("JSON mode prints an error document");
    assert!(doc["error"].as_str().expect("error").contains("bad.yaml:"));

    let missing = dir.path().join("missing.yaml");
    let out = qmedic(&missing, &["plugin", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read config"),
        "{}",
        stderr(&out)
    );
}
