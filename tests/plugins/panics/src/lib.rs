//! Panics: the sandbox must report the panic message and keep going.

use qmedic_plugin_sdk::{Action, Error, export_action};

struct Panics;

impl Action for Panics {
    type Params = serde_json::Value;
    type Report = ();

    fn run(_: serde_json::Value) -> Result<(), Error> {
        panic!("the panics fixture panics on purpose")
    }
}

export_action!(Panics);
