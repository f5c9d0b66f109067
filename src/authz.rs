//! Who may do what: the one place the permission rules live. Webhook commands, check-run
//! buttons, the API and pages all ask [`check`] (and [`honours`] for bots), so a rule
//! changed here holds at every entry point.

use crate::pipeline::definition::Settings;

/// A user's permission on a repository, weakest first, as GitHub's repository roles rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    None,
    Read,
    Triage,
    Write,
    Maintain,
    Admin,
}

impl Permission {
    /// From GitHub's `GET /repos/{owner}/{repo}/collaborators/{username}/permission` answer:
    /// prefer `role_name` (admin|maintain|write|triage|read), fall back to `permission`
    /// (admin|write|read|none) for custom roles.
    ///
    /// `permission` is the legacy field: GitHub maps maintain to write and triage to read
    /// there, so it alone would under-rate maintainers. A custom role's `role_name` is its
    /// own name, and then `permission` carries the base role it extends.
    pub fn from_github(permission: &str, role_name: Option<&str>) -> Permission {
        role_name
            .and_then(Permission::from_name)
            .or_else(|| Permission::from_name(permission))
            .unwrap_or(Permission::None)
    }

    /// The permission GitHub calls `name` (`read`, `triage`, `write`, `maintain`, `admin`,
    /// `none`), if it is one.
    pub fn from_name(name: &str) -> Option<Permission> {
        [
            Permission::None,
            Permission::Read,
            Permission::Triage,
            Permission::Write,
            Permission::Maintain,
            Permission::Admin,
        ]
        .into_iter()
        .find(|permission| permission.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::None => "none",
            Permission::Read => "read",
            Permission::Triage => "triage",
            Permission::Write => "write",
            Permission::Maintain => "maintain",
            Permission::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a person signed in to the pages with GitHub needs on a repository to see its tasks
/// and runs: the same as seeing its issues on GitHub.
pub const SEE_ON_PAGES: Permission = Permission::Read;
/// What they need to pause, resume or stop it from the pages.
pub const CONTROL_ON_PAGES: Permission = Permission::Admin;

/// What someone asks Conveyor to do, whatever the entry point (command, button, API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Run,
    Retry,
    Cancel,
    Approve,
    Reject,
    Status,
    Help,
}

impl Action {
    /// Whether the action changes anything: status and help only read, so anyone who can
    /// comment may ask for them.
    pub fn needs_permission(self) -> bool {
        !matches!(self, Action::Status | Action::Help)
    }
}

/// Who asks: a GitHub login and whether GitHub says the account is a bot.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub login: &'a str,
    pub is_bot: bool,
}

impl Actor<'_> {
    /// A GitHub App's account is named `<slug>[bot]`; the suffix counts even where the payload
    /// leaves the account type out, so no path can mistake an App for a person.
    fn is_bot(&self) -> bool {
        self.is_bot || bot_name(self.login).is_some()
    }
}

/// Why Conveyor will not do what was asked. The text is the short reason shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this needs `{needed}` permission on the repository or more, and you have `{has}`")]
    NotEnoughPermission { needed: Permission, has: Permission },
    #[error(
        "you started this run, and this repository does not let the person who started a run approve it (`settings: allow_self_approval`)"
    )]
    SelfApproval,
    #[error("approvals are for people: a bot may not approve or reject a run")]
    BotMayNotApprove,
    #[error(
        "Conveyor acts for bots only when `settings: allowed_bots` lists them, and `{login}` is not listed"
    )]
    BotNotAllowed { login: String },
}

/// Whether Conveyor acts on this actor at all (labels, commands): humans yes, bots only if
/// listed in `allowed_bots` (compare logins case-insensitively, with or without the `[bot]`
/// suffix).
pub fn honours(actor: &Actor, settings: &Settings) -> bool {
    if !actor.is_bot() {
        return true;
    }
    let login = bare_login(actor.login);
    settings
        .allowed_bots
        .iter()
        .any(|allowed| bare_login(allowed).eq_ignore_ascii_case(login))
}

