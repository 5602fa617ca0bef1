//! Malformed playbooks and configs: each error points at the exact `file:line:column` and says
//! what sort of mistake it is, so `qmedic validate` catches a typo before it runs at 3 a.m.

use std::path::Path;

use qmedic::playbook::{Catalog, parse};
use qmedic::{Config, Problem};

fn catalog() -> Catalog {
    let mut c = Catalog::default();
    c.actions.insert("reprocess-dlq".into(), true);
    c.actions.insert("adjust-prefetch".into(), true);
    c.adapters.insert("rabbitmq".into());
    c.connections.insert("rabbit".into());
    c
}

/// A malformed file, where its first error must be, and what it must say.
struct Case {
    name: &'static str,
    text: &'static str,
    line: u64,
    column: u64,
    problem: Problem,
    says: &'static str,
}

const fn case(
    name: &'static str,
    text: &'static str,
    (line, column): (u64, u64),
    problem: Problem,
    says: &'static str,
) -> Case {
    Case {
        name,
        text,
        line,
        column,
        problem,
        says,
    }
}

const PLAYBOOKS: &[Case] = &[
    case(
        "unclosed flow sequence",
        "name: x\nsteps: [\n",
        (2, 8),
        Problem::Syntax,
        "",
    ),
    case(
        "unknown top-level key",
        "name: x\nstep:\n  - uses: log\n",
        (2, 1),
        Problem::UnknownField,
        "step",
    ),
    case(
        "no steps",
        "name: x\ndescription: nothing\n",
        (2, 1),
        Problem::Missing,
        "steps",
    ),
    case(
        "no name",
        "steps:\n  - uses: log\n    with: { message: hi }\n",
        (1, 1),
        Problem::Missing,
        "name",
    ),
    case(
        "name is a list",
        "name: [a]\nsteps:\n  - uses: log\n    with: { message: hi }\n",
        (1, 7),
        Problem::WrongType,
        "",
    ),
    case(
        "name with spaces",
        "name: Orders DLQ\nsteps:\n  - uses: log\n    with: { message: hi }\n",
        (1, 7),
        Problem::BadValue,
        "lowercase",
    ),
    case(
        "empty steps",
        "name: x\nsteps: []\n",
        (2, 8),
        Problem::Missing,
        "at least one step",
    ),
    case(
        "misspelt plugin",
        "name: x\nsteps:\n  - uses: reprocess-dql\n",
        (3, 11),
        Problem::UnknownName,
        "did you mean `reprocess-dlq`",
    ),
    case(
        "adapter used as a step",
        "name: x\nsteps:\n  - uses: rabbitmq\n",
        (3, 11),
        Problem::BadValue,
        "is an adapter",
    ),
    case(
        "step with neither uses nor script",
        "name: x\nsteps:\n  - id: a\n",
        (3, 5),
        Problem::Missing,
        "neither `uses`",
    ),
    case(
        "step with uses and script",
        "name: x\nsteps:\n  - uses: log\n    script: log(\"x\")\n",
        (3, 5),
        Problem::BadValue,
        "both `uses` and `script`",
    ),
    case(
        "unknown step key",
        "name: x\nsteps:\n  - uses: log\n    whith: { message: hi }\n",
        (4, 5),
        Problem::UnknownField,
        "whith",
    ),
    case(
        "duplicate step id",
        "name: x\nsteps:\n  - id: a\n    uses: sleep\n    with: { duration: 1s }\n  - id: a\n    uses: sleep\n    with: { duration: 1s }\n",
        (6, 9),
        Problem::Duplicate,
        "used twice",
    ),
    case(
        "step id with a hyphen",
        "name: x\nsteps:\n  - id: main-queue\n    uses: sleep\n    with: { duration: 1s }\n",
        (3, 9),
        Problem::BadValue,
        "main_queue",
    ),
    case(
        "misspelt step id in if",
        "name: x\nsteps:\n  - id: dlq\n    uses: stats\n    with: { connection: rabbit, queue: q.dlq }\n  - if: steps.dql.depth > 0\n    uses: log\n    with: { message: hi }\n",
        (6, 15),
        Problem::UnknownName,
        "did you mean `dlq`",
    ),
    case(
        "step read before it runs",
        "name: x\nsteps:\n  - if: steps.later.depth > 0\n    uses: log\n    with: { message: hi }\n  - id: later\n    uses: stats\n    with: { connection: rabbit, queue: q }\n",
        (3, 15),
        Problem::UnknownName,
        "unknown step id `later`",
    ),
    case(
        "misspelt param in with",
        "name: x\nparams:\n  max: { type: int, default: 5 }\nsteps:\n  - uses: reprocess-dlq\n    with: { max: \"${{ params.mx }}\" }\n",
        (6, 30),
        Problem::UnknownName,
        "did you mean `max`",
    ),
    case(
        "incomplete condition",
        "name: x\nsteps:\n  - id: a\n    uses: stats\n    with: { connection: rabbit, queue: q }\n  - if: steps.a.depth >\n    uses: log\n    with: { message: hi }\n",
        (6, 24),
        Problem::Expression,
        "does not compile",
    ),
    case(
        "undeclared variable",
        "name: x\nsteps:\n  - if: parms.max > 1\n    uses: log\n    with: { message: hi }\n",
        (3, 9),
        Problem::Expression,
        "parms",
    ),
    case(
        "unclosed interpolation",
        "name: x\nsteps:\n  - uses: log\n    with: { message: \"moved ${{ params.max\" }\n",
        (4, 29),
        Problem::Expression,
        "not closed",
    ),
    case(
        "script that does not compile, inside a block",
        "name: x\nsteps:\n  - script: |\n      let a = 1;\n      let b = ;\n",
        (5, 15),
        Problem::Expression,
        "script does not compile",
    ),
    case(
        "five-field cron",
        "name: x\non:\n  schedule: \"*/5 * * * *\"\nsteps:\n  - uses: log\n    with: { message: hi }\n",
        (3, 13),
        Problem::BadValue,
        "seconds first",
    ),
    case(
        "cron in words",
        "name: x\non:\n  schedule: every minute\nsteps:\n  - uses: log\n    with: { message: hi }\n",
        (3, 13),
        Problem::BadValue,
        "not a cron line",
    ),
    case(
        "param default of the wrong type",
        "name: x\nparams:\n  max: { type: int, default: lots }\nsteps:\n  - uses: log\n    with: { message: hi }\n",
        (3, 30),
        Problem::WrongType,
        "type int",
    ),
    case(
        "unknown param type",
        "name: x\nparams:\n  max: { type: integer }\nsteps:\n  - uses: log\n    with: { message: hi }\n",
        (3, 16),
        Problem::BadValue,
        "integer",
    ),
    case(
        "chat pattern binds no param",
        "name: x\non:\n  chat: \"redrive {queue}\"\nsteps:\n  - uses: log\n    with: { message: hi }\n",
        (3, 9),
        Problem::UnknownName,
        "no param `queue`",
    ),
    case(
        "misspelt built-in input",
        "name: x\nsteps:\n  - uses: stats\n    with: { connection: rabbit, queue: q, pattern: \"*\" }\n",
        (4, 52),
        Problem::UnknownField,
        "takes no input `pattern`",
    ),
    case(
        "missing built-in input",
        "name: x\nsteps:\n  - uses: stats\n    with: { connection: rabbit }\n",
        (3, 5),
        Problem::Missing,
        "queue",
    ),
    case(
        "unknown connection",
        "name: x\nsteps:\n  - uses: stats\n    with: { connection: rabit, queue: q }\n",
        (4, 25),
        Problem::UnknownName,
        "did you mean `rabbit`",
    ),
    case(
        "cooldown in words",
        "name: x\nsafety:\n  cooldown: ten minutes\nsteps:\n  - uses: log\n    with: { message: hi }\n",
        (3, 13),
        Problem::BadValue,
        "not a duration",
    ),
    case(
        "sleep for a word",
        "name: x\nsteps:\n  - uses: sleep\n    with: { duration: soon }\n",
        (4, 23),
        Problem::BadValue,
        "not a duration",
    ),
    case(
        "lock reads a step",
        "name: x\nsafety:\n  lock: \"${{ steps.a.depth }}\"\nsteps:\n  - id: a\n    uses: stats\n    with: { connection: rabbit, queue: q }\n",
        (3, 20),
        Problem::UnknownName,
        "before any step runs",
    ),
    case(
        "max-runs of zero",
        "name: x\nsafety:\n  max-runs: { count: 0, window: 1h }\nsteps:\n  - uses: log\n    with: { message: hi }\n",
        (3, 13),
        Problem::BadValue,
        "above zero",
    ),
    case(
        "timeout as a list",
        "name: x\nsteps:\n  - uses: log\n    timeout: [1]\n    with: { message: hi }\n",
        (4, 14),
        Problem::WrongType,
        "",
    ),
    case(
        "continue-on-error as a word",
        "name: x\nsteps:\n  - uses: log\n    continue-on-error: maybe\n    with: { message: hi }\n",
        (4, 24),
        Problem::WrongType,
        "",
    ),
    case(
        "key given twice",
        "name: a\nname: b\nsteps:\n  - uses: log\n    with: { message: hi }\n",
        (2, 1),
        Problem::Duplicate,
        "",
    ),
    case(
        "approval reads an unknown param",
        "name: x\nparams:\n  max: { type: int, default: 5 }\nsafety:\n  approval: { when: \"params.maxx > 10\" }\nsteps:\n  - uses: log\n    with: { message: hi }\n",
        (5, 29),
        Problem::UnknownName,
        "did you mean `max`",
    ),
    case(
        "param name expressions cannot read",
        "name: x\nparams:\n  max-depth: { type: int, default: 5 }\nsteps:\n  - uses: log\n    with: { message: hi }\n",
        (3, 14),
        Problem::BadValue,
        "params.max-depth",
    ),
    case(
        "step id that is a reserved word",
        "name: x\nsteps:\n  - id: call\n    uses: sleep\n    with: { duration: 1s }\n",
        (3, 9),
        Problem::BadValue,
        "reserved word",
    ),
    case(
        "scheduled with a required param",
        "name: x\non:\n  schedule: \"0 * * * * *\"\nparams:\n  queue: { type: string }\nsteps:\n  - uses: log\n    with: { message: hi }\n",
        (3, 13),
        Problem::Missing,
        "give it a default",
    ),
];

