//! The `qmedic` command line. Parsing and printing only; the work is in the library.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use qmedic::{CallError, Config, Runtime};
use serde_json::json;

/// Self-healing agent for message brokers.
#[derive(Parser)]
#[command(name = "qmedic", version, about, propagate_version = true)]
struct Cli {
    /// Agent config file.
    #[arg(
        long,
        global = true,
        default_value = "qmedic.yaml",
        env = "QMEDIC_CONFIG"
    )]
    config: PathBuf,
    /// `json` prints one JSON document on stdout; everything else goes to stderr.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run scheduled playbooks and serve /healthz, /metrics and /api (plugins, playbooks, runs).
    Serve,
    /// Check playbooks and the config; every error at file:line:column.
    Validate {
        /// Playbook files or folders (default: the config's `playbooks`).
        paths: Vec<PathBuf>,
    },
    /// Run a playbook once, now, and record it.
    Run {
        /// A playbook's name, or the path of a playbook file.
        playbook: String,
        /// A param value, `name=value`; repeat for more.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Run every read, record every change it would make, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Recorded runs, newest first.
    History {
        /// Only this playbook's runs.
        #[arg(long)]
        playbook: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// One run with its steps.
        #[arg(long, conflicts_with_all = ["playbook", "limit"])]
        run: Option<i64>,
    },
    /// Inspect and call plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// A queue's health, from the adapter serving the connection.
    Stats {
        /// A connection named in the config.
        connection: String,
        /// The queue (for Kafka: `topic:group`).
        queue: String,
    },
    /// Move dead-lettered messages back to their origin with the reprocess-dlq plugin: publish,
    /// wait for the broker's confirmation, then remove from the dead-letter queue.
    Redrive(RedriveArgs),
}

#[derive(clap::Args)]
struct RedriveArgs {
    /// A connection named in the config.
    connection: String,
    /// The dead-letter queue to drain (Kafka: a topic, read as group `qmedic-redrive.<topic>`,
    /// or `topic:group`).
    dlq: String,
    /// Send every message here instead of to its origin.
    #[arg(long)]
    to: Option<String>,
    /// Most messages to handle in this run.
    #[arg(long, default_value_t = 1_000)]
    max: u64,
    /// Messages per second, at most.
    #[arg(long)]
    rate: Option<f64>,
    /// Messages per confirm-then-ack round.
    #[arg(long, default_value_t = 100)]
    batch: u32,
    /// Redrives after which a message is parked instead.
    #[arg(long, default_value_t = 5)]
    max_redrives: u32,
    /// Move only messages for which this Rhai expression is true (it sees `headers`, `id`,
    /// `deliveries`, `origin`), e.g. `headers["tenant"] == "acme" && deliveries < 3`.
    #[arg(long)]
    filter: Option<String>,
    /// Where parked messages go (default `<dlq>.parking`).
    #[arg(long)]
    parking: Option<String>,
    /// Report what would move; move nothing.
    #[arg(long)]
    dry_run: bool,
    /// Redrive into a destination that has no consumers.
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Every loaded plugin: name, kind, version, sha256, capabilities.
    List,
    /// One plugin's manifest, digest, grants, limits and health.
    Inspect {
        /// A loaded plugin's name, or a path to a `.wasm` with its plugin.toml beside it.
        plugin: String,
    },
    /// Run an action plugin's `run` and print its report.
    Call {
        /// A loaded action's name, or a path to a `.wasm` with its plugin.toml beside it.
        plugin: String,
        /// Parameters as JSON; `-` reads them from stdin, `@file` from a file.
        #[arg(long, default_value = "{}")]
        input: String,
    },
}

/// How a command failed: exit code 1 (it ran and failed) or 2 (usage or invalid input).
enum Failure {
    Failed(String),
    Usage(String),
}

impl Failure {
    fn code(&self) -> u8 {
        match self {
            Failure::Failed(_) => 1,
            Failure::Usage(_) => 2,
        }
    }

