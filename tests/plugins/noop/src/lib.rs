//! Returns its parameters unchanged, without the SDK's JSON layer: the cost of a call is then
//! the boundary alone (instantiate, call, drop).

struct Noop;

impl qmedic_plugin_sdk::bindings::action::Guest for Noop {
    fn run(params: String) -> Result<String, qmedic_plugin_sdk::Error> {
        Ok(params)
    }
}

qmedic_plugin_sdk::bindings::action::__export_action_world!(Noop with_types_in qmedic_plugin_sdk::bindings::action);
