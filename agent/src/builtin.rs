//! The first-party plugins, compiled by `build.rs` and embedded in the binary:
//! `(name, plugin.toml, component)`.

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));
