//! Property tests of the playbook parser and the expression layer: whatever the input, they
//! answer with a value or an error, never a panic.

use std::path::Path;

use proptest::prelude::*;
use qmedic::playbook::{Catalog, eval_expression, parse};

const VALID: &str = r#"name: orders-dlq-redrive
description: Move dead letters back.
on:
  schedule: "0 */5 * * * *"
  chat: "redrive {max=10}"
params:
  max: { type: int, default: 1000 }
  queue: { type: string, default: orders }
safety:
  lock: "rabbit/${{ params.queue }}"
  cooldown: 10m
  max-runs: { count: 3, window: 1h }
steps:
  - id: dlq
    uses: stats
    with: { connection: rabbit, queue: "${{ params.queue }}.dlq" }
  - id: redrive
    if: steps.dlq.depth > 0 && params.max > 0
    uses: reprocess-dlq
    with: { connection: rabbit, queue: orders.dlq, max: "${{ params.max * 2 }}" }
  - script: |
      let n = 0;
      for i in 0..10 { n += i; }
      log(`moved ${steps.redrive.moved} ${n}`);
"#;

fn catalog() -> Catalog {
    let mut c = Catalog::default();
    c.actions.insert("reprocess-dlq".into(), true);
    c.connections.insert("rabbit".into());
    c
}

fn params() -> serde_json::Map<String, serde_json::Value> {
    let serde_json::Value::Object(m) = serde_json::json!({ "max": 10, "name": "orders", "f": 1.5 })
    else {
        unreachable!("a literal object")
    };
    m
}

/// Pieces of Rhai, joined at random into expressions that are mostly almost right.
const TOKENS: &[&str] = &[
    "params",
    ".",
    "max",
    "name",
    "f",
    "steps",
    "trigger",
    "kind",
    "1",
    "0",
    "-1",
    "2.5",
    "9223372036854775807",
    "+",
    "-",
    "*",
    "/",
    "%",
    "**",
    "==",
    "!=",
    "<",
    ">",
    "&&",
    "||",
    "!",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "#{",
    "\"x\"",
    "`a${",
    "}`",
    "??",
    "?.",
    "in",
    "if",
    "else",
    "loop",
    "while",
    "for",
    "fn",
    "let",
    "=",
    ";",
    ",",
    "x",
    "len",
    "to_string",
    "()",
    "true",
    "false",
    "eval",
    "print",
    "\"",
    "'",
    "\\",
    "\n",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn the_valid_playbook_parses(_x in 0u8..1) {
        prop_assert!(parse(VALID, Path::new("p.yaml"), &catalog()).is_ok());
    }

    #[test]
    fn any_text_is_parsed_or_refused(text in "\\PC{0,300}") {
        let _ = parse(&text, Path::new("p.yaml"), &catalog());
    }

    #[test]
    fn edited_playbooks_are_parsed_or_refused(
        edits in prop::collection::vec((0usize..VALID.len(), any::<char>(), 0u8..3), 1..6)
    ) {
        let mut text: Vec<char> = VALID.chars().collect();
        for (at, c, op) in edits {
            let at = at.min(text.len().saturating_sub(1));
            match op {
                0 if !text.is_empty() => { text.remove(at); }
                1 => text.insert(at, c),
                _ if !text.is_empty() => text[at] = c,
                _ => {}
            }
        }
        let text: String = text.into_iter().collect();
        if let Err(errors) = parse(&text, Path::new("p.yaml"), &catalog()) {
            prop_assert!(!errors.is_empty());
            for e in errors {
                prop_assert!(e.to_string().starts_with("p.yaml"), "{}", e);
            }
        }
    }

    #[test]
    fn any_expression_evaluates_or_fails(source in "\\PC{0,120}") {
        let _ = eval_expression(&source, &params());
    }

    #[test]
    fn token_soup_evaluates_or_fails(
        tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..40)
    ) {
        let _ = eval_expression(&tokens.join(" "), &params());
    }
}

#[test]
fn expressions_cannot_loop_and_cannot_build_huge_values() {
    let e = eval_expression("{ let n = 0; loop { n += 1; } }", &params()).expect_err("no loops");
    assert!(!e.is_empty());
    for src in ["\"ab\".pad(100000000, 'x')", "[1].pad(100000000, 0)"] {
        let e = eval_expression(src, &params()).expect_err(src);
        assert!(e.contains("grew past its limit"), "{src}: {e}");
    }
}

#[test]
fn references_in_text_with_wide_characters_do_not_panic() {
    // Found by `edited_playbooks_are_parsed_or_refused`: a multi-byte character right before
    // `params.` was sliced through the middle.
    let text = "name: x\nparams:\n  max: { type: int, default: 1 }\nsteps:\n  - if: pa\u{48ad7}ams.max > 0 && \u{ac9fa}params.max > 0\n    uses: log\n    with: { message: hi }\n";
    let _ = parse(text, Path::new("p.yaml"), &catalog());
}
