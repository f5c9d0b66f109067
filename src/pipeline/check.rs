//! `conveyor check`: a pipeline file read by the parser as runs read it, each problem told
//! with the line and column it is about. The parser alone decides what is wrong; this module
//! only finds where, in a second reading of the YAML that keeps positions.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::bail;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::definition::{self, DefinitionError, MAX_PIPELINE_FILE_BYTES, Position};
use super::prompt;

/// A problem with the file, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub at: Position,
    pub message: String,
}

/// The file's pipelines by name, or its problems in the order the parser found them; with
/// `root`, the repository's directory, the prompt steps' templates are checked too, with the
/// files they read from there.
pub fn check(text: &str, root: Option<&Path>) -> Result<Vec<String>, Vec<Problem>> {
    let names = definition::check(text).map_err(|errors| {
        let tree = Tree::read(text);
        errors
            .into_iter()
            .map(|error| locate(&tree, error))
            .collect::<Vec<_>>()
    })?;
    let Some(root) = root else {
        return Ok(names);
    };
    let tree = Tree::read(text);
    let problems: Vec<Problem> = names
        .iter()
        .flat_map(|name| prompt_problems(text, name, root, &tree))
        .collect();
    if problems.is_empty() {
        Ok(names)
    } else {
        Err(problems)
    }
}

/// What a run would find wrong with the prompts of pipeline `name` before its first step:
/// a file they read that is not there, a template that does not parse or uses a name that
/// does not exist.
fn prompt_problems(text: &str, name: &str, root: &Path, tree: &Tree) -> Vec<Problem> {
    let Ok(pipeline) = definition::parse(text, name) else {
        return Vec::new();
    };
    let at_step = |step: &str| {
        let index = pipeline.steps.iter().position(|s| s.name == step);
        tree.find(&step_path(name, index))
    };
    let mut files = BTreeMap::new();
    let mut problems = Vec::new();
    for (step, path) in prompt::files_read(&pipeline) {
        let file = root.join(path);
        let found = match std::fs::symlink_metadata(&file) {
            Ok(_) => read(&file),
            Err(_) => Err(format!("is not in {}", root.display())),
        };
        match found {
            Ok(text) => {
                files.insert(path.clone(), text);
            }
            Err(reason) => problems.push(Problem {
                at: at_step(&step.name),
                message: format!(
                    "pipeline `{name}`: the prompt of step `{}` reads `{path}`, which {reason}",
                    step.name
                ),
            }),
        }
    }
    if !problems.is_empty() {
        return problems;
    }
    match prompt::Sources::new(&pipeline, &files) {
        Ok(_) => Vec::new(),
        Err(DefinitionError::BadPrompt { step, problem }) => vec![Problem {
            at: at_step(&step),
            message: format!("pipeline `{name}`: the prompt of step `{step}` {problem}"),
        }],
        Err(other) => vec![locate(tree, other)],
    }
}

/// The repository a pipeline file at `path` belongs to: the directory holding its
/// `.github/`, or the file's own directory for a file elsewhere.
fn repository_of(path: &Path) -> &Path {
    let dir = path.parent().unwrap_or(Path::new(""));
    let root = match dir.file_name() {
        Some(name) if name == ".github" => dir.parent().unwrap_or(Path::new("")),
        _ => dir,
    };
    if root.as_os_str().is_empty() {
        Path::new(".")
    } else {
        root
    }
}

/// `conveyor check FILE`: prints `FILE: ok (pipelines: …)`, or one `FILE:LINE:COLUMN:
/// problem` line for each problem and fails.
pub fn run(path: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    let shown = path.display();
    let text = match read(path) {
        Ok(text) => text,
        Err(reason) => {
            writeln!(out, "{shown}: {reason}")?;
            bail!("{shown} cannot be checked");
        }
    };
    match check(&text, Some(repository_of(path))) {
        Ok(names) => {
            let names = if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            };
            writeln!(out, "{shown}: ok (pipelines: {names})")?;
            Ok(())
        }
        Err(problems) => {
            for problem in &problems {
                let Position { line, column } = problem.at;
                writeln!(out, "{shown}:{line}:{column}: {}", problem.message)?;
            }
            bail!("{shown}: {} problem(s)", problems.len());
        }
    }
}

