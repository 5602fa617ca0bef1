//! Reads a host file through WASI: its component imports `wasi:filesystem`, which the agent does
//! not link, so it must be refused at load.

use qmedic_plugin_sdk::{Action, Error, export_action};

struct FsReader;

impl Action for FsReader {
    type Params = serde_json::Value;
    type Report = String;

    fn run(_: serde_json::Value) -> Result<String, Error> {
        std::fs::read_to_string("/etc/hostname").map_err(|e| Error::internal(e.to_string()))
    }
}

export_action!(FsReader);
