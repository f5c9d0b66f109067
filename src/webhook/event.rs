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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    IssueLabeled {
        issue: Issue,
        label: String,
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
    pub kind: EventKind,
}

impl Event {
    pub fn parse(name: &str, payload: &[u8]) -> Result<Event, serde_json::Error> {
        let raw: RawPayload = serde_json::from_slice(payload)?;
        let kind = match (name, raw.action.as_deref()) {
            ("issues", Some("labeled")) => match (raw.issue, raw.label) {
                (Some(issue), Some(label)) => EventKind::IssueLabeled {
                    issue: Issue {
                        number: issue.number,
                        title: issue.title.unwrap_or_default(),
                        body: issue.body.unwrap_or_default(),
                    },
                    label: label.name,
                },
                _ => EventKind::Unhandled,
            },
            _ => EventKind::Unhandled,
        };
        Ok(Event {
            name: name.to_owned(),
            action: raw.action,
            installation_id: raw.installation.map(|i| i.id),
            repository: raw.repository.map(|r| Repository {
                owner: r.owner.login,
                name: r.name,
                default_branch: r.default_branch.unwrap_or_else(|| "main".to_owned()),
            }),
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

#[derive(Deserialize)]
struct RawPayload {
    action: Option<String>,
    installation: Option<RawId>,
    repository: Option<RawRepository>,
    issue: Option<RawIssue>,
    label: Option<RawLabel>,
}

#[derive(Deserialize)]
struct RawId {
    id: i64,
}

#[derive(Deserialize)]
struct RawRepository {
    name: String,
    owner: RawOwner,
    default_branch: Option<String>,
}

#[derive(Deserialize)]
struct RawOwner {
    login: String,
}

#[derive(Deserialize)]
struct RawIssue {
    number: i64,
    title: Option<String>,
    body: Option<String>,
}

#[derive(Deserialize)]
struct RawLabel {
    name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labeled_issue_without_installation() {
        let payload = br#"{"action":"labeled","issue":{"number":7,"title":"Fix it","body":null},
            "label":{"name":"conveyor"},
            "repository":{"name":"r","owner":{"login":"o"},"default_branch":"trunk"}}"#;
        let event = Event::parse("issues", payload).unwrap();
        assert_eq!(event.installation_id, None);
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
    fn labeled_without_label_is_unhandled_and_other_events_too() {
        let payload = br#"{"action":"labeled","issue":{"number":7,"title":"x"}}"#;
        assert_eq!(
            Event::parse("issues", payload).unwrap().kind,
            EventKind::Unhandled
        );
        assert_eq!(
            Event::parse("ping", b"{}").unwrap().kind,
            EventKind::Unhandled
        );
    }

    #[test]
    fn invalid_json_is_an_error() {
        assert!(Event::parse("issues", b"not json").is_err());
    }
}
