//! Builds the fixture plugins under `tests/plugins/` to components; the tests find them under
//! `QMEDIC_FIXTURES`, each `.wasm` in a folder with its `plugin.toml`.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let fixtures = out_dir.join("fixtures");
    for built in qmedic_plugin_build::build_all(&manifest_dir.join("plugins")) {
        let dir = fixtures.join(&built.name);
        std::fs::create_dir_all(&dir).expect("OUT_DIR is writable");
        std::fs::copy(&built.wasm, dir.join(format!("{}.wasm", built.name)))
            .expect("copy fixture wasm");
        std::fs::copy(&built.manifest, dir.join("plugin.toml")).expect("copy fixture manifest");
    }
    println!("cargo:rustc-env=QMEDIC_FIXTURES={}", fixtures.display());
}
