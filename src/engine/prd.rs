//! PRD import, the pure half: a markdown task list becomes a [`Plan`] (tasks, dependency
//! edges, roots and waves) or a typed [`PrdError`]. Nothing here touches the database; the
//! preview shows the plan and the commit creates it.
//!
//! The format is the one of `tests/fixtures/sample-prd-task-list.md`:
//!
//! ```text
//! Phase 2: Events (Dependencies: [1])
//!
//! - 2.1 Mount the router (Dependencies: [1.2])
//!   - 2.1.1 Add the route
//!   - 2.1.2 Verify correctness of Task 2.1 against acceptance criteria
//!     • <criterion 1: POST /events answers 202 [source: PRD]>
//! ```
//!
//! - A phase line (`Phase N: Title`, optionally a `#` heading) groups the tasks below it.
//!   Phases are not tasks: a phase's dependency means that every task of the phase waits
//!   for every task of the referenced phases, and that is written out as task-to-task edges.
//!   Each task keeps its phase's key in `phase`.
//! - A list item whose first word is a dotted number (`1.2`) is a task when no numbered item
//!   encloses it; numbered items nested under it are its sub-tasks (`1.2.3`), and anything
//!   nested deeper belongs to the sub-task.
//! - `(Dependencies: [1.1, 2])` at the end of an item names tasks, sub-tasks or phases.
//! - An unnumbered bullet directly under an item that mentions "acceptance criteria" is an
//!   acceptance criterion (`<criterion N: …>` is unwrapped to its text).
//! - Relative link targets in a task's text become its `context_files`.
//!
//! The format is read line by line rather than as CommonMark: its `•` criteria are not list
//! markers (CommonMark would fold them into the item's paragraph), and every error needs the
//! line it is about. Fenced code is kept as text and never read as tasks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroUsize;

use serde::{Deserialize, Serialize};

/// How finely a task list becomes tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// Each `x.y` is one task; its sub-tasks are the steps of its description, and a
    /// reference to a sub-task means its task.
    #[default]
    Task,
    /// Each `x.y.z` is a task too, a child of its `x.y`, and the sub-tasks run in the order
    /// written: the first waits for everything its parent waits for, each next one for the
    /// one before. The parent runs nothing itself: it is done when its children are, so a
    /// task waiting for the parent waits for all of them.
    Subtask,
}