/// The file's text, refused as a run would refuse it: a symbolic link, not a regular file,
/// too large or not UTF-8. The link is refused when the file is opened, not looked at first,
/// so nothing can be swapped in between.
fn read(path: &Path) -> Result<String, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|err| match err.raw_os_error() {
            Some(libc::ELOOP) => {
                "is a symbolic link; Conveyor reads only a regular file committed at that path"
                    .to_owned()
            }
            _ => err.to_string(),
        })?;
    let metadata = file.metadata().map_err(|err| err.to_string())?;
    if !metadata.is_file() {
        return Err("is not a regular file".to_owned());
    }
    let mut bytes = Vec::new();
    file.take(MAX_PIPELINE_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| err.to_string())?;
    if bytes.len() as u64 > MAX_PIPELINE_FILE_BYTES {
        return Err(format!(
            "is over {MAX_PIPELINE_FILE_BYTES} bytes, the limit; move long scripts into files the steps run"
        ));
    }
    String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_owned())
}

/// The problem `error` is, told the way `conveyor check` shows it (after `FILE:LINE:COLUMN:`,
/// so without the file's name), at the node it is about.
fn locate(tree: &Tree, error: DefinitionError) -> Problem {
    let start = Position { line: 1, column: 1 };
    match error {
        DefinitionError::Invalid { message, at } => {
            let at = at.unwrap_or(start);
            // The reader's message tells the place, which the line already starts with.
            let place = format!(" at line {} column {}", at.line, at.column);
            Problem {
                at,
                message: message.replacen(&place, "", 1),
            }
        }
        DefinitionError::BadPipeline {
            pipeline,
            step,
            problem,
        } => Problem {
            at: tree.find(&step_path(&pipeline, step)),
            message: format!("pipeline `{pipeline}` {problem}"),
        },
        DefinitionError::BadSettings(problem) => Problem {
            at: tree.find(&[Segment::Key("settings")]),
            message: format!("has {problem}"),
        },
        DefinitionError::BadTaskTypes(problem) => Problem {
            at: tree.find(&[Segment::Key("task_types")]),
            message: format!("has, under `task_types:`, {problem}"),
        },
        other => Problem {
            at: start,
            message: other.to_string(),
        },
    }
}

/// Where pipeline `pipeline` is in the file, or its step at `index`.
fn step_path(pipeline: &str, index: Option<usize>) -> Vec<Segment<'_>> {
    let mut path = vec![Segment::Key("pipelines"), Segment::Key(pipeline)];
    if let Some(index) = index {
        path.extend([Segment::Key("steps"), Segment::Index(index)]);
    }
    path
}

/// A step on the way to a node: a mapping's key or a sequence's index.
#[derive(Debug, Clone, Copy)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// The YAML document as nodes with the place each starts at.
#[derive(Debug)]
struct Tree {
    root: Option<Node>,
}

#[derive(Debug)]
struct Node {
    at: Position,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// Each entry's key, where the key is written, and its value.
    Mapping(Vec<(String, Position, Node)>),
    Sequence(Vec<Node>),
    /// A scalar's text; none for an alias.
    Leaf(Option<String>),
}

impl Tree {
    /// The first document of `text`; none when it is not YAML this reader takes, and then
    /// every place is the start of the file.
    fn read(text: &str) -> Self {
        let mut builder = Builder::default();
        match Parser::new_from_str(text).load(&mut builder, false) {
            Ok(()) => Tree { root: builder.root },
            Err(_) => Tree { root: None },
        }
    }

    /// Where the node at `path` is written, or the deepest node on the way that is there.
    /// A mapping's entry is placed at its key, a sequence's item at its start.
    fn find(&self, path: &[Segment]) -> Position {
        let mut at = Position { line: 1, column: 1 };
        let Some(mut node) = self.root.as_ref() else {
            return at;
        };
        for segment in path {
            let next = match (segment, &node.kind) {
                (Segment::Key(key), Kind::Mapping(entries)) => entries
                    .iter()
                    .find(|(name, ..)| name == key)
                    .map(|(_, key_at, value)| (*key_at, value)),
                (Segment::Index(index), Kind::Sequence(items)) => {
                    items.get(*index).map(|item| (item.at, item))
                }
                _ => None,
            };
            let Some((found, value)) = next else {
                break;
            };
            at = found;
            node = value;
        }
        at
    }
}

