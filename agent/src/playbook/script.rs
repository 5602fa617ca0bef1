//! Rhai for `if:`, `${{ }}` and `script:`: bounded, and with no way out but the functions the
//! engine registers (`stats`, `list`, `log`, `action`).

use std::sync::Arc;
use std::time::Instant;

use rhai::packages::{Package, StandardPackage};
use rhai::{AST, Dynamic, Engine, EvalAltResult, Map, Scope};

/// Operations an `if:` or `${{ }}` may take: plenty for arithmetic over stats, nothing for a loop.
pub const EXPRESSION_OPERATIONS: u64 = 100_000;
/// Operations a `script:` step may take.
pub const SCRIPT_OPERATIONS: u64 = 5_000_000;
/// Longest string a script may build.
pub const MAX_STRING: usize = 1 << 20;
/// Most items in one array a script may build.
pub const MAX_ARRAY: usize = 100_000;
/// Most keys in one map a script may build.
pub const MAX_MAP: usize = 10_000;
/// Deepest function-call nesting.
pub const MAX_CALL_LEVELS: usize = 32;

/// What a script may call on the agent. The executor implements it over the runtime and the
/// run's safety checks, so a script's `action()` passes the same lease and dry-run rules as a step.
pub(crate) trait ScriptHost: Send + Sync {
    fn stats(&self, connection: &str, queue: &str) -> Result<serde_json::Value, String>;
    fn list(&self, connection: &str, pattern: &str) -> Result<Vec<String>, String>;
    fn log(&self, message: &str);
    /// A line an operator should look at: logged at warn level, kept with the run.
    fn warn(&self, message: &str);
    fn action(&self, plugin: &str, params: serde_json::Value) -> Result<serde_json::Value, String>;
}

/// The names a playbook's code can see.
pub(crate) struct Context<'a> {
    pub params: &'a Map,
    pub trigger: &'a Map,
    pub steps: &'a Map,
}

impl Context<'_> {
    fn scope(&self) -> Scope<'static> {
        let mut scope = Scope::new();
        scope.push_constant("params", self.params.clone());
        scope.push_constant("trigger", self.trigger.clone());
        scope.push_constant("steps", self.steps.clone());
        scope
    }
}

/// Compiles and evaluates playbook code. One per process: the standard library is shared.
pub(crate) struct Scripting {
    expressions: Engine,
    package: StandardPackage,
}

impl std::fmt::Debug for Scripting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scripting")
    }
}

/// Why code did not compile: the message and where in the code (1-based line and column).
#[derive(Debug)]
pub(crate) struct CompileError {
    pub message: String,
    pub line: usize,
    pub column: usize,
}

impl Scripting {
    pub fn new() -> Scripting {
        let package = StandardPackage::new();
        let mut expressions = bounded_engine(&package, EXPRESSION_OPERATIONS);
        expressions.on_print(|_| {});
        expressions.on_debug(|_, _, _| {});
        Scripting {
            expressions,
            package,
        }
    }

    /// The names code may use, as variables: constants would be folded into the compiled code.
    fn declared_scope() -> Scope<'static> {
        let mut scope = Scope::new();
        for name in ["params", "trigger", "steps"] {
            scope.push(name, Map::new());
        }
        scope
    }

    /// Compile an `if:` or `${{ }}` expression; a name that is not `params`, `trigger` or
    /// `steps` is an error here, not at run time.
    pub fn compile_expression(&self, source: &str) -> Result<AST, CompileError> {
        self.expressions
            .compile_expression_with_scope(&Self::declared_scope(), source)
            .map_err(compile_error)
    }

    /// Compile a `script:` step, with the same rule for names.
    pub fn compile_script(&self, source: &str) -> Result<AST, CompileError> {
        self.expressions
            .compile_with_scope(&Self::declared_scope(), source)
            .map_err(compile_error)
    }

    /// Evaluate a compiled expression.
    pub fn eval(&self, ast: &AST, cx: &Context<'_>) -> Result<Dynamic, String> {
        let mut scope = cx.scope();
        self.expressions
            .eval_ast_with_scope::<Dynamic>(&mut scope, ast)
            .map_err(|e| runtime_error(*e, EXPRESSION_OPERATIONS))
    }

    /// Run a `script:` step with the host functions, until `deadline` at the latest.
    pub fn run_script(
        &self,
        ast: &AST,
        cx: &Context<'_>,
        host: Arc<dyn ScriptHost>,
        deadline: Instant,
    ) -> Result<Dynamic, String> {
        let mut engine = bounded_engine(&self.package, SCRIPT_OPERATIONS);
        engine.on_progress(move |_| {
            (Instant::now() >= deadline).then(|| Dynamic::from("the step's timeout"))
        });
        register_host(&mut engine, host);
        let mut scope = cx.scope();
        engine
            .eval_ast_with_scope::<Dynamic>(&mut scope, ast)
            .map_err(|e| runtime_error(*e, SCRIPT_OPERATIONS))
    }
}

fn bounded_engine(package: &StandardPackage, operations: u64) -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(package.as_shared_module());
    engine
        .set_max_operations(operations)
        .set_max_call_levels(MAX_CALL_LEVELS)
        .set_max_expr_depths(64, 32)
        .set_max_string_size(MAX_STRING)
        .set_max_array_size(MAX_ARRAY)
        .set_max_map_size(MAX_MAP)
        .set_max_variables(1_000)
        .set_max_functions(100)
        .set_strict_variables(true)
        .set_fail_on_invalid_map_property(true);
    engine.disable_symbol("eval");
    engine
}