    fn message(&self) -> &str {
        match self {
            Failure::Failed(m) | Failure::Usage(m) => m,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, matches!(cli.command, Command::Serve));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("qmedic: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("qmedic: {}", failure.message());
            if cli.output == Output::Json {
                println!("{}", json!({ "error": failure.message() }));
            }
            ExitCode::from(failure.code())
        }
    }
}

fn init_logging(format: LogFormat, serving: bool) {
    // lapin logs a channel error that qmedic already reports as the call's error.
    let default = if serving {
        "info,lapin=off"
    } else {
        "warn,lapin=off"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("QMEDIC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

async fn run(cli: &Cli) -> Result<(), Failure> {
    let config = load_config(&cli.config)?;
    let runtime = Runtime::new(&config).map_err(|e| Failure::Usage(e.to_string()))?;
    match &cli.command {
        Command::Serve => serve(&config, runtime).await,
        Command::Plugin(PluginCommand::List) => {
            list(&runtime, cli.output);
            Ok(())
        }
        Command::Plugin(PluginCommand::Inspect { plugin }) => {
            let plugin = resolve(&runtime, plugin)?;
            print_doc(cli.output, &plugin.info(), || inspect_text(&plugin.info()));
            Ok(())
        }
        Command::Plugin(PluginCommand::Call { plugin, input }) => {
            call(&runtime, plugin, input, cli.output).await
        }
        Command::Stats { connection, queue } => {
            stats(&runtime, connection, queue, cli.output).await
        }
        Command::Redrive(args) => redrive(&runtime, args, cli.output).await,
        Command::Validate { paths } => validate(&config, &runtime, paths, cli.output),
        Command::Run {
            playbook,
            params,
            dry_run,
        } => run_playbook(&config, runtime, playbook, params, *dry_run, cli.output).await,
        Command::History {
            playbook,
            limit,
            run,
        } => history(&config, playbook.clone(), *limit, *run, cli.output).await,
    }
}

/// The config at `path`. The default path may be absent: the agent then runs with defaults.
fn load_config(path: &Path) -> Result<Config, Failure> {
    if !path.exists() && path == Path::new("qmedic.yaml") {
        tracing::info!("no qmedic.yaml here; running with defaults (see qmedic.example.yaml)");
        return Ok(Config::default());
    }
    Config::load(path).map_err(|e| Failure::Usage(e.to_string()))
}

/// A plugin by name, or loaded from a `.wasm` path.
fn resolve(runtime: &Runtime, plugin: &str) -> Result<std::sync::Arc<qmedic::Plugin>, Failure> {
    if plugin.ends_with(".wasm") || plugin.contains('/') {
        runtime
            .load_file(Path::new(plugin))
            .map_err(|e| Failure::Usage(e.to_string()))
    } else {
        runtime
            .plugin(plugin)
            .map_err(|e| Failure::Usage(e.to_string()))
    }
}

fn print_doc<T: serde::Serialize>(output: Output, doc: &T, text: impl FnOnce() -> String) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(doc)
                .unwrap_or_else(|e| json!({ "error": e.to_string() }).to_string())
        ),
        Output::Text => print!("{}", text()),
    }
}

fn list(runtime: &Runtime, output: Output) {
    let infos: Vec<_> = runtime.plugins().iter().map(|p| p.info()).collect();
    print_doc(output, &infos, || {
        let mut out = format!(
            "{:<20} {:<8} {:<9} {:<14} {:<22} {}\n",
            "NAME", "KIND", "VERSION", "SHA256", "CAPABILITIES", "ORIGIN"
        );
        for i in &infos {
            let caps = i
                .capabilities
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let origin = match &i.origin {
                qmedic::Origin::BuiltIn => "built-in".to_string(),
                qmedic::Origin::File(p) => p.display().to_string(),
            };
            let status = if i.quarantined.is_some() {
                " (quarantined)"
            } else {
                ""
            };
            out += &format!(
                "{:<20} {:<8} {:<9} {:<14} {:<22} {origin}{status}\n",
                i.name,
                i.kind.to_string(),
                i.version,
                &i.sha256[..12],
                if caps.is_empty() { "-" } else { &caps }
            );
        }
        out
    });
}

