//! Tooling for pipeline authors: the committed JSON Schema is the one the parser's types
//! generate, it accepts and refuses what the parser does, and `conveyor check` tells where a
//! problem is.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use conveyor::pipeline::definition::{self, EXAMPLE};
use conveyor::pipeline::schema;

fn conveyor(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn committed_schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/conveyor.schema.json")
}

#[test]
fn the_committed_schema_is_the_one_conveyor_schema_prints() {
    let out = conveyor(&["schema"], Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed, schema::to_pretty_json());
    assert!(printed.ends_with("}\n"));
    let committed = std::fs::read_to_string(committed_schema_path()).unwrap_or_default();
    assert!(
        committed == printed,
        "schema/conveyor.schema.json is not what the parser's types generate; regenerate it with `cargo run -- schema > schema/conveyor.schema.json` and commit it"
    );
    let value: serde_json::Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(value["$id"], schema::SCHEMA_ID);
    assert_eq!(value["title"], "Conveyor pipeline file");
    assert!(
        jsonschema::meta::is_valid(&value),
        "the schema is a valid JSON Schema"
    );
}

/// What the schema says of `text`: `Ok`, or the places it refuses.
fn schema_verdict(validator: &jsonschema::Validator, text: &str) -> Result<(), String> {
    let instance: serde_json::Value = serde_norway::from_str(text).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|err| format!("{}: {err}", err.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// What the parser says of `text`, reading every pipeline as runs do.
fn parser_verdict(text: &str) -> Result<(), String> {
    definition::check(text).map(drop).map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&schema::schema()).unwrap()
}

/// A file with every key the parser takes, each kind of step and prompt.
const EVERYTHING: &str = "
settings:
  trigger_label: ship
  approver_permission: maintain
  allow_self_approval: true
  allowed_bots: ['renovate[bot]']
task_types: {bug: fix, documentation: default}
pipelines:
  default:
    steps:
      - {name: only, run: x}
  fix:
    network: false
    timeout_minutes: 30
    clarification: {max_rounds: 2, timeout_hours: 24}
    retry: {attempts: 3, backoff_seconds: 10, max_backoff_seconds: 60}
    limits: {memory_mb: 2048, processes: 64, file_size_mb: 10}
    protected_paths: ['.github/**']
    steps:
      - name: plan
        prompt: 'Fix {{ task.title }}'
        retryable: true
      - name: written
        prompt: {text: 'Fix it', context_files: [README.md]}
      - name: from-file
        prompt: {template: prompts/fix.md}
      - name: implement
        run: ./fix.sh
        timeout_minutes: 20
        network: true
        limits: {memory_mb: 4096}
        retries: 3
        retryable: true
      - name: check
        run: make test
        verify: true
        retries: 2
      - name: bare
        approval:
      - name: review
        approval:
          message: Look at the schema change
          required_for_paths: ['migrations/**']
      - name: beside
        required_for_paths: ['src/**']
        approval: {}
";

#[test]
fn the_schema_and_the_parser_agree_on_the_examples_and_on_broken_files() {
    let validator = validator();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut valid: Vec<(String, String)> = std::fs::read_dir(examples)
        .unwrap()
        .map(|entry| {
            let file = entry.unwrap().path().join("conveyor.yml");
            let text = std::fs::read_to_string(&file).unwrap();
            (file.display().to_string(), text)
        })
        .collect();
    assert!(valid.len() >= 2, "{valid:?}");
    valid.push(("the documented example".into(), EXAMPLE.into()));
    valid.push(("every key".into(), EVERYTHING.into()));
    valid.push(("no pipelines yet".into(), "pipelines: {}".into()));
    valid.push((
        "empty blocks".into(),
        "settings:\ntask_types: {}\npipelines:\n  default: {steps: [{name: a, run: x, limits: }]}"
            .into(),
    ));
    for (what, text) in &valid {
        assert_eq!(parser_verdict(text), Ok(()), "parser on {what}");
        assert_eq!(schema_verdict(&validator, text), Ok(()), "schema on {what}");
    }

    let pipeline = |steps: &str| format!("pipelines:\n  default:\n    steps: [{steps}]\n");
    let with = |key: &str| {
        format!("pipelines:\n  default:\n    {key}\n    steps: [{{name: a, run: x}}]\n")
    };
    let settings = |block: &str| format!("settings: {block}\npipelines: {{}}\n");
    let invalid: Vec<(&str, String)> = vec![
        ("an unknown top-level key", "pipeline: {}".into()),
        ("no pipelines", "settings: {}".into()),
        ("an unknown pipeline key", with("colour: red")),
        (
            "an unknown clarification key",
            with("clarification: {rounds: 2}"),
        ),
        (
            "too many clarification rounds",
            with("clarification: {max_rounds: 11}"),
        ),
        (
            "no time to answer",
            with("clarification: {timeout_hours: 0}"),
        ),
        ("an unknown step key", pipeline("{name: a, script: x}")),
        ("no steps", "pipelines:\n  default: {steps: []}".into()),
        (
            "no steps key",
            "pipelines:\n  default: {network: false}".into(),
        ),
        ("a step without a name", pipeline("{run: x}")),
        ("a blank name", pipeline("{name: ' ', run: x}")),
        ("a step of no kind", pipeline("{name: a}")),
        ("run and prompt", pipeline("{name: a, run: x, prompt: y}")),
        (
            "run and approval",
            pipeline("{name: a, run: x, approval: {}}"),
        ),
        ("an empty run", pipeline("{name: a, run: }")),
        ("a blank run", pipeline("{name: a, run: '  '}")),
        ("an empty prompt", pipeline("{name: a, prompt: }")),
        (
            "a prompt of both sources",
            pipeline("{name: a, prompt: {template: t.md, text: y}}"),
        ),
        (
            "a prompt of no source",
            pipeline("{name: a, prompt: {context_files: [a]}}"),
        ),
        (
            "an unknown prompt key",
            pipeline("{name: a, prompt: {file: t.md}}"),
        ),
        (
            "a prompt with a timeout",
            pipeline("{name: a, prompt: x, timeout_minutes: 5}"),
        ),
        (
            "a prompt with retries",
            pipeline("{name: a, prompt: x, retries: 1}"),
        ),
        (
            "an approval with network",
            pipeline("{name: a, approval: {}, network: false}"),
        ),
        (
            "an approval with retries",
            pipeline("{name: a, approval: {}, retries: 1}"),
        ),
        (
            "a retryable approval",
            pipeline("{name: a, approval: {}, retryable: true}"),
        ),
        (
            "a verify approval",
            pipeline("{name: a, approval: {}, verify: true}"),
        ),
        (
            "paths on a command",
            pipeline("{name: a, run: x, required_for_paths: [a]}"),
        ),
        (
            "an unknown approval key",
            pipeline("{name: a, approval: {who: me}}"),
        ),
        (
            "a blank approval message",
            pipeline("{name: a, approval: {message: ' '}}"),
        ),
        (
            "a step timeout of 0",
            pipeline("{name: a, run: x, timeout_minutes: 0}"),
        ),
        (
            "a step timeout past a day",
            pipeline("{name: a, run: x, timeout_minutes: 1441}"),
        ),
        (
            "11 step retries",
            pipeline("{name: a, run: x, retries: 11}"),
        ),
        (
            "a negative retry count",
            pipeline("{name: a, run: x, retries: -1}"),
        ),
        (
            "network as text",
            pipeline("{name: a, run: x, network: 'no'}"),
        ),
        (
            "a step limit too small",
            pipeline("{name: a, run: x, limits: {memory_mb: 10}}"),
        ),
        (
            "an unknown limit",
            pipeline("{name: a, run: x, limits: {cpus: 2}}"),
        ),
        ("a run timeout of 0", with("timeout_minutes: 0")),
        ("no attempts", with("retry: {attempts: 0}")),
        ("11 attempts", with("retry: {attempts: 11}")),
        (
            "a backoff past a day",
            with("retry: {backoff_seconds: 86401}"),
        ),
        ("an unknown retry key", with("retry: {times: 2}")),
        ("too many processes", with("limits: {processes: 70000}")),
        (
            "steps as a map",
            "pipelines:\n  default: {steps: {a: {run: x}}}".into(),
        ),
        ("settings as a list", settings("[trigger_label]")),
        ("an unknown setting", settings("{approvers: [alice]}")),
        (
            "read may not approve",
            settings("{approver_permission: read}"),
        ),
        ("an empty trigger label", settings("{trigger_label: ''}")),
        (
            "a trigger label past 50",
            settings(&format!("{{trigger_label: {}}}", "a".repeat(51))),
        ),
        (
            "self approval as text",
            settings("{allow_self_approval: 'yes'}"),
        ),
        ("bots as text", settings("{allowed_bots: renovate}")),
        ("a blank bot", settings("{allowed_bots: [renovate, ' ']}")),
        (
            "task types as a list",
            "task_types: [bug]\npipelines: {}".into(),
        ),
    ];
    for (what, text) in &invalid {
        assert!(
            parser_verdict(text).is_err(),
            "the parser takes {what}: {text}"
        );
        assert!(
            schema_verdict(&validator, text).is_err(),
            "the schema takes {what}: {text}"
        );
    }
}

/// Rules that need more than one value at a time, or the repository, which a JSON Schema does
/// not express: the schema takes these files, and `conveyor check` (the parser) does not.
/// A rule that moves into the schema moves out of this list.
#[test]
fn what_only_the_parser_refuses_is_what_check_adds_to_the_schema() {
    let validator = validator();
    let pipeline = |steps: &str| format!("pipelines:\n  default:\n    steps: [{steps}]\n");
    let cases: Vec<(&str, String)> = vec![
        (
            "a task type naming no pipeline",
            "task_types: {bug: fix}\npipelines: {}".into(),
        ),
        (
            "two steps of one name",
            pipeline("{name: a, run: x}, {name: a, run: y}"),
        ),
        (
            "a verify step retried 3 times",
            pipeline("{name: verify, run: x, retries: 3}"),
        ),
        (
            "a template outside the repository",
            pipeline("{name: a, prompt: {template: ../secrets.md}}"),
        ),
        (
            "paths beside and under an approval",
            pipeline("{name: a, required_for_paths: [a], approval: {required_for_paths: [b]}}"),
        ),
        (
            "a glob that does not parse",
            pipeline("{name: a, approval: {required_for_paths: ['a/[']}}"),
        ),
    ];
    for (what, text) in &cases {
        assert!(parser_verdict(text).is_err(), "the parser takes {what}");
        assert_eq!(schema_verdict(&validator, text), Ok(()), "{what}");
    }
}

/// The one way the schema is stricter: YAML reads `run: true` as a boolean and `name: 42` as a
/// number, which the parser takes as the text written, and the schema asks to quote.
#[test]
fn the_schema_asks_to_quote_plain_scalars_the_parser_reads_as_text() {
    let validator = validator();
    for text in [
        "pipelines:\n  default:\n    steps: [{name: 42, run: x}]",
        "pipelines:\n  default:\n    steps: [{name: a, run: true}]",
    ] {
        assert_eq!(parser_verdict(text), Ok(()), "{text}");
        assert!(schema_verdict(&validator, text).is_err(), "{text}");
    }
}

#[test]
fn conveyor_check_tells_each_problem_with_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(".github")).unwrap();
    let text = "pipelines:
  default:
    steps:
      - name: build
        run: make
        approval: {}
  docs:
    timeout_minutes: 0
    steps: [{name: a, run: x}]
  fine:
    steps: [{name: a, run: x}]