const CONFIGS: &[Case] = &[
    case(
        "unknown config key",
        "listn: 127.0.0.1:1\n",
        (1, 1),
        Problem::UnknownField,
        "listn",
    ),
    case(
        "unset environment variable",
        "connections:\n  r:\n    kind: rabbitmq\n    password: ${QMEDIC_TEST_SURELY_UNSET}\n",
        (4, 15),
        Problem::Environment,
        "QMEDIC_TEST_SURELY_UNSET",
    ),
    case(
        "grant of an unknown connection",
        "connections:\n  rabbit: { kind: rabbitmq }\nplugins:\n  reprocess-dlq:\n    connections: [rabit]\n",
        (5, 19),
        Problem::UnknownName,
        "did you mean `rabbit`",
    ),
    case(
        "timeout in words",
        "runtime:\n  limits:\n    timeout: fast\n",
        (3, 14),
        Problem::BadValue,
        "not a duration",
    ),
    case(
        "store of an unknown kind",
        "store: mysql://db/qmedic\n",
        (1, 1),
        Problem::BadValue,
        "postgres://",
    ),
    case(
        "max_instances as text",
        "runtime:\n  max_instances: many\n",
        (2, 18),
        Problem::WrongType,
        "",
    ),
    case(
        "connection without kind",
        "connections:\n  rabbit:\n    url: amqp://x\n",
        (3, 5),
        Problem::Missing,
        "kind",
    ),
];

