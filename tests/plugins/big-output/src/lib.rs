//! Returns 100 MB: the host must refuse it at its output cap. Implements the world's `run`
//! directly, without the SDK's JSON layer, to return exactly that many bytes.

struct BigOutput;

impl qmedic_plugin_sdk::bindings::action::Guest for BigOutput {
    fn run(_params: String) -> Result<String, qmedic_plugin_sdk::Error> {
        Ok("x".repeat(100 << 20))
    }
}

qmedic_plugin_sdk::bindings::action::__export_action_world!(BigOutput with_types_in qmedic_plugin_sdk::bindings::action);
