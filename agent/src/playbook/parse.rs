//! Reading a playbook: YAML with source spans, then every check that can be made before a run,
//! so a typo fails at `qmedic validate`, not at 3 a.m.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::model::{
    Approval, Builtin, Expr, MaxRuns, Param, ParamType, Part, Playbook, Safety, Schedule, Step,
    StepRun, Template, Triggers,
};
use super::script::{CompileError, Scripting};
use crate::config::{de_duration, de_opt_duration, suggest, yaml_error};
use crate::location::{Located, Location, Problem};

/// What a playbook may name: action plugins, adapters and connections.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Action plugins by name, with whether each accepts `dry-run: true`.
    pub actions: BTreeMap<String, bool>,
    /// Adapter plugins by name (named only to explain that a step cannot use one).
    pub adapters: BTreeSet<String>,
    /// Configured connections by name.
    pub connections: BTreeSet<String>,
}

impl Catalog {
    /// The plugins loaded in `runtime` and the connections of `config`.
    pub fn new(runtime: &crate::Runtime, config: &crate::Config) -> Catalog {
        let mut catalog = Catalog {
            connections: config.connections.keys().cloned().collect(),
            ..Catalog::default()
        };
        for plugin in runtime.plugins() {
            let m = &plugin.manifest;
            match m.kind {
                crate::PluginKind::Action => {
                    catalog.actions.insert(m.name.clone(), m.dry_run);
                }
                crate::PluginKind::Adapter => {
                    catalog.adapters.insert(m.name.clone());
                }
            }
        }
        catalog
    }
}

/// A playbook that cannot be read or is wrong.
#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    /// The file or folder could not be read.
    #[error("cannot read playbook {path}: {source}")]
    Read {
        /// What was asked for.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The playbook is wrong; every problem found, each at `file:line:column`.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Located>),
}

