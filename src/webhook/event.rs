//! GitHub payloads converted into Conveyor's own event type at the edge.
//!
//! Only the fields Conveyor uses are read, and every one of them may be absent or null in
//! some payload GitHub sends, so absence is a value here, never a parse failure.

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::inbox::Summary;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    pub owner: String,
    pub name: String,
    pub default_branch: String,
}

impl Repository {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub number: i64,
    pub title: String,
    pub body: String,
    /// Its labels' names when the event was sent: they may choose the pipeline.
    pub labels: Vec<String>,
}

/// Who sent an event or wrote a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub login: String,
    /// GitHub says the account is a `Bot`, or its login ends in `[bot]` as apps' logins do.
    pub is_bot: bool,
}

/// A comment, by the API family its id belongs to: issue comments and pull request review
/// comments are numbered, edited and reacted to through different endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommentRef {
    Issue(i64),
    ReviewComment(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRunRef {
    pub id: i64,
    pub name: String,
    pub head_sha: String,
    /// What the check run's creator stored in it; GitHub's empty string is `None`.
    pub external_id: Option<String>,
}

/// A repository as installation events list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryRef {
    pub id: i64,
    pub full_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallationAction {
    Created,
    Deleted,
    Suspend,
    Unsuspend,
    NewPermissionsAccepted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    IssueLabeled {
        issue: Issue,
        label: String,
    },
    Installation {
        action: InstallationAction,
        account: String,
        repositories: Vec<RepositoryRef>,
    },
    InstallationRepositories {
        account: String,
        added: Vec<RepositoryRef>,
        removed: Vec<RepositoryRef>,
    },
    /// `issues.unlabeled`.
    IssueUnlabeled {
        issue: Issue,
        label: String,
    },
    /// `issues.closed`.
    IssueClosed {
        issue: Issue,
    },
    /// `issue_comment.created` on an issue or a pull request, and
    /// `pull_request_review_comment.created` (whose issue is the pull request).
    CommentCreated {
        issue: Issue,
        is_pull_request: bool,
        comment: CommentRef,
        body: String,
        author: Actor,
    },
    /// `check_run.requested_action`: someone pressed one of the check run's buttons.
    CheckRunRequestedAction {
        check_run: CheckRunRef,
        identifier: String,
    },
    /// `check_run.rerequested`: someone asked for the check run again.
    CheckRunRerequested {
        check_run: CheckRunRef,
    },
    /// `check_suite.rerequested`: someone asked for every check on a commit again.
    CheckSuiteRerequested {
        head_sha: String,
        head_branch: Option<String>,
    },
    /// `pull_request.closed`, merged or not.
    PullRequestClosed {
        number: i64,
        merged: bool,
        head_ref: String,
    },
    /// Any event or action Conveyor does not act on, or one missing what Conveyor needs.
    Unhandled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub action: Option<String>,
    pub installation_id: Option<i64>,
    pub repository: Option<Repository>,
    pub sender: Option<Actor>,
    pub kind: EventKind,
}

impl Event {
    pub fn parse(name: &str, payload: &[u8]) -> Result<Event, serde_json::Error> {
        let mut raw: RawPayload = serde_json::from_slice(payload)?;
        let repository = raw.repository.take().and_then(|r| {
            Some(Repository {
                owner: r.owner?.login?,
                name: r.name?,
                default_branch: r.default_branch.unwrap_or_else(|| "main".to_owned()),
            })
        });
        let sender = raw.sender.take().and_then(RawUser::into_actor);
        let action = raw.action.clone();
        let installation_id = raw.installation.as_ref().and_then(|i| i.id);
        Ok(Event {
            name: name.to_owned(),
            action,
            installation_id,
            repository,
            sender,
            kind: kind(name, raw).unwrap_or(EventKind::Unhandled),
        })
    }

    pub fn summary(&self) -> Summary {
        Summary {
            action: self.action.clone(),
            installation_id: self.installation_id,
            repository: self.repository.as_ref().map(Repository::full_name),
        }
    }
}

/// What the event is, or `None` when Conveyor does not act on it or the payload lacks
/// something the kind needs.
fn kind(name: &str, raw: RawPayload) -> Option<EventKind> {
    let account = raw
        .installation
        .and_then(|i| i.account)
        .and_then(|a| a.login)
        .unwrap_or_default();
    Some(match (name, raw.action?.as_str()) {
        ("issues", "labeled") => EventKind::IssueLabeled {
            issue: raw.issue?.into_issue()?,
            label: raw.label?.name?,
        },
        ("issues", "unlabeled") => EventKind::IssueUnlabeled {
            issue: raw.issue?.into_issue()?,
            label: raw.label?.name?,
        },
        ("issues", "closed") => EventKind::IssueClosed {
            issue: raw.issue?.into_issue()?,
        },
        ("issue_comment", "created") => {
            let issue = raw.issue?;
            let is_pull_request = issue.pull_request.is_some();
            let comment = raw.comment?;
            EventKind::CommentCreated {
                issue: issue.into_issue()?,
                is_pull_request,
                comment: CommentRef::Issue(comment.id?),
                body: comment.body.unwrap_or_default(),
                author: comment.user?.into_actor()?,
            }
        }
        ("pull_request_review_comment", "created") => {
            let pull_request = raw.pull_request?;
            let comment = raw.comment?;
            EventKind::CommentCreated {
                issue: Issue {
                    number: pull_request.number?,
                    title: pull_request.title.unwrap_or_default(),
                    body: pull_request.body.unwrap_or_default(),
                    labels: label_names(pull_request.labels),
                },
                is_pull_request: true,
                comment: CommentRef::ReviewComment(comment.id?),
                body: comment.body.unwrap_or_default(),
                author: comment.user?.into_actor()?,
            }
        }
        ("check_run", "requested_action") => EventKind::CheckRunRequestedAction {
            check_run: raw.check_run?.into_ref()?,
            identifier: raw.requested_action?.identifier?,
        },
        ("check_run", "rerequested") => EventKind::CheckRunRerequested {
            check_run: raw.check_run?.into_ref()?,
        },
        ("check_suite", "rerequested") => {
            let suite = raw.check_suite?;
            EventKind::CheckSuiteRerequested {
                head_sha: suite.head_sha?,
                head_branch: suite.head_branch,
            }
        }
        ("pull_request", "closed") => {
            let pull_request = raw.pull_request?;
            EventKind::PullRequestClosed {
                number: pull_request.number?,
                merged: pull_request.merged?,
                head_ref: pull_request.head?.r#ref?,
            }
        }
        ("installation", action) => EventKind::Installation {
            action: installation_action(action)?,
            account,
            repositories: refs(raw.repositories),
        },
        ("installation_repositories", "added" | "removed") => EventKind::InstallationRepositories {
            account,
            added: refs(raw.repositories_added),
            removed: refs(raw.repositories_removed),
        },
        _ => return None,
    })
}

fn installation_action(action: &str) -> Option<InstallationAction> {
    Some(match action {
        "created" => InstallationAction::Created,
        "deleted" => InstallationAction::Deleted,
        "suspend" => InstallationAction::Suspend,
        "unsuspend" => InstallationAction::Unsuspend,
        "new_permissions_accepted" => InstallationAction::NewPermissionsAccepted,
        _ => return None,
    })
}

fn refs(raw: Option<Vec<RawRepositoryRef>>) -> Vec<RepositoryRef> {
    raw.into_iter()
        .flatten()
        .filter_map(|r| {
            Some(RepositoryRef {
                id: r.id?,
                full_name: r.full_name?,
            })
        })
        .collect()
}

#[derive(Deserialize)]
struct RawPayload {
    action: Option<String>,
    installation: Option<RawInstallation>,
    repository: Option<RawRepository>,
    sender: Option<RawUser>,
    issue: Option<RawIssue>,
    label: Option<RawLabel>,
    comment: Option<RawComment>,
    pull_request: Option<RawPullRequest>,
    check_run: Option<RawCheckRun>,
    check_suite: Option<RawCheckSuite>,
    requested_action: Option<RawRequestedAction>,
    repositories: Option<Vec<RawRepositoryRef>>,
    repositories_added: Option<Vec<RawRepositoryRef>>,
    repositories_removed: Option<Vec<RawRepositoryRef>>,
}

#[derive(Deserialize)]
struct RawInstallation {
    id: Option<i64>,
    account: Option<RawUser>,
}

#[derive(Deserialize)]
struct RawRepository {
    name: Option<String>,
    owner: Option<RawUser>,
    default_branch: Option<String>,
}

#[derive(Deserialize)]
struct RawUser {
    login: Option<String>,
    r#type: Option<String>,
}

impl RawUser {
    fn into_actor(self) -> Option<Actor> {
        let login = self.login?;
        let is_bot = self.r#type.as_deref() == Some("Bot") || login.ends_with("[bot]");
        Some(Actor { login, is_bot })
    }
}

#[derive(Deserialize)]
struct RawIssue {
    number: Option<i64>,
    title: Option<String>,
    body: Option<String>,
    /// Present, whatever it holds, only when the issue is a pull request.
    pull_request: Option<IgnoredAny>,
    labels: Option<Vec<RawLabel>>,
}

impl RawIssue {
    fn into_issue(self) -> Option<Issue> {
        Some(Issue {
            number: self.number?,
            title: self.title.unwrap_or_default(),
            body: self.body.unwrap_or_default(),
            labels: label_names(self.labels),
        })
    }
}

fn label_names(labels: Option<Vec<RawLabel>>) -> Vec<String> {
    labels
        .unwrap_or_default()
        .into_iter()
        .filter_map(|label| label.name)
        .collect()
}

#[derive(Deserialize)]
struct RawComment {
    id: Option<i64>,
    body: Option<String>,
    user: Option<RawUser>,
}

#[derive(Deserialize)]
struct RawPullRequest {
    number: Option<i64>,
    title: Option<String>,
    body: Option<String>,
    merged: Option<bool>,
    head: Option<RawBranch>,
    labels: Option<Vec<RawLabel>>,
}

#[derive(Deserialize)]
struct RawBranch {
    r#ref: Option<String>,
}

#[derive(Deserialize)]
struct RawCheckRun {
    id: Option<i64>,
    name: Option<String>,
    head_sha: Option<String>,
    external_id: Option<String>,
}

impl RawCheckRun {
    fn into_ref(self) -> Option<CheckRunRef> {
        Some(CheckRunRef {
            id: self.id?,
            name: self.name?,
            head_sha: self.head_sha?,
            external_id: self.external_id.filter(|id| !id.is_empty()),
        })
    }
}

#[derive(Deserialize)]
struct RawCheckSuite {
    head_sha: Option<String>,
    head_branch: Option<String>,
}

#[derive(Deserialize)]
struct RawRequestedAction {
    identifier: Option<String>,
}

#[derive(Deserialize)]
struct RawLabel {
    name: Option<String>,
}

#[derive(Deserialize)]
struct RawRepositoryRef {
    id: Option<i64>,
    full_name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labeled_issue_without_installation() {
        let payload = br#"{"action":"labeled","issue":{"number":7,"title":"Fix it","body":null},
            "label":{"name":"conveyor"}, "sender": {"login": "octocat", "type": "User"},
            "repository":{"name":"r","owner":{"login":"o"},"default_branch":"trunk"}}"#;
        let event = Event::parse("issues", payload).unwrap();
        assert_eq!(event.installation_id, None);
        assert_eq!(
            event.sender,
            Some(Actor {
                login: "octocat".into(),
                is_bot: false
            })
        );
        assert_eq!(
            event.kind,
            EventKind::IssueLabeled {
                issue: Issue {
                    number: 7,
                    title: "Fix it".into(),
                    body: String::new(),
                    labels: vec![],
                },
                label: "conveyor".into(),
            }
        );
        assert_eq!(event.summary().repository.as_deref(), Some("o/r"));
        assert_eq!(event.repository.unwrap().default_branch, "trunk");
    }

    #[test]
    fn nulls_and_missing_fields_are_absences() {
        let payload = br#"{"action":"labeled","issue":{"number":null},"label":null,
            "repository":{"name":null,"owner":null},"installation":{"id":null},"sender":null}"#;
        let event = Event::parse("issues", payload).unwrap();
        assert_eq!(event.kind, EventKind::Unhandled);
        assert_eq!((event.installation_id, event.repository), (None, None));
        assert_eq!(
            Event::parse("ping", b"{}").unwrap().kind,
            EventKind::Unhandled
        );
    }

    #[test]
    fn installation_events_carry_their_repositories() {
        let payload = br#"{"action":"created","installation":{"id":5,"account":{"login":"acme"}},
            "repositories":[{"id":1,"full_name":"acme/a"},{"id":2,"full_name":null}],
            "sender":{"login":"x","type":"Bot"}}"#;
        let event = Event::parse("installation", payload).unwrap();
        assert!(event.sender.unwrap().is_bot);
        assert_eq!(
            event.kind,
            EventKind::Installation {
                action: InstallationAction::Created,
                account: "acme".into(),
                repositories: vec![RepositoryRef {
                    id: 1,
                    full_name: "acme/a".into()
                }],
            }
        );
        let removed = br#"{"action":"removed","installation":{"id":5},
            "repositories_removed":[{"id":1,"full_name":"acme/a"}]}"#;
        let EventKind::InstallationRepositories { added, removed, .. } =
            Event::parse("installation_repositories", removed)
                .unwrap()
                .kind
        else {
            panic!("expected installation_repositories");
        };
        assert_eq!((added.len(), removed.len()), (0, 1));
    }

    #[test]
    fn invalid_json_is_an_error() {
        assert!(Event::parse("issues", b"not json").is_err());
    }

    /// GitHub's example payloads: in `shared/` beside the checkout, or under
    /// `CONVEYOR_SHARED_DIR` for a checkout elsewhere (as the integration tests find them).
    fn fixtures() -> std::path::PathBuf {
        std::env::var_os("CONVEYOR_SHARED_DIR")
            .map_or_else(
                || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
                std::path::PathBuf::from,
            )
            .join("fixtures/github-webhooks")
    }

    /// One of GitHub's example payloads, as JSON to patch.
    fn fixture(relative: &str) -> serde_json::Value {
        let path = fixtures().join(relative);
        let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_slice(&text).unwrap()
    }

    fn parse(event: &str, payload: &serde_json::Value) -> Event {
        Event::parse(event, &serde_json::to_vec(payload).unwrap()).unwrap()
    }

    fn issue(number: i64, title: &str, body: &str) -> Issue {
        Issue {
            number,
            title: title.into(),
            body: body.into(),
            labels: vec![],
        }
    }

    fn user(login: &str) -> Actor {
        Actor {
            login: login.into(),
            is_bot: false,
        }
    }

    const SPELLING: &str = "Spelling error in the README file";

    /// The issue of GitHub's examples, labelled `bug`.
    fn spelling(body: &str) -> Issue {
        Issue {
            labels: vec!["bug".into()],
            ..issue(1, SPELLING, body)
        }
    }
    const SPELLING_BODY: &str = "It looks like you accidently spelled 'commit' with two 't's.";

    #[test]
    fn githubs_examples_parse_to_the_new_kinds() {
        let mut closed = fixture("issues/reopened.payload.json");
        closed["action"] = "closed".into();
        let mut on_pull_request = fixture("issue_comment/created.payload.json");
        on_pull_request["issue"]["pull_request"] =
            serde_json::json!({"url": "https://api.github.com/repos/o/r/pulls/1"});
        let check_run = |id, name: &str, head_sha: &str| CheckRunRef {
            id,
            name: name.into(),
            head_sha: head_sha.into(),
            external_id: None,
        };
        let comment = |is_pull_request| EventKind::CommentCreated {
            issue: spelling(SPELLING_BODY),
            is_pull_request,
            comment: CommentRef::Issue(492700400),
            body: "You are totally right! I'll get this fixed right away.".into(),
            author: user("Codertocat"),
        };
        let cases = [
            (
                "issues",
                fixture("issues/unlabeled.payload.json"),
                EventKind::IssueUnlabeled {
                    issue: spelling(SPELLING_BODY),
                    label: "bug".into(),
                },
            ),
            (
                "issues",
                closed,
                EventKind::IssueClosed {
                    issue: spelling(""),
                },
            ),
            (
                "issue_comment",
                fixture("issue_comment/created.with-installation.payload.json"),
                comment(false),
            ),
            ("issue_comment", on_pull_request, comment(true)),
            (
                "pull_request_review_comment",
                fixture("pull_request_review_comment/created.payload.json"),
                EventKind::CommentCreated {
                    issue: Issue {
                        labels: vec!["bug".into()],
                        ..issue(
                            2,
                            "Update the README with new information.",
                            "This is a pretty simple change that we need to pull into master.",
                        )
                    },
                    is_pull_request: true,
                    comment: CommentRef::ReviewComment(284312630),
                    body: "Maybe you should use more emoji on this line.".into(),
                    author: user("Codertocat"),
                },
            ),
            (
                "check_run",
                fixture("check_run/requested_action.payload.json"),
                EventKind::CheckRunRequestedAction {
                    check_run: check_run(
                        1494503112,
                        "API Review",
                        "5bd5f196a46b8222fb7484f05faba41a73cf34bd",
                    ),
                    identifier: "lgtm|26764".into(),
                },
            ),
            (
                "check_run",
                fixture("check_run/rerequested.payload.json"),
                EventKind::CheckRunRerequested {
                    check_run: check_run(
                        4,
                        "randscape",
                        "d6fde92930d4715a2b49857d24b940956b26d2d3",
                    ),
                },
            ),
            (
                "check_suite",
                fixture("check_suite/rerequested.payload.json"),
                EventKind::CheckSuiteRerequested {
                    head_sha: "ec26c3e57ca3a959ca5aad62de7213c562f8c821".into(),
                    head_branch: Some("changes".into()),
                },
            ),
            (
                "pull_request",
                fixture("pull_request/closed.payload.json"),
                EventKind::PullRequestClosed {
                    number: 2,
                    merged: false,
                    head_ref: "changes".into(),
                },
            ),
        ];
        for (name, payload, expected) in cases {
            assert_eq!(parse(name, &payload).kind, expected, "{name}");
        }
    }

    #[test]
    fn the_clicking_user_is_the_sender_and_conveyors_own_ids_come_back() {
        let mut payload = fixture("check_run/requested_action.payload.json");
        payload["check_run"]["external_id"] = "42".into();
        payload["requested_action"]["identifier"] = "approve".into();
        let event = parse("check_run", &payload);
        assert_eq!(event.sender, Some(user("codebytere")));
        let EventKind::CheckRunRequestedAction {
            check_run,
            identifier,
        } = event.kind
        else {
            panic!("expected a requested action: {:?}", event.kind);
        };
        assert_eq!(
            (check_run.external_id.as_deref(), identifier.as_str()),
            (Some("42"), "approve")
        );
    }

    #[test]
    fn a_merged_pull_request_and_a_suite_without_a_branch() {
        let mut merged = fixture("pull_request/closed.payload.json");
        merged["pull_request"]["merged"] = true.into();
        assert!(matches!(
            parse("pull_request", &merged).kind,
            EventKind::PullRequestClosed { merged: true, .. }
        ));
        let mut detached = fixture("check_suite/rerequested.payload.json");
        detached["check_suite"]["head_branch"] = serde_json::Value::Null;
        assert!(matches!(
            parse("check_suite", &detached).kind,
            EventKind::CheckSuiteRerequested {
                head_branch: None,
                ..
            }
        ));
    }

    #[test]
    fn edited_and_deleted_comments_and_other_actions_are_unhandled() {
        for (name, file) in [
            ("issue_comment", "issue_comment/edited.payload.json"),
            ("issue_comment", "issue_comment/deleted.payload.json"),
            (
                "pull_request_review_comment",
                "pull_request_review_comment/edited.payload.json",
            ),
            ("check_run", "check_run/completed.payload.json"),
            ("check_suite", "check_suite/requested.payload.json"),
            ("pull_request", "pull_request/opened.payload.json"),
            ("issues", "issues/opened.payload.json"),
        ] {
            assert_eq!(
                parse(name, &fixture(file)).kind,
                EventKind::Unhandled,
                "{file}"
            );
        }
    }

    #[test]
    fn a_kind_missing_what_it_needs_is_unhandled() {
        let cases = [
            ("issues/unlabeled.payload.json", "/label/name"),
            ("issues/unlabeled.payload.json", "/issue/number"),
            ("issue_comment/created.payload.json", "/comment/id"),
            ("issue_comment/created.payload.json", "/comment/user"),
            ("issue_comment/created.payload.json", "/comment/user/login"),
            ("issue_comment/created.payload.json", "/issue"),
            (
                "pull_request_review_comment/created.payload.json",
                "/pull_request/number",
            ),
            (
                "check_run/requested_action.payload.json",
                "/requested_action",
            ),
            (
                "check_run/requested_action.payload.json",
                "/check_run/head_sha",
            ),
            ("check_run/rerequested.payload.json", "/check_run/id"),
            (
                "check_suite/rerequested.payload.json",
                "/check_suite/head_sha",
            ),
            ("pull_request/closed.payload.json", "/pull_request/merged"),
            ("pull_request/closed.payload.json", "/pull_request/head/ref"),
        ];
        for (file, pointer) in cases {
            let name = file.split('/').next().unwrap();
            let mut payload = fixture(file);
            assert_ne!(parse(name, &payload).kind, EventKind::Unhandled, "{file}");
            *payload.pointer_mut(pointer).unwrap() = serde_json::Value::Null;
            assert_eq!(
                parse(name, &payload).kind,
                EventKind::Unhandled,
                "{file} with {pointer} null"
            );
        }
    }

    #[test]
    fn bots_are_told_by_their_type_or_their_login() {
        let cases = [
            (r#"{"login": "octocat", "type": "User"}"#, false),
            (r#"{"login": "octocat"}"#, false),
            (r#"{"login": "botanist", "type": "User"}"#, false),
            (r#"{"login": "renovate", "type": "Bot"}"#, true),
            (r#"{"login": "conveyor[bot]", "type": "User"}"#, true),
            (r#"{"login": "dependabot[bot]", "type": null}"#, true),
        ];
        for (sender, is_bot) in cases {
            let payload = format!(
                r#"{{"action": "created", "sender": {sender},
                    "issue": {{"number": 1}},
                    "comment": {{"id": 2, "body": "/conveyor help", "user": {sender}}}}}"#
            );
            let event = Event::parse("issue_comment", payload.as_bytes()).unwrap();
            assert_eq!(event.sender.unwrap().is_bot, is_bot, "{sender}");
            let EventKind::CommentCreated { author, .. } = event.kind else {
                panic!("expected a comment: {sender}");
            };
            assert_eq!(author.is_bot, is_bot, "{sender}");
        }
        let nameless = Event::parse("issues", br#"{"sender": {"type": "Bot"}}"#).unwrap();
        assert_eq!(nameless.sender, None);
    }

    /// Every example payload parses, and every one of an event and action Conveyor acts on
    /// parses to a kind other than `Unhandled`.
    #[test]
    fn every_example_payload_parses() {
        let handled = [
            ("issues", "labeled"),
            ("issues", "unlabeled"),
            ("issue_comment", "created"),
            ("pull_request_review_comment", "created"),
            ("check_run", "requested_action"),
            ("check_run", "rerequested"),
            ("check_suite", "rerequested"),
            ("pull_request", "closed"),
            ("installation", "created"),
            ("installation_repositories", "added"),
        ];
        let mut parsed = 0;
        for folder in std::fs::read_dir(fixtures()).unwrap() {
            let folder = folder.unwrap().path();
            if !folder.is_dir() {
                continue;
            }
            let name = folder.file_name().unwrap().to_str().unwrap().to_owned();
            for file in std::fs::read_dir(&folder).unwrap() {
                let file = file.unwrap().path();
                let event = Event::parse(&name, &std::fs::read(&file).unwrap())
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                let key = (name.as_str(), event.action.as_deref().unwrap_or_default());
                if handled.contains(&key) {
                    assert_ne!(event.kind, EventKind::Unhandled, "{}", file.display());
                }
                parsed += 1;
            }
        }
        assert!(parsed > 100, "{parsed} payloads");
    }
}