/// Collects parser events into nodes: containers still open on a stack, each finished node
/// given to the one around it.
#[derive(Default)]
struct Builder {
    open: Vec<Open>,
    root: Option<Node>,
}

enum Open {
    Mapping {
        at: Position,
        entries: Vec<(String, Position, Node)>,
        key: Option<(String, Position)>,
    },
    Sequence {
        at: Position,
        items: Vec<Node>,
    },
}

impl Builder {
    fn finished(&mut self, node: Node) {
        match self.open.last_mut() {
            None => {
                self.root.get_or_insert(node);
            }
            Some(Open::Sequence { items, .. }) => items.push(node),
            Some(Open::Mapping { entries, key, .. }) => match key.take() {
                Some((name, key_at)) => entries.push((name, key_at, node)),
                None => {
                    // A key that is not text (a mapping, a list, an alias) matches no key
                    // the parser reads.
                    let name = match node.kind {
                        Kind::Leaf(Some(text)) => text,
                        _ => String::new(),
                    };
                    *key = Some((name, node.at));
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let at = Position {
            line: mark.line(),
            column: mark.col() + 1,
        };
        match event {
            Event::Scalar(text, ..) => self.finished(Node {
                at,
                kind: Kind::Leaf(Some(text)),
            }),
            Event::Alias(_) => self.finished(Node {
                at,
                kind: Kind::Leaf(None),
            }),
            Event::MappingStart(..) => self.open.push(Open::Mapping {
                at,
                entries: Vec::new(),
                key: None,
            }),
            Event::SequenceStart(..) => self.open.push(Open::Sequence {
                at,
                items: Vec::new(),
            }),
            Event::MappingEnd | Event::SequenceEnd => {
                let node = match self.open.pop() {
                    // A block mapping's start is marked where its first `:` is; its first
                    // key is where a reader sees it begin.
                    Some(Open::Mapping { at, entries, .. }) => Node {
                        at: entries.first().map_or(at, |(_, key_at, _)| *key_at),
                        kind: Kind::Mapping(entries),
                    },
                    Some(Open::Sequence { at, items }) => Node {
                        at,
                        kind: Kind::Sequence(items),
                    },
                    None => return,
                };
                self.finished(node);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<(usize, usize, String)> {
        problems_in(text, None)
    }

    fn problems_in(text: &str, root: Option<&Path>) -> Vec<(usize, usize, String)> {
        check(text, root)
            .unwrap_err()
            .into_iter()
            .map(|problem| (problem.at.line, problem.at.column, problem.message))
            .collect()
    }

    #[test]
    fn a_good_file_gives_its_pipelines() {
        let text = "pipelines:\n  docs: {steps: [{name: a, run: x}]}\n  default: {steps: [{name: a, run: x}]}\n";
        assert_eq!(check(text, None).unwrap(), ["default", "docs"]);
        assert_eq!(check("pipelines: {}", None).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_step_problem_points_at_the_step() {
        let text = "pipelines:
  default:
    steps:
      - name: build
        run: make
      - name: both
        run: make
        prompt: Fix it
";
        let [(line, column, message)] = &problems(text)[..] else {
            panic!("one problem")
        };
        assert_eq!((*line, *column), (6, 9));
        assert!(
            message.starts_with("pipeline `default` step `both` has both `run` and `prompt`"),
            "{message}"
        );
    }

    #[test]
    fn a_repeated_step_name_points_at_the_second_one_in_flow_style_too() {
        let text = "pipelines:\n  default:\n    steps: [{name: a, run: x}, {name: a, run: y}]\n";
        assert_eq!(
            problems(text),
            [(
                3,
                33,
                "pipeline `default` has two steps named `a`; step names must be unique".into()
            )]
        );
    }

    #[test]
    fn every_broken_pipeline_is_told_at_its_name() {
        let text = "pipelines:
  a:
    steps: []
  b:
    timeout_minutes: 0
    steps: [{name: x, run: y}]
  c:
    steps: [{name: x, run: y}]
";
        let found: Vec<(usize, usize)> = problems(text)
            .into_iter()
            .map(|(line, column, _)| (line, column))
            .collect();
        assert_eq!(found, [(2, 3), (4, 3)]);
    }

    #[test]
    fn a_reading_error_keeps_the_readers_place_once() {
        let text = "pipelines:\n  default:\n    steps:\n      - name: a\n        script: x\n";
        let [(line, column, message)] = &problems(text)[..] else {
            panic!("one problem")
        };
        assert_eq!((*line, *column), (5, 9));
        assert!(
            message.starts_with("pipelines.default.steps[0]: unknown field `script`"),
            "{message}"
        );
        assert!(!message.contains("at line"), "{message}");
        let [(line, column, message)] = &problems("pipelines:\n  default: {steps: [}\n")[..] else {
            panic!("one problem")
        };
        assert_eq!((*line, *column), (2, 21));
        assert_eq!(
            message,
            "did not find expected node content, while parsing a flow node"
        );
    }

    #[test]
    fn settings_and_task_types_problems_point_at_their_block() {
        let settings = "pipelines:\n  default: {steps: [{name: a, run: x}]}\nsettings:\n  approver_permission: read\n";
        assert_eq!(
            problems(settings),
            [(
                3,
                1,
                "has `settings: approver_permission: read`; use write, maintain or admin".into()
            )]
        );
        let task_types =
            "task_types:\n  bug: fix\npipelines:\n  default: {steps: [{name: a, run: x}]}\n";
        let [(line, column, message)] = &problems(task_types)[..] else {
            panic!("one problem")
        };
        assert_eq!((*line, *column), (1, 1));
        assert!(
            message.starts_with(
                "has, under `task_types:`, `bug: fix`, but no pipeline is named `fix`"
            ),
            "{message}"
        );
    }

    #[test]
    fn prompts_are_checked_with_the_files_they_read_from_the_repository() {
        let repo = tempfile::tempdir().unwrap();
        std::fs::create_dir(repo.path().join("prompts")).unwrap();
        std::fs::write(repo.path().join("prompts/fix.md"), "Fix {{ task.title }}\n").unwrap();
        std::fs::write(repo.path().join("prompts/bad.md"), "{{ task.colour }}\n").unwrap();
        std::fs::write(repo.path().join("NOTES.md"), "notes\n").unwrap();
        let good = "pipelines:
  default:
    steps:
      - {name: plan, prompt: {template: prompts/fix.md, context_files: [NOTES.md]}}
      - {name: apply, prompt: 'Apply {{ steps.plan.output }}'}
";
        assert_eq!(check(good, Some(repo.path())).unwrap(), ["default"]);
        let bad = "pipelines:
  default:
    steps:
      - {name: plan, prompt: {template: prompts/bad.md}}
  other:
    steps:
      - {name: run, run: x}
      - {name: ask, prompt: {text: 'hi', context_files: [missing.md]}}
  later:
    steps:
      - {name: first, prompt: '{{ steps.second.output }}'}
      - {name: second, run: x}
";
        let found = problems_in(bad, Some(repo.path()));
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!((found[0].0, found[0].1), (4, 10), "{found:?}");
        assert!(
            found[0]
                .2
                .starts_with("pipeline `default`: the prompt of step `plan`"),
            "{found:?}"
        );
        assert!(found[0].2.contains("colour"), "{found:?}");
        assert_eq!((found[1].0, found[1].1), (11, 10), "{found:?}");
        assert!(found[1].2.contains("`second`"), "{found:?}");
        assert_eq!((found[2].0, found[2].1), (8, 10), "{found:?}");
        let missing = format!(
            "reads `missing.md`, which is not in {}",
            repo.path().display()
        );
        assert!(found[2].2.ends_with(&missing), "{found:?}");
        // Without the repository, only the file itself is checked.
        assert!(check(bad, None).is_ok());
    }

    #[test]
    fn the_repository_is_where_the_github_directory_is() {
        assert_eq!(
            repository_of(Path::new(".github/conveyor.yml")),
            Path::new(".")
        );
        assert_eq!(
            repository_of(Path::new("/r/.github/conveyor.yml")),
            Path::new("/r")
        );
        assert_eq!(
            repository_of(Path::new("ex/docs/conveyor.yml")),
            Path::new("ex/docs")
        );
        assert_eq!(repository_of(Path::new("conveyor.yml")), Path::new("."));
    }
}
