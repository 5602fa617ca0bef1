//! Allocates without bound: the sandbox must stop it at its memory cap.

use qmedic_plugin_sdk::{Action, Error, export_action};

struct MemoryBomb;

impl Action for MemoryBomb {
    type Params = serde_json::Value;
    type Report = usize;

    fn run(_: serde_json::Value) -> Result<usize, Error> {
        let mut hoard = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
            if hoard.len() == usize::MAX {
                return Ok(hoard.len());
            }
        }
    }
}

export_action!(MemoryBomb);