fn inspect_text(i: &qmedic::PluginInfo) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let mut out = format!(
        "name:         {}\nkind:         {}\nversion:      {}\nwit:          qmedic:plugin@{}\n",
        i.name, i.kind, i.version, i.wit
    );
    if !i.description.is_empty() {
        out += &format!("description:  {}\n", i.description);
    }
    if let Some(b) = &i.broker {
        out += &format!("serves:       {b} connections\n");
    }
    let caps: Vec<String> = i.capabilities.iter().map(ToString::to_string).collect();
    out += &format!(
        "sha256:       {}\ncapabilities: {}\n",
        i.sha256,
        list(&caps)
    );
    out += &format!(
        "connections:  {}\nscalers:      {}\n",
        list(&i.grant.connections),
        list(&i.grant.scalers)
    );
    out += &format!(
        "limits:       timeout {} ms, memory {} bytes, output {} bytes\n",
        i.timeout_ms, i.memory_bytes, i.output_bytes
    );
    out += &match &i.origin {
        qmedic::Origin::BuiltIn => "origin:       built-in\n".to_string(),
        qmedic::Origin::File(p) => format!("origin:       {}\n", p.display()),
    };
    if let Some(q) = &i.quarantined {
        out += &format!("quarantined:  {q}\n");
    }
    out
}

fn read_input(input: &str) -> Result<String, Failure> {
    let text = if input == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Failure::Usage(format!("cannot read --input from stdin: {e}")))?;
        s
    } else if let Some(file) = input.strip_prefix('@') {
        std::fs::read_to_string(file)
            .map_err(|e| Failure::Usage(format!("cannot read --input file {file}: {e}")))?
    } else {
        input.to_string()
    };
    serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
        Failure::Usage(format!(
            "--input is not JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    Ok(text)
}

async fn call(runtime: &Runtime, plugin: &str, input: &str, output: Output) -> Result<(), Failure> {
    let params = read_input(input)?;
    let name = resolve(runtime, plugin)?.manifest.name.clone();
    let call = runtime.call_action(&name, &params).await;
    report(call, &name, output)
}

/// Print an action call's logs and report; map its failure to an exit code.
fn report(call: qmedic::Call, name: &str, output: Output) -> Result<(), Failure> {
    if output == Output::Text {
        for line in &call.logs {
            eprintln!("[{} {}] {}", line.plugin, line.level, line.message);
        }
    }
    match call.outcome {
        Ok(report) => {
            let value: serde_json::Value =
                serde_json::from_str(&report).unwrap_or(serde_json::Value::String(report));
            match output {
                Output::Json => println!(
                    "{}",
                    json!({ "plugin": name, "report": value, "duration_ms": call.duration.as_millis() as u64, "logs": call.logs })
                ),
                Output::Text => println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                ),
            }
            Ok(())
        }
        Err(e) => Err(call_failure(e)),
    }
}

async fn stats(
    runtime: &Runtime,
    connection: &str,
    queue: &str,
    output: Output,
) -> Result<(), Failure> {
    let stats = runtime
        .stats(connection, queue)
        .await
        .map_err(call_failure)?;
    print_doc(output, &stats, || {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let mut out = format!("{connection} {queue}\n");
        out += &format!(
            "  depth:          {}\n  in-flight:      {}\n",
            stats.depth, stats.in_flight
        );
        out += &format!(
            "  consumers:      {}\n",
            opt(stats.consumers.map(|c| c.to_string()))
        );
        out += &format!(
            "  publish rate:   {}\n",
            opt(stats.publish_rate.map(|r| format!("{r:.1}/s")))
        );
        out += &format!(
            "  ack rate:       {}\n",
            opt(stats.ack_rate.map(|r| format!("{r:.1}/s")))
        );
        out += &format!(
            "  redelivered:    {}\n",
            opt(stats.redelivered.map(|r| r.to_string()))
        );
        out += &format!("  dead-letters to {}\n", opt(stats.dead_letter.clone()));
        if let Some(trend) = &stats.trend {
            out += &format!("  trend:          {trend}\n");
        }
        for (k, v) in &stats.extra {
            out += &format!("  {k}: {v}\n");
        }
        out
    });
    Ok(())
}

