//! Builds every first-party plugin under `plugins/` to a component and embeds it in the agent,
//! so a plain `cargo build` yields an agent with its built-in plugins.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let built = qmedic_plugin_build::build_all(&manifest_dir.join("../plugins"));
    let source = qmedic_plugin_build::embed_source("PLUGINS", &built);
    std::fs::write(out_dir.join("builtin_plugins.rs"), source).expect("OUT_DIR is writable");
}