impl Granularity {
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Task => "task",
            Granularity::Subtask => "subtask",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct PlanOptions {
    #[serde(default)]
    pub granularity: Granularity,
    /// At most this many tasks per wave: a dependency level wider than this is split into
    /// consecutive waves.
    pub max_parallelism_hint: Option<NonZeroUsize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Plan {
    /// In key order, numerically: `1.9` before `1.10`, a parent before its children.
    pub tasks: Vec<PlannedTask>,
    pub phases: Vec<PlannedPhase>,
    /// Every `blocked_by` entry as `from` (the blocker) → `to` (the task that waits).
    pub edges: Vec<Edge>,
    /// The roots of the `blocked_by` graph: the tasks nothing blocks, which can start as soon
    /// as the import is committed (what `auto_ready` makes ready). Every other task waits,
    /// directly or through others, on some of them.
    pub blocked_roots: Vec<String>,
    /// The order the tasks would run in: a task's dependency level is one more than the
    /// highest level of its blockers (a parent blocker counts as its last child), each level
    /// split into chunks of at most `max_parallelism_hint`, keys in order within a wave.
    /// Only tasks that run appear: a parent (granularity `subtask`) is in no wave.
    pub waves: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PlannedTask {
    pub key: String,
    pub title: String,
    /// The item's nested lines (its steps, for granularity `task`) as written, criteria
    /// left out; `None` when there are none.
    pub description: Option<String>,
    /// A parent (granularity `subtask`) also carries its children's criteria: they are what
    /// it delivers.
    pub acceptance_criteria: Vec<String>,
    pub context_files: Vec<String>,
    /// Keys, in key order.
    pub blocked_by: Vec<String>,
    pub parent: Option<String>,
    pub phase: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PlannedPhase {
    pub key: String,
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Edge {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrdError {
    /// `task` is the referring item's key, or `phase N` for a phase's dependencies.
    #[error(
        "line {line}: {task} depends on {reference}, which is no task, sub-task or phase of this list"
    )]
    BadReference {
        task: String,
        reference: String,
        line: usize,
    },
    /// The keys in dependency order, each waiting for the one before and the first for the
    /// last.
    #[error("dependency cycle: {} (a parent counts as waiting for its sub-tasks)", cycle_text(.keys))]
    Cycle { keys: Vec<String> },
    #[error("line {line}: key {key} is already used on line {first_line}")]
    DuplicateKey {
        key: String,
        line: usize,
        first_line: usize,
    },
    #[error("no tasks found: expected list items like \"- 1.1 Title (Dependencies: [])\"")]
    NoTasks,
    #[error("line {line}: malformed dependency list {text:?}: {reason}")]
    MalformedDependencies {
        line: usize,
        text: String,
        reason: &'static str,
    },
}

impl PrdError {
    /// The stable code the API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            PrdError::BadReference { .. } => "prd_bad_reference",
            PrdError::Cycle { .. } => "prd_cycle",
            PrdError::DuplicateKey { .. } => "prd_duplicate_key",
            PrdError::NoTasks => "prd_no_tasks",
            PrdError::MalformedDependencies { .. } => "prd_malformed_dependencies",
        }
    }

    /// The line of the task list it is about, when it is about one.
    pub fn line(&self) -> Option<usize> {
        match self {
            PrdError::BadReference { line, .. }
            | PrdError::DuplicateKey { line, .. }
            | PrdError::MalformedDependencies { line, .. } => Some(*line),
            PrdError::Cycle { .. } | PrdError::NoTasks => None,
        }
    }
}

fn cycle_text(keys: &[String]) -> String {
    let mut text = keys.join(" → ");
    if let Some(first) = keys.first() {
        text.push_str(" → ");
        text.push_str(first);
    }
    text
}

/// Reads `markdown` and plans it; see the module documentation for the format.
pub fn plan(markdown: &str, options: PlanOptions) -> Result<Plan, PrdError> {
    let document = Document::parse(markdown)?;
    Planner::new(&document, options.granularity)?.finish(&document, options)
}

/// A task, phase or reference key: its numbers, so that ordering is numeric.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key(Vec<u32>);

impl Key {
    fn parse(text: &str) -> Option<Key> {
        text.split('.')
            .map(|part| {
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                part.parse().ok()
            })
            .collect::<Option<Vec<u32>>>()
            .map(Key)
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

struct Phase {
    key: Key,
    title: String,
    dependencies: Vec<Key>,
    line: usize,
}

/// A numbered list item, at any depth.
struct Item {
    key: Key,
    title: String,
    dependencies: Vec<Key>,
    line: usize,
    parent: Option<usize>,
    phase: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LineKind {
    /// The item's own line, which is part of its parent task's description when the item is
    /// not a task itself.
    Header,
    Text,
    Criterion,
}

/// A line inside an item, kept for descriptions and criteria.
struct Line {
    item: usize,
    indent: usize,
    text: String,
    kind: LineKind,
}

struct Document {
    phases: Vec<Phase>,
    items: Vec<Item>,
    lines: Vec<Line>,
}

/// A list item still open while reading: later lines indented deeper belong to it.
struct Open {
    indent: usize,
    item: Option<usize>,
    introduces_criteria: bool,
}

impl Document {
    fn parse(markdown: &str) -> Result<Document, PrdError> {
        let mut document = Document {
            phases: Vec::new(),
            items: Vec::new(),
            lines: Vec::new(),
        };
        let mut item_lines: HashMap<Key, usize> = HashMap::new();
        let mut phase_lines: HashMap<Key, usize> = HashMap::new();
        let mut open: Vec<Open> = Vec::new();
        let mut fence: Option<&str> = None;
        let mut phase = None;
        for (index, raw) in markdown.lines().enumerate() {
            let line = index + 1;
            let (indent, text) = split_indent(raw);
            if let Some(marker) = fence {
                if text.starts_with(marker) {
                    fence = None;
                }
                document.keep(&open, indent, text, LineKind::Text);
                continue;
            }
            if let Some(marker) = ["```", "~~~"].into_iter().find(|m| text.starts_with(m)) {
                fence = Some(marker);
                document.keep(&open, indent, text, LineKind::Text);
                continue;
            }
            if text.is_empty() {
                continue;
            }
            if indent == 0 {
                if let Some((key, rest)) = phase_heading(text) {
                    let (title, dependencies) = split_dependencies(rest, line)?;
                    if let Some(&first_line) = phase_lines.get(&key) {
                        return Err(duplicate(&key, line, first_line));
                    }
                    phase_lines.insert(key.clone(), line);
                    phase = Some(document.phases.len());
                    document.phases.push(Phase {
                        key,
                        title: title.to_owned(),
                        dependencies,
                        line,
                    });
                    open.clear();
                    continue;
                }
                if text.starts_with('#') {
                    open.clear();
                    continue;
                }
            }
            while open.last().is_some_and(|o| o.indent >= indent) {
                open.pop();
            }
            let Some(content) = bullet(text) else {
                document.keep(&open, indent, text, LineKind::Text);
                continue;
            };
            let introduces_criteria = content.to_lowercase().contains("acceptance criteria");
            let Some((key, rest)) = numbered(content) else {
                let under_criteria = open.last().is_some_and(|o| o.introduces_criteria);
                if under_criteria {
                    document.keep(&open, indent, criterion(content), LineKind::Criterion);
                } else {
                    document.keep(&open, indent, text, LineKind::Text);
                }
                open.push(Open {
                    indent,
                    item: None,
                    introduces_criteria,
                });
                continue;
            };
            let (title, dependencies) = split_dependencies(rest, line)?;
            if let Some(&first_line) = item_lines.get(&key) {
                return Err(duplicate(&key, line, first_line));
            }
            item_lines.insert(key.clone(), line);
            let parent = innermost_item(&open);
            let id = document.items.len();
            document.items.push(Item {
                key,
                title: title.to_owned(),
                dependencies,
                line,
                parent,
                phase: match parent {
                    Some(parent) => document.items[parent].phase,
                    None => phase,
                },
            });
            document.lines.push(Line {
                item: id,
                indent,
                text: text.to_owned(),
                kind: LineKind::Header,
            });
            open.push(Open {
                indent,
                item: Some(id),
                introduces_criteria,
            });
        }
        if !document.items.iter().any(|item| item.parent.is_none()) {
            return Err(PrdError::NoTasks);
        }
        Ok(document)
    }

    /// Keeps a line for the innermost open item; a line outside every item is prose around
    /// the list and belongs to no task.
    fn keep(&mut self, open: &[Open], indent: usize, text: &str, kind: LineKind) {
        if let Some(item) = innermost_item(open) {
            self.lines.push(Line {
                item,
                indent,
                text: text.to_owned(),
                kind,
            });
        }
    }
}

fn innermost_item(open: &[Open]) -> Option<usize> {
    open.iter().rev().find_map(|o| o.item)
}

fn duplicate(key: &Key, line: usize, first_line: usize) -> PrdError {
    PrdError::DuplicateKey {
        key: key.to_string(),
        line,
        first_line,
    }
}

/// The line's indentation width (a tab reaching the next multiple of 4) and the rest.
fn split_indent(raw: &str) -> (usize, &str) {
    let mut width = 0;
    for (at, c) in raw.char_indices() {
        match c {
            ' ' => width += 1,
            '\t' => width += 4 - width % 4,
            _ => return (width, raw[at..].trim_end()),
        }
    }
    (width, "")
}

/// The text of a bullet list item, without its marker or task-list checkbox.
fn bullet(text: &str) -> Option<&str> {
    let content = ["- ", "* ", "+ ", "• "]
        .into_iter()
        .find_map(|marker| text.strip_prefix(marker))?
        .trim_start();
    Some(
        ["[ ] ", "[x] ", "[X] "]
            .into_iter()
            .find_map(|checkbox| content.strip_prefix(checkbox))
            .unwrap_or(content)
            .trim_start(),
    )
}

/// An item's key and the rest of its text, when its first word is a dotted number: a bare
/// number (or `1.`) is an ordinary list item, not a task.
fn numbered(content: &str) -> Option<(Key, &str)> {
    let (word, rest) = content
        .split_once(char::is_whitespace)
        .unwrap_or((content, ""));
    let word = word.strip_suffix('.').unwrap_or(word);
    if !word.contains('.') {
        return None;
    }
    Some((Key::parse(word)?, rest.trim_start()))
}

/// `Phase N: Title …`, bare or as a heading or in bold.
fn phase_heading(text: &str) -> Option<(Key, &str)> {
    let text = text.trim_start_matches('#').trim();
    let text = text.strip_prefix("**").unwrap_or(text);
    let rest = text
        .get(..6)
        .filter(|word| word.eq_ignore_ascii_case("phase "))
        .map(|_| &text[6..])?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let key = Key::parse(&rest[..digits])?;
    let rest = &rest[digits..];
    if !(rest.is_empty() || rest.starts_with([':', '.', '-', '–', '—', ' ', '*'])) {
        return None;
    }
    let title = rest
        .trim_start_matches([':', '.', '-', '–', '—', ' ', '*'])
        .trim_end_matches('*')
        .trim_end();
    Some((key, title))
}

/// Splits a trailing `(Dependencies: [a, b])` off an item's text. Text that starts such a
/// clause but does not finish it is an error rather than part of the title, so a mistyped
/// list cannot silently drop a dependency.
fn split_dependencies(text: &str, line: usize) -> Result<(&str, Vec<Key>), PrdError> {
    const CLAUSE: &str = "(dependencies";
    let malformed = |reason: &'static str| PrdError::MalformedDependencies {
        line,
        text: text.to_owned(),
        reason,
    };
    let Some(at) = text.to_ascii_lowercase().rfind(CLAUSE) else {
        return Ok((text, Vec::new()));
    };
    let clause = text[at + CLAUSE.len()..].trim_start();
    if !clause.starts_with([':', '[']) {
        return Ok((text, Vec::new()));
    }
    let clause = clause.strip_prefix(':').unwrap_or(clause).trim_start();
    let list = clause
        .strip_prefix('[')
        .ok_or_else(|| malformed("expected [ after \"Dependencies:\""))?;
    let (list, tail) = list
        .split_once(']')
        .ok_or_else(|| malformed("the list has no closing ]"))?;
    if tail.trim() != ")" {
        return Err(malformed(
            "expected the clause to end with \"])\" at the end of the line",
        ));
    }
    let mut dependencies = Vec::new();
    if !list.trim().is_empty() {
        for reference in list.split(',') {
            let key = Key::parse(reference.trim())
                .ok_or_else(|| malformed("each entry must be a key like 1.2 or a phase number"))?;
            dependencies.push(key);
        }
    }
    Ok((text[..at].trim_end(), dependencies))
}

/// `<criterion 3: text>` is `text`; any other bullet is its own text.
fn criterion(content: &str) -> &str {
    let inner = content
        .strip_prefix('<')
        .and_then(|c| c.strip_suffix('>'))
        .unwrap_or(content)
        .trim();
    match inner.split_once(':') {
        Some((label, text))
            if label
                .get(..9)
                .is_some_and(|w| w.eq_ignore_ascii_case("criterion"))
                && label[9..].trim().bytes().all(|b| b.is_ascii_digit()) =>
        {
            text.trim()
        }
        _ => inner,
    }
}

/// Relative link targets (`[text](path)`), without anchors, in order of appearance.
fn relative_links(text: &str, into: &mut Vec<String>) {
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split_whitespace().next().unwrap_or("");
        let path = target.split('#').next().unwrap_or("");
        let relative = !(path.is_empty() || path.contains("://") || path.starts_with("mailto:"));
        if relative && !into.iter().any(|known| known == path) {
            into.push(path.to_owned());
        }
        rest = &rest[end..];
    }
}

/// The tasks of a document at one granularity, with their resolved blockers.
struct Planner {
    /// For each item, the task it is or belongs to.
    task_of: Vec<usize>,
    /// Task items in key order.
    tasks: Vec<usize>,
    /// For each task item, its child tasks in the order written.
    children: Vec<Vec<usize>>,
    /// For each task item, the task items it waits for.
    blockers: Vec<BTreeSet<usize>>,
    /// For each phase, its top-level tasks.
    phase_tasks: Vec<Vec<usize>>,
    items_by_key: HashMap<Key, usize>,
    phases_by_key: HashMap<Key, usize>,
}

impl Planner {
    fn new(document: &Document, granularity: Granularity) -> Result<Planner, PrdError> {
        let items = &document.items;
        let is_task = |id: usize| match (items[id].parent, granularity) {
            (None, _) => true,
            (Some(parent), Granularity::Subtask) => items[parent].parent.is_none(),
            (Some(_), Granularity::Task) => false,
        };
        // Items come in document order, so a parent is seen before its children.
        let mut task_of = Vec::with_capacity(items.len());
        let mut children = vec![Vec::new(); items.len()];
        let mut phase_tasks = vec![Vec::new(); document.phases.len()];
        for (id, item) in items.iter().enumerate() {
            if is_task(id) {
                task_of.push(id);
                if let Some(parent) = item.parent {
                    children[parent].push(id);
                } else if let Some(phase) = item.phase {
                    phase_tasks[phase].push(id);
                }
            } else {
                task_of.push(task_of[item.parent.expect("only a nested item is folded")]);
            }
        }
        let mut tasks: Vec<usize> = (0..items.len()).filter(|&id| is_task(id)).collect();
        tasks.sort_by(|&a, &b| items[a].key.cmp(&items[b].key));
        let mut planner = Planner {
            task_of,
            tasks,
            children,
            blockers: vec![BTreeSet::new(); items.len()],
            phase_tasks,
            items_by_key: items
                .iter()
                .enumerate()
                .map(|(id, item)| (item.key.clone(), id))
                .collect(),
            phases_by_key: document
                .phases
                .iter()
                .enumerate()
                .map(|(id, phase)| (phase.key.clone(), id))
                .collect(),
        };
        planner.resolve(document)?;
        Ok(planner)
    }

    fn resolve(&mut self, document: &Document) -> Result<(), PrdError> {
        for (id, item) in document.items.iter().enumerate() {
            let task = self.task_of[id];
            for reference in &item.dependencies {
                let blockers = self
                    .lookup(reference)
                    .ok_or_else(|| PrdError::BadReference {
                        task: item.key.to_string(),
                        reference: reference.to_string(),
                        line: item.line,
                    })?;
                // A step of a task naming another step of the same task orders work inside
                // it; only the task's own line can make it wait for itself (a cycle).
                let internal = |&blocker: &usize| id != task && blocker == task;
                self.blockers[task].extend(blockers.into_iter().filter(|b| !internal(b)));
            }
        }
        for (id, phase) in document.phases.iter().enumerate() {
            for reference in &phase.dependencies {
                let blockers = self
                    .lookup(reference)
                    .ok_or_else(|| PrdError::BadReference {
                        task: format!("phase {}", phase.key),
                        reference: reference.to_string(),
                        line: phase.line,
                    })?;
                for &task in &self.phase_tasks[id] {
                    self.blockers[task].extend(blockers.iter().copied());
                }
            }
        }
        // Parents are final now (children add nothing to them), so their blockers can pass
        // down the chain of their children.
        for &task in &self.tasks {
            let mut previous: Option<usize> = None;
            for &child in &self.children[task] {
                let inherited = match previous {
                    Some(previous) => BTreeSet::from([previous]),
                    None => self.blockers[task].clone(),
                };
                self.blockers[child].extend(inherited);
                previous = Some(child);
            }
        }
        Ok(())
    }

    /// The tasks a reference stands for: a phase's tasks, or the task an item is or belongs to.
    fn lookup(&self, reference: &Key) -> Option<Vec<usize>> {
        if let Some(&phase) = self.phases_by_key.get(reference) {
            return Some(self.phase_tasks[phase].clone());
        }
        let &item = self.items_by_key.get(reference)?;
        Some(vec![self.task_of[item]])
    }

    /// Tasks in an order where every task comes after its blockers and a parent after its
    /// children, or the cycle that makes such an order impossible.
    fn topological_order(&self, document: &Document) -> Result<Vec<usize>, PrdError> {
        let mut waiting_on = vec![0usize; document.items.len()];
        let mut unlocks = vec![Vec::new(); document.items.len()];
        for &task in &self.tasks {
            for &before in self.blockers[task].iter().chain(&self.children[task]) {
                waiting_on[task] += 1;
                unlocks[before].push(task);
            }
        }
        let mut order: Vec<usize> = Vec::with_capacity(self.tasks.len());
        order.extend(self.tasks.iter().filter(|&&task| waiting_on[task] == 0));
        let mut next = 0;
        while let Some(&task) = order.get(next) {
            next += 1;
            for &after in &unlocks[task] {
                waiting_on[after] -= 1;
                if waiting_on[after] == 0 {
                    order.push(after);
                }
            }
        }
        if order.len() == self.tasks.len() {
            return Ok(order);
        }
        Err(self.cycle(document, &waiting_on))
    }

    /// Every task left waiting waits on another task left waiting, so walking from one to
    /// what it waits on must come back round: that loop is the cycle.
    fn cycle(&self, document: &Document, waiting_on: &[usize]) -> PrdError {
        let key = |id: usize| &document.items[id].key;
        let stuck = |id: &&usize| waiting_on[**id] > 0;
        let mut at = *self.tasks.iter().find(stuck).expect("a cycle leaves tasks");
        let mut walked: Vec<usize> = Vec::new();
        let mut position: HashMap<usize, usize> = HashMap::new();
        let start = loop {
            if let Some(&start) = position.get(&at) {
                break start;
            }
            position.insert(at, walked.len());
            walked.push(at);
            at = *self.blockers[at]
                .iter()
                .chain(&self.children[at])
                .filter(stuck)
                .min_by_key(|&&id| key(id))
                .expect("a stuck task waits on a stuck task");
        };
        // The walk went from a task to what it waits on; the cycle reads the other way.
        let mut cycle: Vec<usize> = walked[start..].iter().rev().copied().collect();
        let first = (0..cycle.len()).min_by_key(|&i| key(cycle[i])).unwrap_or(0);
        cycle.rotate_left(first);
        PrdError::Cycle {
            keys: cycle.into_iter().map(|id| key(id).to_string()).collect(),
        }
    }

    fn finish(self, document: &Document, options: PlanOptions) -> Result<Plan, PrdError> {
        let order = self.topological_order(document)?;
        let items = &document.items;
        let key = |id: usize| items[id].key.to_string();
        let sorted_keys = |ids: &BTreeSet<usize>| {
            let mut ids: Vec<usize> = ids.iter().copied().collect();
            ids.sort_by(|&a, &b| items[a].key.cmp(&items[b].key));
            ids.into_iter().map(key).collect::<Vec<_>>()
        };

        // The level at which a task is done: a running task's own wave, a parent's last child's.
        let mut done_at = vec![0usize; items.len()];
        let mut levels: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &task in &order {
            if self.children[task].is_empty() {
                let level = 1 + self.blockers[task]
                    .iter()
                    .map(|&b| done_at[b])
                    .max()
                    .unwrap_or(0);
                done_at[task] = level;
                levels.entry(level).or_default().push(task);
            } else {
                done_at[task] = self.children[task]
                    .iter()
                    .map(|&c| done_at[c])
                    .max()
                    .unwrap_or(0);
            }
        }
        let chunk = options
            .max_parallelism_hint
            .map_or(usize::MAX, NonZeroUsize::get);
        let mut waves = Vec::new();
        for mut level in levels.into_values() {
            level.sort_by(|&a, &b| items[a].key.cmp(&items[b].key));
            waves.extend(
                level
                    .chunks(chunk)
                    .map(|c| c.iter().map(|&id| key(id)).collect()),
            );
        }

        let mut descriptions: Vec<Vec<&Line>> = vec![Vec::new(); items.len()];
        let mut criteria: Vec<Vec<String>> = vec![Vec::new(); items.len()];
        for line in &document.lines {
            let task = self.task_of[line.item];
            match line.kind {
                LineKind::Criterion => {
                    let mut holder = Some(task);
                    while let Some(task) = holder {
                        criteria[task].push(line.text.clone());
                        holder = items[task].parent.map(|parent| self.task_of[parent]);
                    }
                }
                LineKind::Header if line.item == task => {}
                LineKind::Header | LineKind::Text => descriptions[task].push(line),
            }
        }

        let mut tasks = Vec::with_capacity(self.tasks.len());
        let mut edges = Vec::new();
        for &task in &self.tasks {
            let item = &items[task];
            let blocked_by = sorted_keys(&self.blockers[task]);
            edges.extend(blocked_by.iter().map(|from| Edge {
                from: from.clone(),
                to: key(task),
            }));
            let description = render(&descriptions[task]);
            let mut context_files = Vec::new();
            relative_links(&item.title, &mut context_files);
            if let Some(description) = &description {
                relative_links(description, &mut context_files);
            }
            tasks.push(PlannedTask {
                key: key(task),
                title: item.title.clone(),
                description,
                acceptance_criteria: std::mem::take(&mut criteria[task]),
                context_files,
                blocked_by,
                parent: item.parent.map(key),
                phase: item
                    .phase
                    .map(|phase| document.phases[phase].key.to_string()),
            });
        }
        let blocked_roots = tasks
            .iter()
            .filter(|task| task.blocked_by.is_empty())
            .map(|task| task.key.clone())
            .collect();
        let phases = document
            .phases
            .iter()
            .map(|phase| PlannedPhase {
                key: phase.key.to_string(),
                title: phase.title.clone(),
            })
            .collect();
        Ok(Plan {
            tasks,
            phases,
            edges,
            blocked_roots,
            waves,
        })
    }
}

/// Lines as written, indented relative to the least indented of them.
fn render(lines: &[&Line]) -> Option<String> {
    let base = lines.iter().map(|line| line.indent).min()?;
    let rendered: Vec<String> = lines
        .iter()
        .map(|line| format!("{}{}", " ".repeat(line.indent - base), line.text))
        .collect();
    Some(rendered.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../tests/fixtures/sample-prd-task-list.md");

    fn options(granularity: Granularity, hint: Option<usize>) -> PlanOptions {
        PlanOptions {
            granularity,
            max_parallelism_hint: hint.map(|n| NonZeroUsize::new(n).expect("hint above 0")),
        }
    }

    fn by_tasks(markdown: &str) -> Result<Plan, PrdError> {
        plan(markdown, PlanOptions::default())
    }

    fn task<'a>(plan: &'a Plan, key: &str) -> &'a PlannedTask {
        plan.tasks
            .iter()
            .find(|task| task.key == key)
            .unwrap_or_else(|| panic!("no task {key}"))
    }

    fn keys(list: &[&str]) -> Vec<String> {
        list.iter().map(|key| key.to_string()).collect()
    }

    fn waves(list: &[&[&str]]) -> Vec<Vec<String>> {
        list.iter().map(|wave| keys(wave)).collect()
    }

    /// Every task that runs is in exactly one wave, a parent in none, and everything a task
    /// waits for is done in an earlier wave.
    fn assert_consistent(plan: &Plan) {
        let mut wave_of: HashMap<&str, usize> = HashMap::new();
        for (index, wave) in plan.waves.iter().enumerate() {
            for key in wave {
                assert!(wave_of.insert(key, index).is_none(), "{key} in two waves");
            }
        }
        let children = |key: &str| -> Vec<&PlannedTask> {
            let key = key.to_owned();
            plan.tasks
                .iter()
                .filter(|t| t.parent.as_ref() == Some(&key))
                .collect()
        };
        fn done<'a>(
            key: &str,
            wave_of: &HashMap<&str, usize>,
            children: &dyn Fn(&str) -> Vec<&'a PlannedTask>,
        ) -> usize {
            let kids = children(key);
            if kids.is_empty() {
                wave_of[key]
            } else {
                kids.iter()
                    .map(|kid| done(&kid.key, wave_of, children))
                    .max()
                    .unwrap()
            }
        }
        for task in &plan.tasks {
            if !children(&task.key).is_empty() {
                assert!(
                    !wave_of.contains_key(task.key.as_str()),
                    "parent {} runs",
                    task.key
                );
                continue;
            }
            let wave = *wave_of
                .get(task.key.as_str())
                .unwrap_or_else(|| panic!("{} in no wave", task.key));
            for blocker in &task.blocked_by {
                let before = done(blocker, &wave_of, &children);
                assert!(
                    before < wave,
                    "{} in wave {wave}, blocker {blocker} done in {before}",
                    task.key
                );
            }
        }
        let edges: Vec<(String, String)> = plan
            .edges
            .iter()
            .map(|e| (e.from.clone(), e.to.clone()))
            .collect();
        let expected: Vec<(String, String)> = plan
            .tasks
            .iter()
            .flat_map(|t| t.blocked_by.iter().map(|b| (b.clone(), t.key.clone())))
            .collect();
        assert_eq!(edges, expected);
    }

    #[test]
    fn sample_as_tasks_keeps_every_task_its_dependencies_and_phases() {
        let plan = by_tasks(SAMPLE).unwrap();
        assert_eq!(plan.tasks.len(), 39);
        assert_eq!(plan.phases.len(), 9);
        assert_eq!(plan.phases[1].title, "Events → Worker Wire-up");
        let t = task(&plan, "1.2");
        assert_eq!(t.title, "Run Alembic migrations");
        assert_eq!(t.blocked_by, keys(&["1.1"]));
        assert_eq!(t.phase.as_deref(), Some("1"));
        // Phase 2 waits for all of phase 1, on top of what 2.1 names itself.
        assert_eq!(task(&plan, "2.1").blocked_by, keys(&["1.1", "1.2", "1.3"]));
        assert_eq!(
            task(&plan, "2.2").blocked_by,
            keys(&["1.1", "1.2", "1.3", "2.1"])
        );
        assert_eq!(
            task(&plan, "4.4").blocked_by,
            keys(&["3.1", "3.2", "3.3", "4.2", "4.3"])
        );
        assert_eq!(
            task(&plan, "8.1").blocked_by,
            keys(&[
                "3.3", "5.2", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "7.7", "7.8"
            ])
        );
        assert_eq!(
            task(&plan, "9.1").blocked_by,
            keys(&["1.1", "1.2", "7.8", "8.1", "8.2", "8.3"])
        );
        assert_eq!(
            task(&plan, "4.4").title,
            "Ensure default template is only referenced (no task_lists.md creation)"
        );
        assert!(plan.edges.contains(&Edge {
            from: "4.3".into(),
            to: "4.5".into()
        }));
        assert_eq!(plan.blocked_roots, keys(&["1.1"]));
        assert!(plan.tasks.iter().all(|t| t.parent.is_none()));
        assert_consistent(&plan);
    }

    #[test]
    fn sample_as_tasks_runs_phase_by_phase() {
        let plan = by_tasks(SAMPLE).unwrap();
        let expected: &[&[&str]] = &[
            &["1.1"],
            &["1.2", "1.3"],
            &["2.1"],
            &["2.2"],
            &["2.3"],
            &["3.1"],
            &["3.2"],
            &["3.3"],
            &["4.1"],
            &["4.2", "4.3"],
            &["4.4", "4.5"],
            &["4.6"],
            &["5.1"],
            &["5.2", "5.4", "5.6", "5.7"],
            &["5.3", "5.5"],
            &["6.1"],
            &["6.2"],
            &["6.3", "6.4"],
            &["7.1"],
            &["7.2"],
            &["7.3"],
            &["7.4"],
            &["7.5"],
            &["7.6"],
            &["7.7"],
            &["7.8"],
            &["8.1", "8.2", "8.3"],
            &["9.1"],
            &["9.2"],
        ];
        assert_eq!(plan.waves, waves(expected));
    }

    #[test]
    fn sample_as_tasks_folds_steps_into_the_description_and_reads_criteria() {
        let plan = by_tasks(SAMPLE).unwrap();
        let t = task(&plan, "1.1");
        assert_eq!(
            t.acceptance_criteria,
            keys(&[
                "Docker services start within ≤10s (p95) [source: PRD]",
                "All required services (api, worker, redis, db) are running and healthy [source: PRD]",
                "Container cleanup completes within ≤60s after docker compose down [source: PRD]",
                "Service availability meets 99.9% uptime target during operation [source: PRD]",
            ])
        );
        let description = t.description.as_deref().unwrap();
        let steps: Vec<&str> = description.lines().collect();
        assert_eq!(steps.len(), 7, "{description}");
        assert_eq!(
            steps[0],
            "- 1.1.1 Build images: run \"docker compose build\""
        );
        assert_eq!(
            steps[5],
            "- 1.1.6 Verify correctness of Task 1.1 against acceptance criteria"
        );
        assert!(!description.contains("criterion"));
        assert_eq!(t.context_files, keys(&["ai_docs/tasks/task_outcomes.md"]));
        assert_eq!(task(&plan, "2.1").acceptance_criteria.len(), 5);
        assert!(task(&plan, "9.2").acceptance_criteria.is_empty());
        let criteria: usize = plan.tasks.iter().map(|t| t.acceptance_criteria.len()).sum();
        assert_eq!(criteria, SAMPLE.matches('•').count());
    }

    #[test]
    fn sample_as_subtasks_chains_each_tasks_steps() {
        let plan = plan(SAMPLE, options(Granularity::Subtask, None)).unwrap();
        assert_eq!(plan.tasks.len(), 39 + 198);
        let step = task(&plan, "1.1.1");
        assert_eq!(step.parent.as_deref(), Some("1.1"));
        assert_eq!(step.title, "Build images: run \"docker compose build\"");
        assert_eq!(step.phase.as_deref(), Some("1"));
        assert!(step.blocked_by.is_empty());
        assert_eq!(task(&plan, "1.1.2").blocked_by, keys(&["1.1.1"]));
        // The first step waits for what its task waits for; a parent counts as its last step.
        assert_eq!(task(&plan, "1.2.1").blocked_by, keys(&["1.1"]));
        assert_eq!(
            task(&plan, "2.1.1").blocked_by,
            keys(&["1.1", "1.2", "1.3"])
        );
        assert_eq!(task(&plan, "2.1").blocked_by, keys(&["1.1", "1.2", "1.3"]));
        assert_eq!(task(&plan, "1.1.6").acceptance_criteria.len(), 4);
        assert_eq!(task(&plan, "1.1").acceptance_criteria.len(), 4);
        assert!(task(&plan, "1.1.5").acceptance_criteria.is_empty());
        assert_eq!(
            task(&plan, "1.1.7").context_files,
            keys(&["ai_docs/tasks/task_outcomes.md"])
        );
        assert_eq!(plan.blocked_roots, keys(&["1.1", "1.1.1"]));
        // The longest chain of steps through the file, as counted outside this code.
        assert_eq!(plan.waves.len(), 153);
        assert_eq!(
            plan.waves[..8],
            waves(&[
                &["1.1.1"],
                &["1.1.2"],
                &["1.1.3"],
                &["1.1.4"],
                &["1.1.5"],
                &["1.1.6"],
                &["1.1.7"],
                &["1.2.1", "1.3.1"],
            ])
        );
        assert_eq!(plan.waves[13], keys(&["2.1.1"]));
        assert_consistent(&plan);
    }

    #[test]
    fn sample_plans_hold_together_at_every_width() {
        for granularity in [Granularity::Task, Granularity::Subtask] {
            for hint in [None, Some(1), Some(2), Some(3)] {
                let plan = plan(SAMPLE, options(granularity, hint)).unwrap();
                assert_consistent(&plan);
                if let Some(hint) = hint {
                    assert!(plan.waves.iter().all(|wave| wave.len() <= hint));
                }
            }
        }
    }

    #[test]
    fn a_wide_level_is_split_into_waves_of_the_hint() {
        let markdown =
            "- 1.1 A\n- 1.2 B\n- 1.3 C\n- 1.4 D\n- 1.5 E\n- 2.1 F (Dependencies: [1.1, 1.5])\n";
        let plan = plan(markdown, options(Granularity::Task, Some(2))).unwrap();
        assert_eq!(
            plan.waves,
            waves(&[&["1.1", "1.2"], &["1.3", "1.4"], &["1.5"], &["2.1"]])
        );
        let unbounded = by_tasks(markdown).unwrap();
        assert_eq!(
            unbounded.waves,
            waves(&[&["1.1", "1.2", "1.3", "1.4", "1.5"], &["2.1"]])
        );
        assert_eq!(
            unbounded.blocked_roots,
            keys(&["1.1", "1.2", "1.3", "1.4", "1.5"])
        );
    }

    #[test]
    fn keys_order_numerically() {
        let markdown =
            "- 1.10 Ten\n- 1.9 Nine\n- 1.2 Two\n- 2.1 After (Dependencies: [1.10, 1.9])\n";
        let plan = by_tasks(markdown).unwrap();
        let order: Vec<&str> = plan.tasks.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(order, ["1.2", "1.9", "1.10", "2.1"]);
        assert_eq!(plan.waves, waves(&[&["1.2", "1.9", "1.10"], &["2.1"]]));
        assert_eq!(task(&plan, "2.1").blocked_by, keys(&["1.9", "1.10"]));
    }

    #[test]
    fn a_cycle_is_named_in_dependency_order() {
        let markdown = "- 1.1 Start\n- 1.2 B (Dependencies: [1.1, 1.3])\n- 1.3 C (Dependencies: [1.4])\n- 1.4 D (Dependencies: [1.2])\n- 1.5 After (Dependencies: [1.4])\n";
        let err = by_tasks(markdown).unwrap_err();
        assert_eq!(
            err,
            PrdError::Cycle {
                keys: keys(&["1.2", "1.4", "1.3"])
            }
        );
        assert_eq!(
            err.to_string(),
            "dependency cycle: 1.2 → 1.4 → 1.3 → 1.2 (a parent counts as waiting for its sub-tasks)"
        );
    }

    #[test]
    fn a_task_waiting_for_itself_is_a_cycle() {
        let own_line = "- 1.1 A (Dependencies: [1.1])\n";
        assert_eq!(
            by_tasks(own_line).unwrap_err(),
            PrdError::Cycle {
                keys: keys(&["1.1"])
            }
        );
        let own_phase = "Phase 1: One (Dependencies: [1])\n- 1.1 A\n- 1.2 B\n";
        assert_eq!(
            by_tasks(own_phase).unwrap_err(),
            PrdError::Cycle {
                keys: keys(&["1.1"])
            }
        );
    }

    #[test]
    fn a_step_waiting_for_its_own_task_is_a_cycle_only_when_steps_are_tasks() {
        let markdown = "- 1.1 A\n  - 1.1.1 First\n  - 1.1.2 Second (Dependencies: [1.1])\n";
        assert_eq!(
            plan(markdown, options(Granularity::Subtask, None)).unwrap_err(),
            PrdError::Cycle {
                keys: keys(&["1.1", "1.1.2"])
            }
        );
        let plan = by_tasks(markdown).unwrap();
        assert!(task(&plan, "1.1").blocked_by.is_empty());
    }

    #[test]
    fn a_reference_to_a_step_means_its_task_when_steps_are_not_tasks() {
        let markdown = "- 1.1 A\n  - 1.1.1 First\n  - 1.1.2 Second\n- 2.1 B (Dependencies: [1.1.2])\n  - 2.1.1 Step (Dependencies: [1.1.1, 2.1.0])\n";
        let err = by_tasks(markdown).unwrap_err();
        assert_eq!(
            err,
            PrdError::BadReference {
                task: "2.1.1".into(),
                reference: "2.1.0".into(),
                line: 5
            }
        );
        let markdown = markdown.replace(", 2.1.0", "");
        let by_task = by_tasks(&markdown).unwrap();
        assert_eq!(task(&by_task, "2.1").blocked_by, keys(&["1.1"]));
        let by_step = plan(&markdown, options(Granularity::Subtask, None)).unwrap();
        assert_eq!(task(&by_step, "2.1").blocked_by, keys(&["1.1.2"]));
        assert_eq!(
            task(&by_step, "2.1.1").blocked_by,
            keys(&["1.1.1", "1.1.2"])
        );
    }

    #[test]
    fn a_bad_reference_names_the_task_the_key_and_the_line() {
        let markdown = "# Plan\n- 1.1 A\n- 1.2 B (Dependencies: [1.1, 1.9])\n";
        let err = by_tasks(markdown).unwrap_err();
        assert_eq!(
            err,
            PrdError::BadReference {
                task: "1.2".into(),
                reference: "1.9".into(),
                line: 3
            }
        );
        assert!(
            err.to_string().starts_with("line 3: 1.2 depends on 1.9"),
            "{err}"
        );
        let phase = "Phase 1: One\n- 1.1 A\n\nPhase 2: Two (Dependencies: [7])\n- 2.1 B\n";
        assert_eq!(
            by_tasks(phase).unwrap_err(),
            PrdError::BadReference {
                task: "phase 2".into(),
                reference: "7".into(),
                line: 4
            }
        );
    }

    #[test]
    fn a_key_used_twice_is_refused() {
        let markdown = "- 1.1 A\n  - 1.1.1 Step\n- 1.1 Again\n";
        assert_eq!(
            by_tasks(markdown).unwrap_err(),
            PrdError::DuplicateKey {
                key: "1.1".into(),
                line: 3,
                first_line: 1
            }
        );
        let steps = "- 1.1 A\n  - 1.1.1 Step\n- 1.2 B\n  - 1.1.1 Step\n";
        assert_eq!(
            by_tasks(steps).unwrap_err(),
            PrdError::DuplicateKey {
                key: "1.1.1".into(),
                line: 4,
                first_line: 2
            }
        );
        let phases = "Phase 1: A\n- 1.1 A\nPhase 1: B\n";
        assert_eq!(
            by_tasks(phases).unwrap_err(),
            PrdError::DuplicateKey {
                key: "1".into(),
                line: 3,
                first_line: 1
            }
        );
    }

    #[test]
    fn a_list_without_numbered_items_has_no_tasks() {
        let markdown =
            "# Plan\n\nPhase 1: Setup\n\n- set things up\n1. first\n- 1. also not a task\n";
        assert_eq!(by_tasks(markdown).unwrap_err(), PrdError::NoTasks);
        assert_eq!(by_tasks("").unwrap_err(), PrdError::NoTasks);
    }

    #[test]
    fn a_malformed_dependency_list_is_refused_with_its_line() {
        for (bad, reason) in [
            ("(Dependencies: [1.1)", "the list has no closing ]"),
            ("(Dependencies: 1.1)", "expected [ after \"Dependencies:\""),
            (
                "(Dependencies: [1.x])",
                "each entry must be a key like 1.2 or a phase number",
            ),
            (
                "(Dependencies: [1.1,,1.1])",
                "each entry must be a key like 1.2 or a phase number",
            ),
            (
                "(Dependencies: [1.1]) later",
                "expected the clause to end with \"])\" at the end of the line",
            ),
        ] {
            let markdown = format!("- 1.1 A\n- 1.2 B {bad}\n");
            match by_tasks(&markdown) {
                Err(PrdError::MalformedDependencies {
                    line, reason: got, ..
                }) => {
                    assert_eq!((line, got), (2, reason), "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        // Prose in parentheses is title text, not a dependency clause.
        let plan = by_tasks("- 1.1 Pin versions (dependencies are vendored)\n").unwrap();
        assert_eq!(
            task(&plan, "1.1").title,
            "Pin versions (dependencies are vendored)"
        );
    }

    #[test]
    fn fenced_code_is_description_not_tasks() {
        let markdown = "- 1.1 A\n  ```\n  - 1.2 Not a task (Dependencies: [9.9])\n  ```\n- 1.3 B\n";
        let plan = by_tasks(markdown).unwrap();
        let order: Vec<&str> = plan.tasks.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(order, ["1.1", "1.3"]);
        assert_eq!(
            task(&plan, "1.1").description.as_deref(),
            Some("```\n- 1.2 Not a task (Dependencies: [9.9])\n```")
        );
    }

    #[test]
    fn options_read_from_the_request_json() {
        let parsed: PlanOptions =
            serde_json::from_str(r#"{"granularity": "subtask", "max_parallelism_hint": 3}"#)
                .unwrap();
        assert_eq!(parsed, options(Granularity::Subtask, Some(3)));
        let defaulted: PlanOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(defaulted, PlanOptions::default());
        assert!(serde_json::from_str::<PlanOptions>(r#"{"max_parallelism_hint": 0}"#).is_err());
    }

    #[test]
    fn the_preview_serializes_in_the_contract_shape() {
        let plan = by_tasks("- 1.1 A\n- 1.2 B (Dependencies: [1.1])\n").unwrap();
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["tasks"][1]["key"], "1.2");
        assert_eq!(json["tasks"][1]["blocked_by"], serde_json::json!(["1.1"]));
        assert_eq!(
            json["edges"],
            serde_json::json!([{"from": "1.1", "to": "1.2"}])
        );
        assert_eq!(json["blocked_roots"], serde_json::json!(["1.1"]));
        assert_eq!(json["waves"], serde_json::json!([["1.1"], ["1.2"]]));
    }
}