/// Playbook files under `paths`: files as given, folders' `*.yaml` and `*.yml` (not recursive).
pub fn playbook_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, PlaybookError> {
    let mut files = Vec::new();
    for path in paths {
        let read = |source| PlaybookError::Read {
            path: path.clone(),
            source,
        };
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(read)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                })
                .collect();
            found.sort();
            files.extend(found);
        } else {
            std::fs::metadata(path).map_err(read)?;
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Read and check one playbook file.
pub fn load(path: &Path, catalog: &Catalog) -> Result<Playbook, PlaybookError> {
    let text = std::fs::read_to_string(path).map_err(|source| PlaybookError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path, catalog).map_err(PlaybookError::Invalid)
}

/// Parse and check playbook text; `path` is used in errors. Returns every problem found.
pub fn parse(text: &str, path: &Path, catalog: &Catalog) -> Result<Playbook, Vec<Located>> {
    let raw: RawPlaybook = serde_saphyr::from_str(text).map_err(|e| vec![yaml_error(&e, path)])?;
    let mut cx = Checker {
        path,
        text,
        catalog,
        scripting: super::scripting(),
        errors: Vec::new(),
        params: raw.params.keys().cloned().collect(),
    };
    let playbook = cx.playbook(raw);
    if cx.errors.is_empty() {
        Ok(playbook)
    } else {
        cx.errors
            .sort_by_key(|e| (e.location.line, e.location.column));
        Err(cx.errors)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPlaybook {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    on: RawOn,
    #[serde(default)]
    params: BTreeMap<String, Spanned<RawParam>>,
    #[serde(default)]
    safety: RawSafety,
    steps: Spanned<Vec<Spanned<RawStep>>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawOn {
    #[serde(default)]
    schedule: Option<Spanned<String>>,
    #[serde(default)]
    alert: BTreeMap<String, String>,
    #[serde(default)]
    chat: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawParam {
    #[serde(rename = "type")]
    ty: ParamType,
    #[serde(default)]
    default: Option<Spanned<serde_json::Value>>,
    #[serde(default)]
    description: String,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSafety {
    #[serde(default)]
    lock: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    lock_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    cooldown: Option<Duration>,
    #[serde(default)]
    max_runs: Option<Spanned<RawMaxRuns>>,
    #[serde(default)]
    approval: Option<Spanned<RawApproval>>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawMaxRuns {
    count: u32,
    #[serde(deserialize_with = "de_duration")]
    window: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawApproval {
    #[serde(default)]
    when: Option<Spanned<String>>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default = "default_approval_ttl", deserialize_with = "de_duration")]
    ttl: Duration,
}

fn default_approval_ttl() -> Duration {
    Duration::from_secs(30 * 60)
}

/// How long a lease lives without renewal when `lock-ttl` is not given.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawStep {
    #[serde(default)]
    id: Option<Spanned<String>>,
    #[serde(default)]
    uses: Option<Spanned<String>>,
    #[serde(default)]
    with: BTreeMap<String, Spanned<serde_json::Value>>,
    #[serde(default, rename = "if")]
    condition: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    timeout: Option<Duration>,
    #[serde(default)]
    continue_on_error: bool,
    #[serde(default)]
    script: Option<Spanned<String>>,
}

/// Which `steps.<id>` an expression may name.
#[derive(Clone, Copy)]
enum Scope<'a> {
    /// Before any step runs (`safety.lock`, `approval.when`): none.
    BeforeSteps,
    /// In step `index`: the ids of the steps before it.
    Step(&'a [String]),
}

struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
    catalog: &'a Catalog,
    scripting: &'a Scripting,
    errors: Vec<Located>,
    params: Vec<String>,
}

impl Checker<'_> {
    fn at(&self, span: &serde_saphyr::Location) -> Location {
        Location::at(self.path, span.line(), span.column())
    }

    fn fail(&mut self, at: Location, problem: Problem, message: impl Into<String>) {
        self.errors.push(at.problem(problem, message));
    }

    fn playbook(&mut self, raw: RawPlaybook) -> Playbook {
        let name = raw.name.value.clone();
        if name.is_empty()
            || !name.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
            })
        {
            let at = self.at(&raw.name.referenced);
            self.fail(
                at,
                Problem::BadValue,
                format!(
                    "playbook name `{name}`: use lowercase letters, digits, `-`, `_` and `.` \
                     (it names the playbook in the CLI, the API and run records)"
                ),
            );
        }
        let params = self.params(&raw.params);
        let on = self.triggers(raw.on, &params);
        let safety = self.safety(raw.safety);
        let steps = self.steps(raw.steps);
        Playbook {
            name,
            description: raw.description,
            path: self.path.to_path_buf(),
            on,
            params,
            safety,
            steps,
        }
    }

    fn params(&mut self, raw: &BTreeMap<String, Spanned<RawParam>>) -> BTreeMap<String, Param> {
        let mut params = BTreeMap::new();
        for (name, p) in raw {
            if !is_identifier(name) {
                let at = self.at(&p.referenced);
                self.fail(
                    at,
                    Problem::BadValue,
                    format!(
                        "param `{name}`: a name expressions can use as `params.{name}` needs \
                         letters, digits and `_` only"
                    ),
                );
            }
            if is_identifier(name)
                && self
                    .scripting
                    .compile_expression(&format!("params.{name}"))
                    .is_err()
            {
                let at = self.at(&p.referenced);
                self.fail(
                    at,
                    Problem::BadValue,
                    format!(
                        "param `{name}` is a reserved word in expressions, so `params.{name}` \
                         cannot be read; pick another name"
                    ),
                );
            }
            let ty = p.value.ty;
            let default = match &p.value.default {
                Some(d) => match ty.coerce(&d.value) {
                    Some(v)
                        if !matches!(d.value, serde_json::Value::String(_))
                            || ty == ParamType::String =>
                    {
                        Some(v)
                    }
                    _ => {
                        let at = self.at(&d.referenced);
                        self.fail(
                            at,
                            Problem::WrongType,
                            format!(
                                "param `{name}` is of type {ty}, but its default is {}",
                                describe(&d.value)
                            ),
                        );
                        None
                    }
                },
                None => None,
            };
            params.insert(
                name.clone(),
                Param {
                    ty,
                    default,
                    description: p.value.description.clone(),
                },
            );
        }
        params
    }

    fn triggers(&mut self, raw: RawOn, params: &BTreeMap<String, Param>) -> Triggers {
        if let Some(s) = &raw.schedule
            && let Some((name, _)) = params.iter().find(|(_, p)| p.default.is_none())
        {
            let at = self.at(&s.referenced);
            self.fail(
                at,
                Problem::Missing,
                format!(
                    "a scheduled run has nobody to give param `{name}` a value; give it a default"
                ),
            );
        }
        let schedule = raw.schedule.and_then(|s| {
            match cron::Schedule::from_str(&s.value) {
                Ok(cron) => Some(Schedule {
                    text: s.value.clone(),
                    cron,
                }),
                Err(e) => {
                    let at = self.at(&s.referenced);
                    let fields = s.value.split_whitespace().count();
                    let hint = if fields == 5 {
                        "; qmedic's cron has seconds first: `0 */5 * * * *` is every five minutes"
                    } else {
                        "; write `sec min hour day-of-month month day-of-week`, e.g. `0 */5 * * * *`"
                    };
                    self.fail(
                        at,
                        Problem::BadValue,
                        format!("schedule `{}` is not a cron line ({e}){hint}", s.value),
                    );
                    None
                }
            }
        });
        if let Some(chat) = &raw.chat {
            let mut rest = chat.value.as_str();
            while let Some(open) = rest.find('{') {
                let Some(close) = rest[open..].find('}') else {
                    let at = self.at(&chat.referenced);
                    self.fail(
                        at,
                        Problem::BadValue,
                        "chat pattern has a `{` that is not closed; write `{param}` or `{param=default}`",
                    );
                    break;
                };
                let inner = &rest[open + 1..open + close];
                let name = inner.split('=').next().unwrap_or("").trim();
                if !self.params.iter().any(|p| p == name) {
                    let at = self.at(&chat.referenced);
                    let hint = suggest(name, &self.params);
                    self.fail(
                        at,
                        Problem::UnknownName,
                        format!(
                            "chat pattern binds `{{{inner}}}`, but the playbook has no param `{name}`{hint}"
                        ),
                    );
                }
                rest = &rest[open + close + 1..];
            }
        }
        Triggers {
            schedule,
            alert: raw.alert,
            chat: raw.chat.map(|c| c.value),
        }
    }

    fn safety(&mut self, raw: RawSafety) -> Safety {
        let lock = raw.lock.map(|l| {
            let value = serde_json::Value::String(l.value.clone());
            self.template(&value, &l.referenced, Scope::BeforeSteps)
        });
        let lock_ttl = raw.lock_ttl.unwrap_or(DEFAULT_LOCK_TTL);
        if lock_ttl < Duration::from_secs(1) {
            let at = Location::of_key(self.path, self.text, "lock-ttl");
            self.fail(
                at,
                Problem::BadValue,
                "lock-ttl must be at least 1s: a run renews its lease at a third of it",
            );
        }
        let max_runs = raw.max_runs.map(|m| {
            if m.value.count == 0 || m.value.window.is_zero() {
                let at = self.at(&m.referenced);
                self.fail(
                    at,
                    Problem::BadValue,
                    "max-runs needs a count and a window above zero, e.g. `{ count: 3, window: 1h }`",
                );
            }
            MaxRuns {
                count: m.value.count,
                window: m.value.window,
            }
        });
        let approval = raw.approval.map(|a| Approval {
            when: a
                .value
                .when
                .as_ref()
                .and_then(|w| self.expression(&w.value, &w.referenced, 0, Scope::BeforeSteps)),
            roles: a.value.roles.clone(),
            ttl: a.value.ttl,
        });
        Safety {
            lock,
            lock_ttl,
            cooldown: raw.cooldown,
            max_runs,
            approval,
            dry_run: raw.dry_run,
        }
    }

    fn steps(&mut self, raw: Spanned<Vec<Spanned<RawStep>>>) -> Vec<Step> {
        if raw.value.is_empty() {
            let at = self.at(&raw.referenced);
            self.fail(at, Problem::Missing, "a playbook needs at least one step");
        }
        let mut ids: Vec<String> = Vec::new();
        let mut steps = Vec::new();
        for (i, s) in raw.value.into_iter().enumerate() {
            let label = s
                .value
                .id
                .as_ref()
                .map_or_else(|| format!("step {}", i + 1), |id| id.value.clone());
            let step = self.step(s, &ids, label);
            if let Some(id) = &step.id {
                ids.push(id.clone());
            }
            steps.push(step);
        }
        steps
    }

    fn step(&mut self, s: Spanned<RawStep>, earlier: &[String], label: String) -> Step {
        let at = self.at(&s.referenced);
        let raw = s.value;
        if let Some(id) = &raw.id {
            let here = self.at(&id.referenced);
            if !is_identifier(&id.value) {
                let fixed = id.value.replace(['-', ' ', '.'], "_");
                self.fail(
                    here,
                    Problem::BadValue,
                    format!(
                        "step id `{}`: expressions read it as `steps.{}`, so use letters, digits \
                         and `_`; e.g. `{fixed}`",
                        id.value, id.value
                    ),
                );
            } else if self
                .scripting
                .compile_expression(&format!("steps.{}", id.value))
                .is_err()
            {
                self.fail(
                    here,
                    Problem::BadValue,
                    format!(
                        "step id `{}` is a reserved word in expressions, so `steps.{}` cannot \
                         be read; pick another id",
                        id.value, id.value
                    ),
                );
            } else if earlier.contains(&id.value) {
                self.fail(
                    here,
                    Problem::Duplicate,
                    format!("step id `{}` is used twice; ids must be unique", id.value),
                );
            }
        }
        let scope = Scope::Step(earlier);
        let run = match (&raw.uses, &raw.script) {
            (Some(_), Some(_)) => {
                self.fail(
                    at.clone(),
                    Problem::BadValue,
                    format!("{label}: has both `uses` and `script`; a step does one of them"),
                );
                None
            }
            (None, None) => {
                self.fail(
                    at.clone(),
                    Problem::Missing,
                    format!(
                        "{label}: says neither `uses` (a plugin or stats, list, log, sleep) nor `script`"
                    ),
                );
                None
            }
            (Some(uses), None) => self.uses(uses),
            (None, Some(script)) => {
                if !raw.with.is_empty() {
                    self.fail(
                        at.clone(),
                        Problem::BadValue,
                        format!("{label}: a `script` step takes no `with`; use params and steps in the script"),
                    );
                }
                self.code(&script.value, &script.referenced, 0, scope, true)
                    .map(StepRun::Script)
            }
        };
        if let Some(StepRun::Builtin(b)) = &run {
            self.builtin_inputs(b, &raw.with, &at, &label);
        }
        let with = raw
            .with
            .iter()
            .map(|(k, v)| (k.clone(), self.template(&v.value, &v.referenced, scope)))
            .collect();
        let condition = raw
            .condition
            .as_ref()
            .and_then(|c| self.expression(&c.value, &c.referenced, 0, scope));
        if raw.timeout.is_some_and(|t| t.is_zero()) {
            let here = Location::of_key(self.path, self.text, "timeout");
            self.fail(
                here,
                Problem::BadValue,
                format!("{label}: timeout must be above zero"),
            );
        }
        Step {
            id: raw.id.map(|i| i.value),
            label,
            run: run.unwrap_or(StepRun::Builtin(Builtin::Log)),
            with,
            condition,
            timeout: raw.timeout,
            continue_on_error: raw.continue_on_error,
        }
    }

    fn uses(&mut self, uses: &Spanned<String>) -> Option<StepRun> {
        let name = uses.value.as_str();
        if let Some(b) = Builtin::ALL.iter().find(|b| b.name() == name) {
            return Some(StepRun::Builtin(*b));
        }
        if let Some(dry_run) = self.catalog.actions.get(name) {
            return Some(StepRun::Action {
                plugin: name.to_string(),
                dry_run: *dry_run,
            });
        }
        let at = self.at(&uses.referenced);
        if self.catalog.adapters.contains(name) {
            self.fail(
                at,
                Problem::BadValue,
                format!(
                    "`{name}` is an adapter: it serves a connection's broker calls; a step uses an \
                     action, or the built-ins stats, list, log and sleep"
                ),
            );
            return None;
        }
        let known: Vec<String> = Builtin::ALL
            .iter()
            .map(|b| b.name().to_string())
            .chain(self.catalog.actions.keys().cloned())
            .collect();
        let hint = suggest(name, &known);
        self.fail(
            at,
            Problem::UnknownName,
            format!("unknown plugin `{name}`{hint}; `qmedic plugin list` shows the loaded actions"),
        );
        None
    }

    fn builtin_inputs(
        &mut self,
        b: &Builtin,
        with: &BTreeMap<String, Spanned<serde_json::Value>>,
        at: &Location,
        label: &str,
    ) {
        let (required, optional) = b.inputs();
        for (key, value) in with {
            if !required.contains(&key.as_str()) && !optional.contains(&key.as_str()) {
                let known: Vec<String> = required
                    .iter()
                    .chain(optional)
                    .map(|s| s.to_string())
                    .collect();
                let hint = suggest(key, &known);
                let here = self.at(&value.referenced);
                self.fail(
                    here,
                    Problem::UnknownField,
                    format!(
                        "{label}: `{}` takes no input `{key}`{hint}; it takes {}",
                        b.name(),
                        known.join(", ")
                    ),
                );
            }
        }
        for key in required {
            if !with.contains_key(*key) {
                self.fail(
                    at.clone(),
                    Problem::Missing,
                    format!("{label}: `{}` needs `with: {{ {key}: … }}`", b.name()),
                );
            }
        }
        if let Some(conn) = with.get("connection")
            && let serde_json::Value::String(name) = &conn.value
            && !name.contains("${{")
            && !self.catalog.connections.contains(name)
        {
            let here = self.at(&conn.referenced);
            let hint = suggest(name, &self.catalog.connections);
            self.fail(
                here,
                Problem::UnknownName,
                format!("{label}: connection `{name}` is not configured{hint}"),
            );
        }
        if let (Builtin::Sleep, Some(d)) = (b, with.get("duration"))
            && let serde_json::Value::String(text) = &d.value
            && !text.contains("${{")
            && let Err(e) = humantime::parse_duration(text)
        {
            let here = self.at(&d.referenced);
            self.fail(
                here,
                Problem::BadValue,
                format!("{label}: `{text}` is not a duration ({e}); write e.g. 500ms, 10s"),
            );
        }
    }

    /// A value that may hold `${{ }}`: literal, one expression, interpolated text, or a
    /// list or map of those.
    fn template(
        &mut self,
        value: &serde_json::Value,
        span: &serde_saphyr::Location,
        scope: Scope<'_>,
    ) -> Template {
        match value {
            serde_json::Value::String(text) if text.contains("${{") => {
                self.interpolated(text, span, scope)
            }
            serde_json::Value::Array(items) => Template::List(
                items
                    .iter()
                    .map(|i| self.template(i, span, scope))
                    .collect(),
            ),
            serde_json::Value::Object(map) => Template::Map(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.template(v, span, scope)))
                    .collect(),
            ),
            other => Template::Literal(other.clone()),
        }
    }

    fn interpolated(
        &mut self,
        text: &str,
        span: &serde_saphyr::Location,
        scope: Scope<'_>,
    ) -> Template {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(open) = rest.find("${{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let body_start = open + 3;
            let Some(len) = rest[body_start..].find("}}") else {
                let at = self.code_at(span, 1, 1, offset + open);
                self.fail(
                    at,
                    Problem::Expression,
                    "`${{` is not closed; write `${{ expression }}`",
                );
                return Template::Literal(serde_json::Value::String(text.to_string()));
            };
            let body = &rest[body_start..body_start + len];
            let lead = body.len() - body.trim_start().len();
            if let Some(e) = self.expression(body.trim(), span, offset + body_start + lead, scope) {
                parts.push(Part::Expr(e));
            }
            offset += body_start + len + 2;
            rest = &rest[body_start + len + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        match parts.as_slice() {
            [Part::Expr(e)] => Template::Expr(e.clone()),
            _ => Template::Text(parts),
        }
    }

    fn expression(
        &mut self,
        source: &str,
        span: &serde_saphyr::Location,
        offset: usize,
        scope: Scope<'_>,
    ) -> Option<Expr> {
        self.code(source, span, offset, scope, false)
    }

    /// Compile an expression or script and check the params and steps it names.
    fn code(
        &mut self,
        source: &str,
        span: &serde_saphyr::Location,
        offset: usize,
        scope: Scope<'_>,
        script: bool,
    ) -> Option<Expr> {
        if source.trim().is_empty() {
            let at = self.code_at(span, 1, 1, offset);
            self.fail(
                at,
                Problem::Expression,
                "empty expression; write e.g. `${{ params.max }}`",
            );
            return None;
        }
        let mut ok = true;
        for (pos, name) in references(source, "params") {
            if !self.params.iter().any(|p| p == name) {
                let (line, column) = line_column(source, pos);
                let at = self.code_at(span, line, column, offset);
                let hint = suggest(name, &self.params);
                self.fail(
                    at,
                    Problem::UnknownName,
                    format!("unknown param `{name}`{hint}; params are declared under `params:`"),
                );
                ok = false;
            }
        }
        for (pos, name) in references(source, "steps") {
            let (line, column) = line_column(source, pos);
            let at = self.code_at(span, line, column, offset);
            match scope {
                Scope::BeforeSteps => {
                    self.fail(
                        at,
                        Problem::UnknownName,
                        format!(
                            "`steps.{name}` is not known here: this is read before any step runs"
                        ),
                    );
                    ok = false;
                }
                Scope::Step(earlier) if !earlier.iter().any(|s| s == name) => {
                    let hint = suggest(name, earlier);
                    self.fail(
                        at,
                        Problem::UnknownName,
                        format!(
                            "unknown step id `{name}`{hint}; an expression can read the steps \
                             before it that have an `id`"
                        ),
                    );
                    ok = false;
                }
                Scope::Step(_) => {}
            }
        }
        let compiled = if script {
            self.scripting.compile_script(source)
        } else {
            self.scripting.compile_expression(source)
        };
        match compiled {
            Ok(ast) => ok.then(|| Expr {
                source: source.to_string(),
                ast,
            }),
            Err(CompileError {
                message,
                line,
                column,
            }) => {
                let at = self.code_at(span, line, column, offset);
                let what = if script { "script" } else { "expression" };
                self.fail(
                    at,
                    Problem::Expression,
                    format!("{what} does not compile: {message}"),
                );
                None
            }
        }
    }

    /// Where `line`:`column` of code that starts `offset` characters into the scalar at `span`
    /// is in the file.
    fn code_at(
        &self,
        span: &serde_saphyr::Location,
        line: usize,
        column: usize,
        offset: usize,
    ) -> Location {
        let start_line = span.line() as usize;
        let start_col = span.column() as usize;
        let lines: Vec<&str> = self.text.lines().collect();
        let first = lines.get(start_line.wrapping_sub(1)).copied().unwrap_or("");
        let head: String = first.chars().skip(start_col.saturating_sub(1)).collect();
        if head.starts_with('|') || head.starts_with('>') {
            let file_line = start_line + line;
            let indent = lines
                .get(start_line..)
                .and_then(|rest| rest.iter().find(|l| !l.trim().is_empty()))
                .map_or(0, |l| l.len() - l.trim_start().len());
            return Location::at(self.path, file_line as u64, (indent + column) as u64);
        }
        let quote = usize::from(head.starts_with('"') || head.starts_with('\''));
        if line == 1 {
            let col = start_col + quote + offset + column - 1;
            Location::at(self.path, start_line as u64, col as u64)
        } else {
            // A block scalar's span is its first content line; every line shares its indent.
            let col = start_col + column - 1;
            Location::at(self.path, (start_line + line - 1) as u64, col as u64)
        }
    }
}

/// `root.<name>` references in code, with the byte offset of each name. String literals and
/// comments are skipped; backtick strings are not, since `${…}` in them is code.
fn references<'a>(code: &'a str, root: &str) -> Vec<(usize, &'a str)> {
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' => {
                let quote = bytes[i];
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            _ => {
                let boundary = i == 0 || !is_ident_byte(bytes[i - 1]);
                if boundary
                    && bytes[i..].starts_with(root.as_bytes())
                    && bytes.get(i + root.len()) == Some(&b'.')
                {
                    let start = i + root.len() + 1;
                    let end = code[start..]
                        .bytes()
                        .position(|b| !is_ident_byte(b))
                        .map_or(code.len(), |p| start + p);
                    if end > start {
                        found.push((start, &code[start..end]));
                    }
                    i = end;
                } else {
                    i += 1;
                }
            }
        }
    }
    found
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_identifier(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.bytes().all(is_ident_byte)
}

/// 1-based line and column of byte `pos` in `code`.
fn line_column(code: &str, pos: usize) -> (usize, usize) {
    let before = &code[..pos];
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    (line, column)
}

fn describe(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "empty".into(),
        serde_json::Value::Bool(b) => format!("the bool {b}"),
        serde_json::Value::Number(n) => format!("the number {n}"),
        serde_json::Value::String(s) => format!("the text \"{s}\""),
        serde_json::Value::Array(_) => "a list".into(),
        serde_json::Value::Object(_) => "a map".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_skip_strings_and_comments() {
        let code = "steps.a.x + \"steps.b\" // steps.c\n + `${steps.d}`";
        let names: Vec<&str> = references(code, "steps").into_iter().map(|r| r.1).collect();
        assert_eq!(names, ["a", "d"]);
    }

    #[test]
    fn references_need_a_boundary() {
        assert!(references("mysteps.a", "steps").is_empty());
    }
}
