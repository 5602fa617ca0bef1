//! Makes as many `clock.now-ms` host calls as its parameter says (a bare number), to measure a
//! host-call round trip.

use qmedic_plugin_sdk::clock;

struct HostCalls;

impl qmedic_plugin_sdk::bindings::action::Guest for HostCalls {
    fn run(params: String) -> Result<String, qmedic_plugin_sdk::Error> {
        let n: u64 = params
            .trim()
            .parse()
            .map_err(|_| qmedic_plugin_sdk::Error::invalid("give a count"))?;
        let mut last = 0;
        for _ in 0..n {
            last = std::hint::black_box(clock::now_ms());
        }
        Ok(last.to_string())
    }
}

qmedic_plugin_sdk::bindings::action::__export_action_world!(HostCalls with_types_in qmedic_plugin_sdk::bindings::action);