/// May `actor`, holding `permission` on the repository, do `action`? `requester` is the login
/// that started the run (for approve/reject).
pub fn check(
    action: Action,
    actor: &Actor,
    permission: Permission,
    settings: &Settings,
    requester: Option<&str>,
) -> Result<(), Refusal> {
    if !honours(actor, settings) {
        return Err(Refusal::BotNotAllowed {
            login: actor.login.to_owned(),
        });
    }
    if !action.needs_permission() {
        return Ok(());
    }
    let decides_a_gate = matches!(action, Action::Approve | Action::Reject);
    // A listed bot is trusted to start and stop runs by the repository's own file; the gate
    // exists so that a person looks, so no bot passes it.
    if decides_a_gate && actor.is_bot() {
        return Err(Refusal::BotMayNotApprove);
    }
    if permission < settings.approver_permission {
        return Err(Refusal::NotEnoughPermission {
            needed: settings.approver_permission,
            has: permission,
        });
    }
    // Rejecting one's own run stops it, which the requester could do by cancelling anyway.
    let own_run = requester.is_some_and(|login| login.eq_ignore_ascii_case(actor.login));
    if action == Action::Approve && own_run && !settings.allow_self_approval {
        return Err(Refusal::SelfApproval);
    }
    Ok(())
}

/// The App slug of a `<slug>[bot]` login.
fn bot_name(login: &str) -> Option<&str> {
    let split = login.len().checked_sub("[bot]".len())?;
    let (name, suffix) = (login.get(..split)?, login.get(split..)?);
    suffix.eq_ignore_ascii_case("[bot]").then_some(name)
}

