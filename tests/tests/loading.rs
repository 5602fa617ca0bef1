//! What the agent refuses to load, and how it says so: pins, manifests, configs, imports.

use std::path::{Path, PathBuf};

use qmedic::{Config, LoadError, Runtime};
use qmedic_tests::{config, fixture, fixture_sha256, plugin_entry};

/// A copy of fixture `name` in a folder of its own, with `manifest` as its plugin.toml.
fn copy_fixture(dir: &Path, name: &str, manifest: Option<&str>) -> PathBuf {
    let wasm = dir.join(format!("{name}.wasm"));
    std::fs::copy(fixture(name), &wasm).expect("copy wasm");
    let original = fixture(name).with_file_name("plugin.toml");
    match manifest {
        Some(text) => std::fs::write(dir.join("plugin.toml"), text).expect("write manifest"),
        None => {
            std::fs::copy(original, dir.join("plugin.toml")).expect("copy manifest");
        }
    }
    wasm
}

fn load_error(yaml: &str) -> LoadError {
    match Runtime::new(&config(yaml)) {
        Ok(_) => panic!("the runtime should refuse this config:\n{yaml}"),
        Err(e) => e,
    }
}

#[test]
fn a_plugin_that_does_not_match_its_pin_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = copy_fixture(dir.path(), "panics", None);
    let pinned = fixture_sha256("panics");
    // Tamper with the file after it was pinned.
    let mut bytes = std::fs::read(&wasm).expect("read");
    bytes.extend_from_slice(b"\0tampered");
    std::fs::write(&wasm, &bytes).expect("write");

    let err = load_error(&format!(
        "plugins:\n  panics:\n    path: {}\n    sha256: {pinned}\n",
        wasm.display()
    ));
    assert!(matches!(err, LoadError::PinMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("plugin `panics`"), "{msg}");
    assert!(
        msg.contains(&pinned),
        "the message shows the pinned digest: {msg}"
    );
    assert!(
        msg.contains(&qmedic::sha256_hex(&bytes)),
        "and the file's actual digest: {msg}"
    );
    assert!(msg.contains("refusing to load it"), "{msg}");
}

#[test]
fn the_cli_path_refuses_a_mismatch_too() {
    let rt = Runtime::new(&config(&format!(
        "plugins:\n  panics:\n    path: {}\n    sha256: {}\n",
        fixture("panics").display(),
        "0".repeat(64)
    )));
    assert!(matches!(rt, Err(LoadError::PinMismatch { .. })));
}

#[test]
fn a_malformed_manifest_points_at_its_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = "name = \"panics\"\nversion = \"0.1.0\"\nkind = \"acton\"\nwit = \"0.1.0\"\n";
    let wasm = copy_fixture(dir.path(), "panics", Some(manifest));
    let err = load_error(&format!(
        "plugins:\n  panics:\n    path: {}\n    sha256: {}\n",
        wasm.display(),
        fixture_sha256("panics")
    ));
    let LoadError::Manifest(located) = &err else {
        panic!("expected a manifest error, got {err:?}")
    };
    assert_eq!(located.location.file, dir.path().join("plugin.toml"));
    assert_eq!(
        (located.location.line, located.location.column),
        (3, 8),
        "{err}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "{}:3:8: ",
            dir.path().join("plugin.toml").display()
        )),
        "{err}"
    );
    assert!(located.message.contains("acton"), "{err}");
}

#[test]
fn a_manifest_that_lies_about_its_kind_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = "name = \"panics\"\nversion = \"0.1.0\"\nkind = \"adapter\"\nbroker = \"x\"\nwit = \"0.1.0\"\n";
    let wasm = copy_fixture(dir.path(), "panics", Some(manifest));
    let err = load_error(&format!(
        "plugins:\n  panics:\n    path: {}\n    sha256: {}\n",
        wasm.display(),
        fixture_sha256("panics")
    ));
    assert!(
        matches!(err, LoadError::Link { .. } | LoadError::Exports { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("plugin `panics`"), "{err}");
}

#[test]
fn a_plugin_that_imports_the_filesystem_fails_to_load() {
    let err = load_error(&format!("plugins:\n{}", plugin_entry("fs-reader", "")));
    assert!(matches!(err, LoadError::Link { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("plugin `fs-reader` cannot be linked"), "{msg}");
    assert!(msg.contains("wasi:filesystem"), "{msg}");
    assert!(
        msg.contains("filesystem and sockets are not available"),
        "{msg}"
    );
}

#[test]
fn a_malformed_config_points_at_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("qmedic.yaml");
    std::fs::write(
        &path,
        "listen: 127.0.0.1:9464\nplugins:\n  broker-probe:\n    conections: [mem]\n",
    )
    .expect("write");
    let err = Config::load(&path).expect_err("unknown field");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}:4:5: ", path.display())),
        "{text}"
    );
    assert!(text.contains("conections"), "{text}");

    std::fs::write(&path, "connections:\n  mem: { kind: memory\n").expect("write");
    let err = Config::load(&path).expect_err("broken YAML");
    assert!(
        err.to_string().starts_with(&format!("{}:", path.display())),
        "{err}"
    );

    let err = Config::load(&dir.path().join("absent.yaml")).expect_err("missing file");
    assert!(err.to_string().contains("cannot read config"), "{err}");
}