fn check(cases: &[Case], file: &str, parse: impl Fn(&str) -> Option<qmedic::Located>) {
    let mut wrong = Vec::new();
    for c in cases {
        let Some(e) = parse(c.text) else {
            wrong.push(format!("{}: accepted, but must be refused", c.name));
            continue;
        };
        let text = e.to_string();
        let prefix = format!("{file}:{}:{}: ", c.line, c.column);
        if !text.starts_with(&prefix) || e.problem != c.problem || !text.contains(c.says) {
            wrong.push(format!(
                "{}: wanted {prefix}{:?} saying {:?}, got {:?}: {text}",
                c.name, c.problem, c.says, e.problem
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn malformed_playbooks_point_at_the_mistake() {
    assert!(PLAYBOOKS.len() >= 30);
    let catalog = catalog();
    check(PLAYBOOKS, "playbooks/bad.yaml", |text| {
        parse(text, Path::new("playbooks/bad.yaml"), &catalog)
            .err()
            .map(|mut errors| errors.remove(0))
    });
}

#[test]
fn malformed_configs_point_at_the_mistake() {
    check(CONFIGS, "qmedic.yaml", |text| {
        Config::parse(text, Path::new("qmedic.yaml")).err()
    });
}

#[test]
fn every_problem_in_a_playbook_is_reported_not_just_the_first() {
    let text = "name: x\nparams:\n  max: { type: int, default: 5 }\nsteps:\n  - uses: reprocess-dql\n  - uses: stats\n    with: { connection: rabit, queue: q }\n  - if: params.mx > 1\n    uses: log\n    with: { message: hi }\n";
    let errors = parse(text, Path::new("p.yaml"), &catalog()).expect_err("three mistakes");
    let at: Vec<String> = errors.iter().map(|e| e.location.to_string()).collect();
    assert_eq!(
        at,
        ["p.yaml:5:11", "p.yaml:7:25", "p.yaml:8:16"],
        "{errors:?}"
    );
}

#[test]
fn the_shipped_playbooks_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks");
    let files = qmedic::playbook::playbook_files(&[dir]).expect("playbooks/ exists");
    assert!(files.len() >= 4, "{files:?}");
    let mut catalog = catalog();
    catalog.connections.insert("rabbit-local".into());
    catalog.connections.insert("kafka-local".into());
    catalog.adapters.insert("kafka".into());
    for file in files {
        let p = qmedic::playbook::load(&file, &catalog)
            .unwrap_or_else(|e| panic!("{} is invalid:\n{e}", file.display()));
        assert!(!p.description.is_empty(), "{} has no description", p.name);
    }
}
