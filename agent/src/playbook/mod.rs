//! Playbooks: runbooks as YAML, checked with source spans before they run, scripted in Rhai, and
//! run step by step with every step recorded.

mod executor;
mod model;
mod parse;
mod script;

use std::sync::LazyLock;

pub use executor::{DEFAULT_STEP_TIMEOUT, Executor, Outcome, RunError, RunRequest, RunSummary};
pub use model::{
    Approval, Builtin, Expr, MaxRuns, Param, ParamType, Part, Playbook, Safety, Schedule, Step,
    StepRun, Template, Triggers,
};
pub use parse::{Catalog, DEFAULT_LOCK_TTL, PlaybookError, load, parse, playbook_files};
pub use script::{
    EXPRESSION_OPERATIONS, MAX_ARRAY, MAX_CALL_LEVELS, MAX_MAP, MAX_STRING, SCRIPT_OPERATIONS,
};

/// One Rhai setup for the process: compiled code does not depend on the engine that compiled it.
pub(crate) fn scripting() -> &'static script::Scripting {
    static SCRIPTING: LazyLock<script::Scripting> = LazyLock::new(script::Scripting::new);
    &SCRIPTING
}

/// Evaluate one expression with the given params, for tests and fuzzing of the expression layer.
/// Compile errors and run-time errors both come back as text; nothing panics.
pub fn eval_expression(
    source: &str,
    params: &serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let ast = scripting()
        .compile_expression(source)
        .map_err(|e| e.message)?;
    let params: rhai::Map = params
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().into(),
                script::to_dynamic(v).unwrap_or(rhai::Dynamic::UNIT),
            )
        })
        .collect();
    let empty = rhai::Map::new();
    let cx = script::Context {
        params: &params,
        trigger: &empty,
        steps: &empty,
    };
    script::to_json(&scripting().eval(&ast, &cx)?)
}
