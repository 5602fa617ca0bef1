//! A validated playbook: every name resolved, every expression compiled. Nothing here runs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A runbook that qmedic runs on a schedule, an alert, a chat command or by hand.
#[derive(Debug, Clone)]
pub struct Playbook {
    /// How the CLI, the API and run records name it.
    pub name: String,
    /// One paragraph for operators.
    pub description: String,
    /// The file it was read from.
    pub path: PathBuf,
    /// What starts it besides a manual run.
    pub on: Triggers,
    /// Typed parameters, by name.
    pub params: BTreeMap<String, Param>,
    /// Locks, cooldowns, run limits, approvals and dry-run default.
    pub safety: Safety,
    /// What it does, in order.
    pub steps: Vec<Step>,
}

/// What starts a playbook besides `qmedic run`.
#[derive(Debug, Clone, Default)]
pub struct Triggers {
    /// A cron schedule with seconds, run by `qmedic serve`.
    pub schedule: Option<Schedule>,
    /// Alert labels that must all match for an alert to start the playbook.
    pub alert: BTreeMap<String, String>,
    /// A ChatOps command pattern; `{name}` or `{name=default}` binds a param.
    pub chat: Option<String>,
}

/// A parsed cron schedule and the text it came from.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The cron line as written (`sec min hour day-of-month month day-of-week [year]`).
    pub text: String,
    pub(crate) cron: cron::Schedule,
}

impl Schedule {
    /// The first tick strictly after `after`.
    pub fn next_after(
        &self,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.cron.after(&after).next()
    }

    /// The last tick at or before `at`, if one exists after `since`.
    pub fn last_between(
        &self,
        since: chrono::DateTime<chrono::Utc>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.cron.after(&since).take_while(|t| *t <= at).last()
    }
}

/// The type of a param.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// A whole number.
    Int,
    /// A number.
    Float,
    /// Text.
    String,
    /// `true` or `false`.
    Bool,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::String => "string",
            ParamType::Bool => "bool",
        })
    }
}

impl ParamType {
    /// `value` as this type, converting text from the command line; `None` if it is not one.
    pub fn coerce(self, value: &serde_json::Value) -> Option<serde_json::Value> {
        use serde_json::Value;
        match (self, value) {
            (ParamType::Int, Value::Number(n)) if n.is_i64() => Some(value.clone()),
            (ParamType::Int, Value::String(s)) => s.trim().parse::<i64>().ok().map(Value::from),
            (ParamType::Float, Value::Number(n)) => n.as_f64().map(Value::from),
            (ParamType::Float, Value::String(s)) => s.trim().parse::<f64>().ok().map(Value::from),
            (ParamType::Bool, Value::Bool(_)) => Some(value.clone()),
            (ParamType::Bool, Value::String(s)) => match s.trim() {
                "true" | "yes" | "on" => Some(Value::Bool(true)),
                "false" | "no" | "off" => Some(Value::Bool(false)),
                _ => None,
            },
            (ParamType::String, Value::String(_)) => Some(value.clone()),
            _ => None,
        }
    }
}

/// A declared parameter.
#[derive(Debug, Clone)]
pub struct Param {
    /// Its type; values from the CLI, alerts and chat are converted to it.
    pub ty: ParamType,
    /// Used when the trigger gives none; without one the param is required.
    pub default: Option<serde_json::Value>,
    /// What it means, for `qmedic validate` and the API.
    pub description: String,
}

/// The guard rails of a playbook.
#[derive(Debug, Clone)]
pub struct Safety {
    /// Lease key: runs with the same key never overlap, fleet-wide. May use `${{ params.x }}`.
    pub lock: Option<Template>,
    /// How long a lease lives without renewal; a run renews it at a third of this.
    pub lock_ttl: Duration,
    /// After a run that changed something (called an action), no new run for the same
    /// playbook and target for this long.
    pub cooldown: Option<Duration>,
    /// At most this many runs per window.
    pub max_runs: Option<MaxRuns>,
    /// Runs that need a human's approval before they start.
    pub approval: Option<Approval>,
    /// Runs are dry runs unless the trigger says otherwise.
    pub dry_run: bool,
}

/// At most `count` runs per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxRuns {
    /// Runs allowed in one window.
    pub count: u32,
    /// The window's length.
    pub window: Duration,
}

/// When a run needs approval and from whom.
#[derive(Debug, Clone)]
pub struct Approval {
    /// Needs approval only when this is true; always when absent.
    pub when: Option<Expr>,
    /// Roles allowed to approve.
    pub roles: Vec<String>,
    /// How long a request for approval stays open.
    pub ttl: Duration,
}

/// One step.
#[derive(Debug, Clone)]
pub struct Step {
    /// How later steps refer to its output (`steps.<id>`).
    pub id: Option<String>,
    /// Its id, or `step N` (1-based) when it has none, for records and errors.
    pub label: String,
    /// What it runs.
    pub run: StepRun,
    /// Its inputs, with `${{ }}` expressions still to evaluate.
    pub with: Vec<(String, Template)>,
    /// Runs only when this is true.
    pub condition: Option<Expr>,
    /// Fails the step when it takes longer.
    pub timeout: Option<Duration>,
    /// A failure is recorded and the run goes on.
    pub continue_on_error: bool,
}

/// What a step runs.
#[derive(Debug, Clone)]
pub enum StepRun {
    /// One of the engine's own steps.
    Builtin(Builtin),
    /// An action plugin, by name.
    Action {
        /// The plugin's name.
        plugin: String,
        /// It accepts `dry-run: true` and then changes nothing.
        dry_run: bool,
    },
    /// A Rhai script.
    Script(Expr),
}

/// The engine's own steps: reads and pauses, never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// A queue's stats (`connection`, `queue`).
    Stats,
    /// Queue names matching a glob (`connection`, `pattern`).
    List,
    /// A line in the run's log (`message`, optional `level`).
    Log,
    /// Wait (`duration`).
    Sleep,
}

impl Builtin {
    /// The name a step's `uses` gives it.
    pub const fn name(self) -> &'static str {
        match self {
            Builtin::Stats => "stats",
            Builtin::List => "list",
            Builtin::Log => "log",
            Builtin::Sleep => "sleep",
        }
    }

    /// Every built-in, for lookups and suggestions.
    pub const ALL: [Builtin; 4] = [Builtin::Stats, Builtin::List, Builtin::Log, Builtin::Sleep];

    /// `(required, optional)` inputs.
    pub(crate) const fn inputs(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Builtin::Stats => (&["connection", "queue"], &[]),
            Builtin::List => (&["connection", "pattern"], &[]),
            Builtin::Log => (&["message"], &["level"]),
            Builtin::Sleep => (&["duration"], &[]),
        }
    }
}

/// A compiled Rhai expression or script and its source.
#[derive(Debug, Clone)]
pub struct Expr {
    /// As written.
    pub source: String,
    pub(crate) ast: rhai::AST,
}

/// A value from the playbook that may hold `${{ }}` expressions.
#[derive(Debug, Clone)]
pub enum Template {
    /// No expressions in it.
    Literal(serde_json::Value),
    /// Exactly one `${{ }}` and nothing else: the value keeps the expression's type.
    Expr(Expr),
    /// Text with expressions in it: the result is text.
    Text(Vec<Part>),
    /// A list whose items may hold expressions.
    List(Vec<Template>),
    /// A map whose values may hold expressions.
    Map(Vec<(String, Template)>),
}

/// A piece of interpolated text.
#[derive(Debug, Clone)]
pub enum Part {
    /// Text as written.
    Text(String),
    /// An expression whose value is written in.
    Expr(Expr),
}