#[test]
fn an_unknown_plugin_entry_suggests_the_built_in_name() {
    let err = load_error("plugins:\n  adjust-prefech:\n    connections: []\n");
    let msg = err.to_string();
    assert!(
        msg.starts_with("test.yaml:4:3: plugins.adjust-prefech"),
        "{msg}"
    );
    assert!(msg.contains("did you mean `adjust-prefetch`"), "{msg}");
}

#[test]
fn connections_must_have_exactly_one_adapter() {
    let err = load_error(&format!(
        "connections:\n  q: {{ kind: memory, adapter: memory-adaptor }}\nplugins:\n{}",
        plugin_entry("memory-adapter", "")
    ));
    let msg = err.to_string();
    assert!(
        msg.starts_with("test.yaml:4:3: connection `q` names adapter `memory-adaptor`"),
        "{msg}"
    );
    assert!(msg.contains("did you mean `memory-adapter`"), "{msg}");

    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = "name = \"second-memory\"\nversion = \"0.1.0\"\nkind = \"adapter\"\nbroker = \"memory\"\nwit = \"0.1.0\"\ncapabilities = [\"state\"]\n";
    let twin = copy_fixture(dir.path(), "memory-adapter", Some(manifest));
    let twin_entry = format!(
        "  second-memory:\n    path: {}\n    sha256: {}\n",
        twin.display(),
        fixture_sha256("memory-adapter")
    );
    let yaml = format!(
        "connections:\n  q: {{ kind: memory }}\nplugins:\n{}{twin_entry}",
        plugin_entry("memory-adapter", "")
    );
    let msg = load_error(&yaml).to_string();
    assert!(
        msg.contains("adapters memory-adapter, second-memory all serve kind `memory`"),
        "{msg}"
    );
    assert!(msg.contains("connections.q.adapter"), "{msg}");
    // Naming one settles it.
    let yaml = yaml.replace(
        "{ kind: memory }",
        "{ kind: memory, adapter: second-memory }",
    );
    Runtime::new(&config(&yaml)).expect("an explicit adapter resolves the ambiguity");
}

#[test]
fn a_config_key_must_match_the_manifest_name() {
    let err = load_error(&format!(
        "plugins:\n  not-panics:\n    path: {}\n    sha256: {}\n",
        fixture("panics").display(),
        fixture_sha256("panics")
    ));
    assert!(
        err.to_string()
            .contains("whose plugin.toml names it `panics`"),
        "{err}"
    );
}

#[test]
fn compiled_plugins_are_cached_and_a_corrupt_entry_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "runtime:\n  cache_dir: {}\nplugins:\n{}",
        dir.path().display(),
        plugin_entry("panics", "")
    );
    let parse = || Config::parse(&yaml, Path::new("test.yaml")).expect("config");
    Runtime::new(&parse()).expect("first start compiles");
    let sha = fixture_sha256("panics");
    let entry = std::fs::read_dir(dir.path())
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&sha) && n.ends_with(".cwasm"))
        })
        .expect("a cache entry named by the plugin's digest");

    std::fs::write(&entry, b"not a compiled component").expect("corrupt the entry");
    let rt = Runtime::new(&parse()).expect("a corrupt entry is recompiled");
    assert!(rt.plugin("panics").is_ok());
    assert!(
        std::fs::metadata(&entry).expect("entry").len() > 1_000,
        "the entry was rewritten"
    );
}
