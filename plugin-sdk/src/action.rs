//! Actions: broker-neutral remediation with typed parameters and report.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// A remediation step. The agent calls [`Action::run`] with the step's parameters as JSON and
/// records the report it returns.
pub trait Action {
    /// Parameters, deserialized from the step's `with:`. Reject unknown fields so a typo in a
    /// playbook fails loudly.
    type Params: DeserializeOwned;
    /// What the action did, serialized to JSON for the run's record.
    type Report: Serialize;

    /// Do the remediation. Return `invalid` for parameters that cannot work, `unavailable` when
    /// a broker or backend cannot be reached.
    fn run(params: Self::Params) -> Result<Self::Report, Error>;
}

/// Deserialize parameters, run, serialize the report: what [`export_action!`] wires to the
/// world's `run` export.
pub fn run_json<A: Action>(params: &str) -> Result<String, Error> {
    let params: A::Params = serde_json::from_str(params)
        .map_err(|e| Error::Invalid(format!("parameters do not match: {e}")))?;
    let report = A::run(params)?;
    serde_json::to_string(&report)
        .map_err(|e| Error::Internal(format!("report cannot be encoded as JSON: {e}")))
}

/// Export a type implementing [`Action`] as this component's `run`.
#[macro_export]
macro_rules! export_action {
    ($ty:ty) => {
        const _: () = {
            struct __QmedicAction;
            impl $crate::bindings::action::Guest for __QmedicAction {
                fn run(params: String) -> Result<String, $crate::Error> {
                    $crate::run_json::<$ty>(&params)
                }
            }
            $crate::bindings::action::__export_action_world!(__QmedicAction with_types_in $crate::bindings::action);
        };
    };
}