async fn redrive(runtime: &Runtime, a: &RedriveArgs, output: Output) -> Result<(), Failure> {
    let params = json!({
        "connection": a.connection, "queue": a.dlq, "to": a.to, "max": a.max, "rate": a.rate,
        "batch": a.batch, "max-redrives": a.max_redrives, "parking": a.parking,
        "dry-run": a.dry_run, "force": a.force, "filter": a.filter,
    });
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(a.max);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {pos}/{len} ({per_sec}, {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!("redriving {}", a.dlq));
        bar
    });
    let call = match &bar {
        Some(bar) => {
            let b = bar.clone();
            let progress: qmedic::Progress =
                std::sync::Arc::new(move |done, _| b.set_position(done));
            runtime
                .call_action_with_progress("reprocess-dlq", &params.to_string(), progress)
                .await
        }
        None => {
            runtime
                .call_action("reprocess-dlq", &params.to_string())
                .await
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    report(call, "reprocess-dlq", output)
}

/// A plugin that finds its parameters invalid, or a call to something that is not there, is a
/// usage error; anything else failed.
fn call_failure(e: CallError) -> Failure {
    match e {
        CallError::Plugin {
            error: qmedic::PluginFailure::Invalid(_),
            ..
        } => Failure::Usage(e.to_string()),
        e if e.is_usage() => Failure::Usage(e.to_string()),
        e => Failure::Failed(e.to_string()),
    }
}

/// Every playbook under `paths`, checked; all problems of all files in one error.
fn load_playbooks(
    paths: &[PathBuf],
    catalog: &qmedic::Catalog,
) -> Result<Vec<Arc<qmedic::Playbook>>, Failure> {
    let files =
        qmedic::playbook::playbook_files(paths).map_err(|e| Failure::Usage(e.to_string()))?;
    let mut problems = Vec::new();
    let mut loaded: Vec<Arc<qmedic::Playbook>> = Vec::new();
    for file in files {
        match qmedic::playbook::load(&file, catalog) {
            Ok(p) => {
                if let Some(other) = loaded.iter().find(|o| o.name == p.name) {
                    problems.push(format!(
                        "{}: playbook name `{}` is also used by {}; names must be unique",
                        file.display(),
                        p.name,
                        other.path.display()
                    ));
                } else {
                    loaded.push(Arc::new(p));
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(Failure::Usage(problems.join("\n")))
    }
}

fn validate(
    config: &Config,
    runtime: &Runtime,
    paths: &[PathBuf],
    output: Output,
) -> Result<(), Failure> {
    let catalog = qmedic::Catalog::new(runtime, config);
    let paths = if paths.is_empty() {
        config.playbook_paths()
    } else {
        paths.to_vec()
    };
    let files =
        qmedic::playbook::playbook_files(&paths).map_err(|e| Failure::Usage(e.to_string()))?;
    let mut report = Vec::new();
    let mut bad = 0;
    for file in &files {
        let (name, errors) = match qmedic::playbook::load(file, &catalog) {
            Ok(p) => (Some(p.name), Vec::new()),
            Err(qmedic::playbook::PlaybookError::Invalid(errors)) => (None, errors),
            Err(e) => (
                None,
                vec![qmedic::Location::file(file).problem(qmedic::Problem::Syntax, e.to_string())],
            ),
        };
        bad += usize::from(!errors.is_empty());
        report.push((file.clone(), name, errors));
    }
    match output {
        Output::Json => println!(
            "{}",
            json!({
                "config": config.path,
                "files": report.iter().map(|(file, name, errors)| json!({
                    "path": file, "playbook": name, "ok": errors.is_empty(),
                    "errors": errors.iter().map(|e| json!({
                        "location": e.location.to_string(), "line": e.location.line,
                        "column": e.location.column, "problem": e.problem, "message": e.message,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        ),
        Output::Text => {
            for (file, name, errors) in &report {
                match name {
                    Some(n) => println!("ok      {} ({n})", file.display()),
                    None => {
                        println!("invalid {}", file.display());
                        for e in errors {
                            println!("  {e}");
                        }
                    }
                }
            }
            println!(
                "{} playbook(s) checked, {bad} invalid; config {} ok",
                files.len(),
                config.path.display()
            );
        }
    }
    if bad > 0 {
        return Err(Failure::Usage(format!("{bad} playbook(s) invalid")));
    }
    Ok(())
}

async fn open_store(config: &Config) -> Result<Arc<dyn qmedic::Store>, Failure> {
    qmedic::store::open(&config.store)
        .await
        .map_err(|e| Failure::Failed(e.to_string()))
}

fn parse_params(
    given: &[String],
) -> Result<std::collections::BTreeMap<String, serde_json::Value>, Failure> {
    given
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| {
                    (
                        k.trim().to_string(),
                        serde_json::Value::String(v.to_string()),
                    )
                })
                .ok_or_else(|| Failure::Usage(format!("--param `{kv}`: write it as name=value")))
        })
        .collect()
}

async fn run_playbook(
    config: &Config,
    runtime: Runtime,
    playbook: &str,
    params: &[String],
    dry_run: bool,
    output: Output,
) -> Result<(), Failure> {
    let catalog = qmedic::Catalog::new(&runtime, config);
    let params = parse_params(params)?;
    let pb = if playbook.ends_with(".yaml") || playbook.ends_with(".yml") || playbook.contains('/')
    {
        Arc::new(
            qmedic::playbook::load(Path::new(playbook), &catalog)
                .map_err(|e| Failure::Usage(e.to_string()))?,
        )
    } else {
        let all = load_playbooks(&config.playbook_paths(), &catalog)?;
        let names: Vec<String> = all.iter().map(|p| p.name.clone()).collect();
        all.into_iter()
            .find(|p| p.name == playbook)
            .ok_or_else(|| {
                Failure::Usage(format!(
                    "no playbook `{playbook}` in {}; it has {}",
                    config
                        .playbook_paths()
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                ))
            })?
    };
    let store = open_store(config).await?;
    let executor =
        qmedic::Executor::new(runtime, store, config.agent_name(), qmedic::Metrics::new());
    let who = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    let summary = executor
        .run(
            &pb,
            qmedic::RunRequest {
                trigger: "manual".into(),
                who,
                params,
                dry_run,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| match e {
            qmedic::playbook::RunError::Params { .. } => Failure::Usage(e.to_string()),
            e => Failure::Failed(e.to_string()),
        })?;
    print_doc(output, &summary, || run_text(&summary));
    match summary.outcome {
        qmedic::playbook::Outcome::Succeeded => Ok(()),
        other => Err(Failure::Failed(format!(
            "run {} of `{}` {}: {}",
            summary.run_id.unwrap_or_default(),
            summary.playbook,
            other.as_str(),
            summary.error.as_deref().unwrap_or("")
        ))),
    }
}

fn run_text(s: &qmedic::RunSummary) -> String {
    let mut out = format!(
        "run {} of {}: {}{} in {} ms\n",
        s.run_id.unwrap_or_default(),
        s.playbook,
        s.outcome.as_str(),
        if s.dry_run { " (dry run)" } else { "" },
        s.duration_ms
    );
    for step in &s.steps {
        out += &format!(
            "  {:<10} {} ({}) {} ms{}\n",
            step.outcome,
            step.step,
            step.uses,
            step.duration_ms,
            step.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
        for line in &step.log {
            out += &format!("             | {line}\n");
        }
    }
    if let Some(e) = &s.error {
        out += &format!("  error: {e}\n");
    }
    for c in &s.changes {
        out += &format!("  change: {c}\n");
    }
    out
}

/// One recorded run for a terminal: who started it and how, then each step with its inputs,
/// what it logged and how it ended.
fn record_text(r: &qmedic::store::RunRecord) -> String {
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
            .unwrap_or_else(|| ms.to_string())
    };
    let mut out = format!(
        "run {} of {}: {}{}\n  trigger:  {} by {} on agent {}\n  started:  {}\n",
        r.id,
        r.playbook,
        r.outcome,
        if r.dry_run { " (dry run)" } else { "" },
        r.trigger,
        r.who,
        r.agent,
        time(r.started_at)
    );
    if let Some(f) = r.finished_at {
        out += &format!("  finished: {} ({} ms)\n", time(f), f - r.started_at);
    }
    out += &format!("  params:   {}\n", r.params);
    if let (Some(key), Some(token)) = (&r.lease_key, r.lease_token) {
        out += &format!("  lease:    {key} (fencing token {token})\n");
    }
    if let Some(e) = &r.error {
        out += &format!("  error:    {e}\n");
    }
    for step in &r.steps {
        out += &format!(
            "  {:<10} {} ({}) {} ms\n",
            step.outcome, step.step, step.uses, step.duration_ms
        );
        if !step.input.is_null() && step.input != serde_json::json!({}) {
            out += &format!("             with   {}\n", step.input);
        }
        if !step.output.is_null() {
            out += &format!("             output {}\n", step.output);
        }
        if let Some(e) = &step.error {
            out += &format!("             error  {e}\n");
        }
        for line in &step.log {
            out += &format!("             | {line}\n");
        }
    }
    if let Some(changes) = r.changes.as_array() {
        for c in changes {
            out += &format!("  change: {c}\n");
        }
    }
    out
}

async fn history(
    config: &Config,
    playbook: Option<String>,
    limit: u32,
    run: Option<i64>,
    output: Output,
) -> Result<(), Failure> {
    let store = open_store(config).await?;
    if let Some(id) = run {
        let run = store
            .run(id)
            .await
            .map_err(|e| Failure::Failed(e.to_string()))?
            .ok_or_else(|| Failure::Usage(format!("no run {id} in {}", config.store)))?;
        print_doc(output, &run, || record_text(&run));
        return Ok(());
    }
    let runs = store
        .runs(&qmedic::store::RunQuery { playbook, limit })
        .await
        .map_err(|e| Failure::Failed(e.to_string()))?;
    print_doc(output, &runs, || {
        let mut out = format!(
            "{:>6}  {:<24} {:<9} {:<14} {:<20} {:>8}  error\n",
            "run", "playbook", "trigger", "outcome", "started (UTC)", "ms"
        );
        for r in &runs {
            let started = chrono::DateTime::from_timestamp_millis(r.started_at)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            let took = r
                .finished_at
                .map(|f| (f - r.started_at).to_string())
                .unwrap_or_else(|| "-".into());
            out += &format!(
                "{:>6}  {:<24} {:<9} {:<14} {:<20} {:>8}  {}\n",
                r.id,
                r.playbook,
                r.trigger,
                format!("{}{}", r.outcome, if r.dry_run { "*" } else { "" }),
                started,
                took,
                r.error.as_deref().unwrap_or("")
            );
        }
        if runs.iter().any(|r| r.dry_run) {
            out += "* dry run\n";
        }
        out
    });
    Ok(())
}

async fn serve(config: &Config, runtime: Runtime) -> Result<(), Failure> {
    let catalog = qmedic::Catalog::new(&runtime, config);
    let playbooks = load_playbooks(&config.playbook_paths(), &catalog)?;
    let store = open_store(config).await?;
    let agent = config.agent_name();
    match store.abandon_runs(&agent, qmedic::store::now_ms()).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::warn!(agent = %agent, runs = n, "marked runs left running by an earlier start as abandoned")
        }
        Err(e) => return Err(Failure::Failed(e.to_string())),
    }
    let executor = qmedic::Executor::new(
        runtime.clone(),
        store,
        agent.clone(),
        qmedic::Metrics::new(),
    );
    let schedules = qmedic::triggers::spawn_schedules(&executor, &playbooks);
    let app = qmedic::server::router(qmedic::server::Api {
        runtime,
        executor,
        playbooks: Arc::new(playbooks),
    });
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| {
            Failure::Usage(format!(
                "cannot listen on {} (config `listen`): {e}",
                config.listen
            ))
        })?;
    tracing::info!(agent = %agent, store = %config.store.split('@').next_back().unwrap_or(""), "qmedic serving on http://{}", config.listen);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| Failure::Failed(format!("HTTP server stopped: {e}")));
    for s in schedules {
        s.abort();
    }
    served
}

/// Ctrl-C or SIGTERM.
async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
