//! GitHub payloads converted into Conveyor's own event type at the edge.
//!
//! Only the fields Conveyor uses are read, and every one of them may be absent or null in
//! some payload GitHub sends, so absence is a value here, never a parse failure.

use serde::Deserialize;

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
    /// Any event or action Conveyor does not act on.
    Unhandled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub action: Option<String>,
    pub installation_id: Option<i64>,
    pub repository: Option<Repository>,
    pub sender_is_bot: bool,
    pub kind: EventKind,
}

impl Event {
    pub fn parse(name: &str, payload: &[u8]) -> Result<Event, serde_json::Error> {
        let raw: RawPayload = serde_json::from_slice(payload)?;
        let account = raw
            .installation
            .as_ref()
            .and_then(|i| i.account.as_ref())
            .and_then(|a| a.login.clone())
            .unwrap_or_default();
        let kind = match (name, raw.action.as_deref()) {
            ("issues", Some("labeled")) => match (raw.issue, raw.label.and_then(|l| l.name)) {
                (
                    Some(RawIssue {
                        number: Some(number),
                        title,
                        body,
                    }),
                    Some(label),
                ) => EventKind::IssueLabeled {
                    issue: Issue {
                        number,
                        title: title.unwrap_or_default(),
                        body: body.unwrap_or_default(),
                    },
                    label,
                },
                _ => EventKind::Unhandled,
            },
            ("installation", Some(action)) => match installation_action(action) {
                Some(action) => EventKind::Installation {
                    action,
                    account,
                    repositories: refs(raw.repositories),
                },
                None => EventKind::Unhandled,
            },
            ("installation_repositories", Some("added" | "removed")) => {
                EventKind::InstallationRepositories {
                    account,
                    added: refs(raw.repositories_added),
                    removed: refs(raw.repositories_removed),
                }
            }
            _ => EventKind::Unhandled,
        };
        Ok(Event {
            name: name.to_owned(),
            action: raw.action,
            installation_id: raw.installation.and_then(|i| i.id),
            repository: raw.repository.and_then(|r| {
                Some(Repository {
                    owner: r.owner?.login?,
                    name: r.name?,
                    default_branch: r.default_branch.unwrap_or_else(|| "main".to_owned()),
                })
            }),
            sender_is_bot: raw.sender.and_then(|s| s.r#type).as_deref() == Some("Bot"),
            kind,
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

#[derive(Deserialize)]
struct RawIssue {
    number: Option<i64>,
    title: Option<String>,
    body: Option<String>,
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
        assert!(!event.sender_is_bot);
        assert_eq!(
            event.kind,
            EventKind::IssueLabeled {
                issue: Issue {
                    number: 7,
                    title: "Fix it".into(),
                    body: String::new()
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
        assert!(event.sender_is_bot);
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
}
