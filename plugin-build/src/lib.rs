//! Compiles every plugin crate in a folder to a WebAssembly component, from a build script.
//!
//! The agent embeds its first-party plugins this way and the tests build their fixture plugins
//! the same way, so a plain `cargo build` yields working plugins without a manual step.

#![warn(missing_docs)]

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The WebAssembly target plugins are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// One compiled plugin: its crate folder, its component and its manifest.
#[derive(Debug, Clone)]
pub struct Built {
    /// The crate's package name, which is also the plugin's name.
    pub name: String,
    /// The plugin's crate folder.
    pub dir: PathBuf,
    /// The `.wasm` component, copied into `OUT_DIR`.
    pub wasm: PathBuf,
    /// The `plugin.toml` beside the crate's `Cargo.toml`.
    pub manifest: PathBuf,
}

/// Build every crate under `plugins_dir` (each folder with a `Cargo.toml` and a `plugin.toml`)
/// for [`TARGET`] in release mode, into `<target>/wasm`, and copy the components to `OUT_DIR`.
///
/// Each plugin is built by its own cargo invocation so that cargo features of the SDK are
/// resolved per plugin, as they are when a plugin author builds one crate.
pub fn build_all(plugins_dir: &Path) -> Vec<Built> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set for build scripts"));
    let target_dir = wasm_target_dir(&out_dir);
    let workspace = workspace_root(plugins_dir);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    println!("cargo:rerun-if-changed={}", plugins_dir.display());
    for shared in [
        "plugin-sdk/src",
        "plugin-sdk/wit",
        "plugin-sdk/Cargo.toml",
        "Cargo.lock",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(shared).display()
        );
    }

    let mut crates: Vec<PathBuf> = fs::read_dir(plugins_dir)
        .unwrap_or_else(|e| panic!("cannot read plugin folder {}: {e}", plugins_dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").is_file() && p.join("plugin.toml").is_file())
        .collect();
    crates.sort();

    crates
        .into_iter()
        .map(|dir| {
            let name = package_name(&dir.join("Cargo.toml"));
            let mut cmd = Command::new(&cargo);
            cmd.current_dir(&workspace)
                .args([
                    "build",
                    "--release",
                    "--quiet",
                    "--target",
                    TARGET,
                    "-p",
                    &name,
                ])
                .arg("--target-dir")
                .arg(&target_dir);
            // The outer build's settings are for the host, not for the plugins.
            for var in [
                "CARGO_ENCODED_RUSTFLAGS",
                "RUSTFLAGS",
                "RUSTC_WRAPPER",
                "RUSTC_WORKSPACE_WRAPPER",
                "CARGO_BUILD_TARGET",
                "CARGO_TARGET_DIR",
                "CARGO_PRIMARY_PACKAGE",
            ] {
                cmd.env_remove(var);
            }
            let status = cmd
                .status()
                .unwrap_or_else(|e| panic!("cannot run cargo to build plugin {name}: {e}"));
            assert!(
                status.success(),
                "building plugin {name} for {TARGET} failed ({status}); is the target installed? \
                 rust-toolchain.toml lists it, `rustup target add {TARGET}` adds it by hand"
            );
            let artifact = target_dir
                .join(TARGET)
                .join("release")
                .join(format!("{}.wasm", name.replace('-', "_")));
            let wasm = out_dir.join(format!("{name}.wasm"));
            fs::copy(&artifact, &wasm)
                .unwrap_or_else(|e| panic!("cannot copy {}: {e}", artifact.display()));
            Built {
                manifest: dir.join("plugin.toml"),
                name,
                dir,
                wasm,
            }
        })
        .collect()
}

/// Rust source for a `static` slice of `(name, manifest, wasm)` entries embedding `built`.
pub fn embed_source(static_name: &str, built: &[Built]) -> String {
    let mut src = format!("pub(crate) static {static_name}: &[(&str, &str, &[u8])] = &[\n");
    for b in built {
        writeln!(
            src,
            "    ({:?}, include_str!({:?}), include_bytes!({:?})),",
            b.name,
            b.manifest.display().to_string(),
            b.wasm.display().to_string()
        )
        .expect("writing to a String cannot fail");
    }
    src.push_str("];\n");
    src
}

/// `<target>/wasm`, next to the host build's profile folders.
fn wasm_target_dir(out_dir: &Path) -> PathBuf {
    // OUT_DIR is <target>[/<triple>]/<profile>/build/<pkg>-<hash>/out.
    let profile_dir = out_dir
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .and_then(Path::parent)
        .expect("OUT_DIR lies under a build folder");
    profile_dir.parent().unwrap_or(profile_dir).join("wasm")
}

fn workspace_root(from: &Path) -> PathBuf {
    from.ancestors()
        .find(|p| fs::read_to_string(p.join("Cargo.toml")).is_ok_and(|s| s.contains("[workspace]")))
        .unwrap_or_else(|| panic!("no workspace above {}", from.display()))
        .to_path_buf()
}

fn package_name(cargo_toml: &Path) -> String {
    let text = fs::read_to_string(cargo_toml)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", cargo_toml.display()));
    text.lines()
        .skip_while(|l| l.trim() != "[package]")
        .find_map(|l| {
            let (key, value) = l.split_once('=')?;
            (key.trim() == "name").then(|| value.trim().trim_matches('"').to_string())
        })
        .unwrap_or_else(|| panic!("{} has no package name", cargo_toml.display()))
}
