//! Loops forever: the sandbox must stop it at its deadline.

use qmedic_plugin_sdk::{Action, Error, export_action};

struct Spin;

impl Action for Spin {
    type Params = serde_json::Value;
    type Report = u64;

    fn run(_: serde_json::Value) -> Result<u64, Error> {
        let mut i = 0u64;
        loop {
            i = std::hint::black_box(i.wrapping_add(1));
        }
    }
}

export_action!(Spin);