";
    std::fs::write(dir.path().join(".github/conveyor.yml"), text).unwrap();
    let out = conveyor(&["check"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with(
            ".github/conveyor.yml:4:9: pipeline `default` step `build` has both `run` and `approval`"
        ),
        "{stdout}"
    );
    assert_eq!(
        lines[1],
        ".github/conveyor.yml:7:3: pipeline `docs` has `timeout_minutes: 0`; use 1 to 1440 (a day)"
    );

    std::fs::write(
        dir.path().join("other.yml"),
        "pipelines:\n  default:\n    steps:\n      - name: a\n        script: x\n",
    )
    .unwrap();
    let out = conveyor(&["check", "other.yml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with(
            "other.yml:5:9: pipelines.default.steps[0]: unknown field `script`, expected one of"
        ),
        "{stdout}"
    );

    let out = conveyor(&["check", "missing.yml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("missing.yml: ")
    );
    std::os::unix::fs::symlink("other.yml", dir.path().join("link.yml")).unwrap();
    let out = conveyor(&["check", "link.yml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "link.yml: is a symbolic link; Conveyor reads only a regular file committed at that path\n"
    );

    std::fs::write(dir.path().join("big.yml"), "#".repeat(256 * 1024 + 1)).unwrap();
    let out = conveyor(&["check", "big.yml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("big.yml: is over 262144 bytes, the limit"),
    );

    std::fs::write(dir.path().join("good.yml"), EXAMPLE).unwrap();
    let out = conveyor(&["check", "good.yml"], dir.path());
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "good.yml: ok (pipelines: default)\n"
    );
}