fn register_host(engine: &mut Engine, host: Arc<dyn ScriptHost>) {
    let h = host.clone();
    engine.on_print(move |s| h.log(s));
    let h = host.clone();
    engine.on_debug(move |s, _, _| h.log(s));
    let h = host.clone();
    engine.register_fn("log", move |message: &str| h.log(message));
    let h = host.clone();
    engine.register_fn("warn", move |message: &str| h.warn(message));
    let h = host.clone();
    engine.register_fn(
        "stats",
        move |connection: &str, queue: &str| -> Result<Dynamic, Box<EvalAltResult>> {
            let stats = h.stats(connection, queue).map_err(host_error)?;
            to_dynamic(&stats).map_err(host_error)
        },
    );
    let h = host.clone();
    engine.register_fn(
        "list",
        move |connection: &str, pattern: &str| -> Result<rhai::Array, Box<EvalAltResult>> {
            let names = h.list(connection, pattern).map_err(host_error)?;
            Ok(names.into_iter().map(Dynamic::from).collect())
        },
    );
    let h = host;
    engine.register_fn(
        "action",
        move |plugin: &str, params: Map| -> Result<Dynamic, Box<EvalAltResult>> {
            let params = to_json(&Dynamic::from_map(params)).map_err(host_error)?;
            let report = h.action(plugin, params).map_err(host_error)?;
            to_dynamic(&report).map_err(host_error)
        },
    );
}

fn host_error(message: String) -> Box<EvalAltResult> {
    message.into()
}

fn compile_error(e: rhai::ParseError) -> CompileError {
    let pos = e.position();
    CompileError {
        message: e.err_type().to_string(),
        line: pos.line().unwrap_or(1),
        column: pos.position().unwrap_or(1),
    }
}

/// A run-time error in words an operator can act on.
fn runtime_error(e: EvalAltResult, operations: u64) -> String {
    let at = e.position();
    let place = match (at.line(), at.position()) {
        (Some(l), Some(c)) => format!(" (line {l}, column {c} of the code)"),
        _ => String::new(),
    };
    match e {
        EvalAltResult::ErrorTooManyOperations(_) => format!(
            "stopped after {operations} operations, the budget of playbook code; an endless loop?{place}"
        ),
        EvalAltResult::ErrorDataTooLarge(what, _) => format!(
            "stopped: {what} grew past its limit (strings {MAX_STRING} bytes, arrays {MAX_ARRAY} \
             items, maps {MAX_MAP} keys){place}"
        ),
        EvalAltResult::ErrorStackOverflow(_) => {
            format!("stopped: calls nested deeper than {MAX_CALL_LEVELS}{place}")
        }
        EvalAltResult::ErrorTerminated(why, _) => format!("stopped: it ran past {why}{place}"),
        EvalAltResult::ErrorInFunctionCall(name, _, inner, _) => {
            format!("in `{name}`: {}", runtime_error(*inner, operations))
        }
        EvalAltResult::ErrorRuntime(value, _) => format!("{value}{place}"),
        mut other => {
            let _ = other.take_position();
            format!("{other}{place}")
        }
    }
}

/// JSON into a Rhai value.
pub(crate) fn to_dynamic(value: &serde_json::Value) -> Result<Dynamic, String> {
    rhai::serde::to_dynamic(value).map_err(|e| format!("cannot hand a value to Rhai: {e}"))
}

/// A Rhai value as JSON (`()` is null).
pub(crate) fn to_json(value: &Dynamic) -> Result<serde_json::Value, String> {
    if value.is_unit() {
        return Ok(serde_json::Value::Null);
    }
    rhai::serde::from_dynamic(value)
        .map_err(|e| format!("a {} cannot be turned into JSON: {e}", value.type_name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(s: &Scripting, source: &str) -> Result<serde_json::Value, String> {
        let ast = s.compile_expression(source).map_err(|e| e.message)?;
        let mut params = Map::new();
        params.insert("max".into(), Dynamic::from(10_i64));
        let empty = Map::new();
        let cx = Context {
            params: &params,
            trigger: &empty,
            steps: &empty,
        };
        to_json(&s.eval(&ast, &cx)?)
    }

    #[test]
    fn expressions_see_params() {
        let s = Scripting::new();
        assert_eq!(eval(&s, "params.max * 2").unwrap(), serde_json::json!(20));
    }

    #[test]
    fn unknown_names_fail_at_compile_time() {
        let s = Scripting::new();
        let e = s.compile_expression("parms.max > 1").unwrap_err();
        assert!(e.message.contains("parms"), "{}", e.message);
        assert_eq!((e.line, e.column), (1, 1));
    }

    #[test]
    fn eval_is_not_available() {
        let s = Scripting::new();
        assert!(s.compile_script("eval(\"1\")").is_err());
    }

    #[test]
    fn a_missing_property_is_an_error_not_unit() {
        let s = Scripting::new();
        let e = eval(&s, "params.mx > 1").unwrap_err();
        assert!(e.contains("mx"), "{e}");
    }
}