fn bare_login(login: &str) -> &str {
    let login = login.trim();
    bot_name(login).unwrap_or(login)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Action, actor, their permission, the repository's settings, the run's requester, and
    /// the answer.
    type Case<'a> = (
        Action,
        Actor<'a>,
        Permission,
        &'a Settings,
        Option<&'a str>,
        Result<(), Refusal>,
    );

    fn settings() -> Settings {
        Settings {
            allowed_bots: vec!["renovate[bot]".into(), "Dependabot".into()],
            ..Settings::default()
        }
    }

    fn person(login: &str) -> Actor<'_> {
        Actor {
            login,
            is_bot: false,
        }
    }

    fn bot(login: &str) -> Actor<'_> {
        Actor {
            login,
            is_bot: true,
        }
    }

    #[test]
    fn role_name_wins_over_the_legacy_permission_field() {
        let cases = [
            ("admin", Some("admin"), Permission::Admin),
            ("write", Some("maintain"), Permission::Maintain),
            ("write", Some("write"), Permission::Write),
            ("read", Some("triage"), Permission::Triage),
            ("read", Some("read"), Permission::Read),
            ("none", None, Permission::None),
            // Custom roles name themselves; their base role is in `permission`.
            ("write", Some("release-manager"), Permission::Write),
            ("read", Some(""), Permission::Read),
            ("admin", None, Permission::Admin),
            ("something-new", Some("also-new"), Permission::None),
        ];
        for (permission, role_name, expected) in cases {
            assert_eq!(
                Permission::from_github(permission, role_name),
                expected,
                "{permission} {role_name:?}"
            );
        }
    }

    #[test]
    fn permissions_rank_as_github_roles_do_and_round_trip_their_names() {
        assert!(Permission::Admin > Permission::Maintain);
        assert!(Permission::Maintain > Permission::Write);
        assert!(Permission::Write > Permission::Triage);
        assert!(Permission::Triage > Permission::Read);
        assert!(Permission::Read > Permission::None);
        for name in ["none", "read", "triage", "write", "maintain", "admin"] {
            assert_eq!(Permission::from_name(name).unwrap().as_str(), name);
        }
        assert_eq!(Permission::from_name("Write"), None);
    }

    #[test]
    fn only_status_and_help_are_open_to_everyone() {
        let open: Vec<Action> = [
            Action::Run,
            Action::Retry,
            Action::Cancel,
            Action::Approve,
            Action::Reject,
            Action::Status,
            Action::Help,
        ]
        .into_iter()
        .filter(|action| !action.needs_permission())
        .collect();
        assert_eq!(open, [Action::Status, Action::Help]);
    }

    #[test]
    fn bots_are_honoured_only_when_listed_and_people_always() {
        let settings = settings();
        let cases = [
            (person("alice"), true),
            (bot("renovate[bot]"), true),
            (bot("RENOVATE"), true),
            (bot("dependabot[bot]"), true),
            (bot("dependabot"), true),
            (bot("conveyor[bot]"), false),
            (bot("renovate-fork[bot]"), false),
            // GitHub Apps end in `[bot]` even where the account type is missing.
            (person("conveyor[bot]"), false),
            (person("Dependabot[BOT]"), true),
        ];
        for (actor, expected) in cases {
            assert_eq!(honours(&actor, &settings), expected, "{actor:?}");
        }
        assert!(!honours(&bot("renovate[bot]"), &Settings::default()));
    }

    #[test]
    fn the_rules_for_each_action_actor_and_permission() {
        use Permission::{Admin, Maintain, None as NoAccess, Read, Triage, Write};
        let maintainers = Settings {
            approver_permission: Maintain,
            ..settings()
        };
        let self_approving = Settings {
            allow_self_approval: true,
            ..settings()
        };
        let low = |needed, has| Err::<(), _>(Refusal::NotEnoughPermission { needed, has });
        let unlisted = || {
            Err::<(), _>(Refusal::BotNotAllowed {
                login: "stranger[bot]".into(),
            })
        };
        let defaults = settings();
        // The table reads best one rule a line.
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (Action::Run, person("bob"), Write, &defaults, None, Ok(())),
            (Action::Run, person("bob"), Triage, &defaults, None, low(Write, Triage)),
            (Action::Retry, person("bob"), Read, &defaults, None, low(Write, Read)),
            (Action::Cancel, person("bob"), NoAccess, &defaults, None, low(Write, NoAccess)),
            (Action::Cancel, person("bob"), Admin, &defaults, None, Ok(())),
            (Action::Status, person("bob"), NoAccess, &defaults, None, Ok(())),
            (Action::Help, person("bob"), NoAccess, &defaults, None, Ok(())),
            (Action::Approve, person("bob"), Write, &defaults, Some("alice"), Ok(())),
            (Action::Approve, person("bob"), Read, &defaults, Some("alice"), low(Write, Read)),
            (Action::Approve, person("bob"), Write, &maintainers, Some("alice"), low(Maintain, Write)),
            (Action::Run, person("bob"), Write, &maintainers, None, low(Maintain, Write)),
            (Action::Approve, person("bob"), Admin, &maintainers, Some("alice"), Ok(())),
            // The requester may not approve their own run, whatever their permission...
            (Action::Approve, person("alice"), Admin, &defaults, Some("alice"), Err(Refusal::SelfApproval)),
            (Action::Approve, person("Alice"), Write, &defaults, Some("aLiCe"), Err(Refusal::SelfApproval)),
            // ...unless the repository allows it, and may always reject it.
            (Action::Approve, person("alice"), Write, &self_approving, Some("alice"), Ok(())),
            (Action::Reject, person("alice"), Write, &defaults, Some("alice"), Ok(())),
            (Action::Reject, person("alice"), Read, &defaults, Some("alice"), low(Write, Read)),
            // Permission is checked before self-approval: the lack of it is the real reason.
            (Action::Approve, person("alice"), Read, &defaults, Some("alice"), low(Write, Read)),
            // A listed bot starts and stops runs but never decides a gate.
            (Action::Run, bot("renovate[bot]"), Write, &defaults, None, Ok(())),
            (Action::Cancel, bot("renovate[bot]"), Write, &defaults, None, Ok(())),
            (Action::Run, bot("renovate[bot]"), Read, &defaults, None, low(Write, Read)),
            (Action::Approve, bot("renovate[bot]"), Admin, &self_approving, None, Err(Refusal::BotMayNotApprove)),
            (Action::Reject, bot("dependabot[bot]"), Admin, &defaults, None, Err(Refusal::BotMayNotApprove)),
            // An unlisted bot is refused everything, reading included.
            (Action::Run, bot("stranger[bot]"), Admin, &defaults, None, unlisted()),
            (Action::Status, bot("stranger[bot]"), Admin, &defaults, None, unlisted()),
            (Action::Approve, person("stranger[bot]"), Admin, &defaults, None, unlisted()),
        ];
        for (action, actor, permission, settings, requester, expected) in cases {
            assert_eq!(
                &check(*action, actor, *permission, settings, *requester),
                expected,
                "{action:?} by {actor:?} with {permission:?}, requester {requester:?}"
            );
        }
    }

    #[test]
    fn refusals_say_why_in_a_short_sentence() {
        let cases = [
            (
                Refusal::NotEnoughPermission {
                    needed: Permission::Write,
                    has: Permission::Read,
                },
                "this needs `write` permission on the repository or more, and you have `read`",
            ),
            (
                Refusal::SelfApproval,
                "you started this run, and this repository does not let the person who started a run approve it (`settings: allow_self_approval`)",
            ),
            (
                Refusal::BotMayNotApprove,
                "approvals are for people: a bot may not approve or reject a run",
            ),
            (
                Refusal::BotNotAllowed {
                    login: "x[bot]".into(),
                },
                "Conveyor acts for bots only when `settings: allowed_bots` lists them, and `x[bot]` is not listed",
            ),
        ];
        for (refusal, text) in cases {
            assert_eq!(refusal.to_string(), text);
        }
    }
}
