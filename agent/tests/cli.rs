//! The `qmedic` binary: plugin list, inspect and call, serve, JSON output, and exit codes 0, 1
//! and 2. Fixture plugins come from the `qmedic-tests` crate.

use std::path::Path;
use std::process::{Command, Output};

use qmedic_tests::rabbit::management;
use qmedic_tests::{fixture, fixture_sha256, plugin_entry};
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
    Command::new(env!("CARGO_BIN_EXE_qmedic"))
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

#[test]
fn invalid_parameters_are_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let out = qmedic(
        &config,
        &[
            "plugin",
            "call",
            "broker-probe",
            "--input",
            r#"{"stepz":[]}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("parameters do not match"),
        "{}",
        stderr(&out)
    );
}

/// GET `path` from a local HTTP server; the body, or None if it is not answering yet.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

#[test]
fn serve_answers_health_and_plugin_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("listen: 127.0.0.1:{port}\n{text}")).expect("config");

    let mut child = Command::new(env!("CARGO_BIN_EXE_qmedic"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .spawn()
        .expect("serve");
    let started = std::time::Instant::now();
    let health = loop {
        if let Some(body) = http_get(port, "/healthz") {
            break body;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "serve did not answer /healthz"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let plugins = http_get(port, "/api/plugins");
    child.kill().expect("stop serve");
    let _ = child.wait();
    assert_eq!(health.trim(), "ok");
    let plugins: Value = serde_json::from_str(&plugins.expect("/api/plugins")).expect("JSON");
    assert!(
        plugins
            .as_array()
            .expect("array")
            .iter()
            .any(|p| p["name"] == "broker-probe")
    );
}

#[test]
fn stats_and_redrive_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("qmedic.yaml");
    let yaml = format!(
        "runtime:\n  cache_dir: {}\nconnections:\n  rabbit:\n    kind: rabbitmq\n    url: amqp://127.0.0.1:5672/%2f\n    \
         http_url: http://127.0.0.1:15672/api\n    username: guest\n    password: guest\nplugins:\n{}",
        dir.path().join("cache").display(),
        plugin_entry("broker-probe", "connections: [rabbit]"),
    );
    std::fs::write(&config, yaml).expect("config");
    for q in ["qmedic-cli", "qmedic-cli.dlq"] {
        let _ = Command::new("curl")
            .args(["-fsS", "-u", "guest:guest", "-X", "DELETE"])
            .arg(format!("http://127.0.0.1:15672/api/queues/%2F/{q}"))
            .output();
        management(
            "PUT",
            &format!("/queues/%2F/{q}"),
            Some(&serde_json::json!({ "durable": true })),
        );
    }
    let bodies: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    let input = serde_json::json!({ "steps": [{ "op": "publish", "connection": "rabbit", "queue": "qmedic-cli.dlq", "bodies": bodies }] });
    let out = qmedic(
        &config,
        &[
            "plugin",
            "call",
            "broker-probe",
            "--input",
            &input.to_string(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = qmedic(
        &config,
        &["stats", "rabbit", "qmedic-cli.dlq", "--output", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stats: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(stats["depth"], 20);
    let out = qmedic(&config, &["stats", "rabbit", "qmedic-cli.dlq"]);
    assert!(
        stdout(&out).contains("depth:          20"),
        "{}",
        stdout(&out)
    );

    let out = qmedic(
        &config,
        &["redrive", "rabbit", "qmedic-cli.dlq", "--to", "qmedic-cli"],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "no consumers: refused as invalid"
    );
    assert!(
        stderr(&out).contains("has no consumers"),
        "{}",
        stderr(&out)
    );

    let out = qmedic(
        &config,
        &[
            "redrive",
            "rabbit",
            "qmedic-cli.dlq",
            "--to",
            "qmedic-cli",
            "--dry-run",
            "--output",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(doc["report"]["moved"], 20);
    assert_eq!(doc["report"]["dry-run"], true);
    assert!(
        doc["report"]["warnings"][0]
            .as_str()
            .expect("warning")
            .contains("has no consumers")
    );

    let out = qmedic(
        &config,
        &[
            "redrive",
            "rabbit",
            "qmedic-cli.dlq",
            "--to",
            "qmedic-cli",
            "--force",
            "--batch",
            "7",
            "--output",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(doc["report"]["moved"], 20);
    let out = qmedic(
        &config,
        &["stats", "rabbit", "qmedic-cli", "--output", "json"],
    );
    let stats: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(stats["depth"], 20);
    let out = qmedic(
        &config,
        &["stats", "rabbit", "qmedic-cli.dlq", "--output", "json"],
    );
    let stats: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(stats["depth"], 0);
}

#[test]
fn validate_run_and_history_work_on_a_playbook_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("qmedic.yaml");
    std::fs::write(
        &config,
        format!(
            "store: runs.db\nruntime:\n  cache_dir: {}\n",
            dir.path().join("cache").display()
        ),
    )
    .expect("config");
    let playbook = dir.path().join("hello.yaml");
    std::fs::write(
        &playbook,
        "name: hello\nparams:\n  who: { type: string, default: world }\nsteps:\n  - id: greet\n    uses: log\n    with: { message: \"hello ${{ params.who }}\" }\n",
    )
    .expect("playbook");
    let path = playbook.to_str().expect("utf-8");

    let out = qmedic(&config, &["validate", path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("ok      "), "{}", stdout(&out));

    let out = qmedic(
        &config,
        &["run", path, "--param", "who=ops", "--output", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run: Value = serde_json::from_str(&stdout(&out)).expect("one JSON document");
    assert_eq!(run["outcome"], "succeeded");
    assert_eq!(run["steps"][0]["output"]["message"], "hello ops");

    let out = qmedic(&config, &["run", path, "--param", "whom=ops"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown param is a usage error"
    );
    assert!(
        stderr(&out).contains("did you mean `who`?"),
        "{}",
        stderr(&out)
    );

    let out = qmedic(&config, &["history"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("hello"), "{}", stdout(&out));
    let out = qmedic(&config, &["history", "--run", "1"]);
    assert!(
        stdout(&out).contains("with   {\"message\":\"hello ops\"}"),
        "{}",
        stdout(&out)
    );
}
