//! Recurses without bound: the sandbox must stop it at its stack limit.

use qmedic_plugin_sdk::{Action, Error, export_action};

fn descend(n: u64) -> u64 {
    if std::hint::black_box(n) == 0 {
        return 0;
    }
    std::hint::black_box(descend(n - 1)).wrapping_add(n)
}

struct DeepRecursion;

impl Action for DeepRecursion {
    type Params = serde_json::Value;
    type Report = u64;

    fn run(_: serde_json::Value) -> Result<u64, Error> {
        Ok(descend(u64::MAX))
    }
}

export_action!(DeepRecursion);
