//! The App and its installations: the JWT, installation tokens and what they may reach.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::repos::RepoRec;
use super::wire::{
    gh_error, invalid_request, json_response, not_found, random_alnum, repo_json, split_auth, ts,
};
use super::{FakeGitHub, Inner, Shared, lock};

/// The GitHub App id the fake expects as the JWT `iss` claim.
pub const APP_ID: u64 = 4242;

const PRIVATE_KEY_PEM: &str = include_str!("../keys/app-private.pem");
const PUBLIC_KEY_PEM: &str = include_str!("../keys/app-public.pem");
/// What `add_installation` grants: the permissions the App asks for when installed.
const DEFAULT_PERMISSIONS: &[(&str, &str)] = &[
    ("checks", "write"),
    ("contents", "write"),
    ("issues", "write"),
    ("metadata", "read"),
    ("pull_requests", "write"),
];
/// Permission levels, weakest first.
const ACCESS_LEVELS: &[&str] = &["read", "write", "admin"];
pub(super) const FORBIDDEN_TO_INTEGRATION: &str = "Resource not accessible by integration";
const REPOSITORY_NOT_IN_INSTALLATION: &str = "There is at least one repository that does not exist or is not accessible to the parent installation.";
const PERMISSIONS_NOT_GRANTED: &str =
    "The permissions requested are not granted to this installation.";
const JWT_MAX_LIFETIME_SECS: i64 = 600;
const JWT_EXP_LEEWAY_SECS: i64 = 30;
const JWT_IAT_LEEWAY_SECS: i64 = 60;

/// The PEM (PKCS#1) private key of the fake GitHub App.
pub fn private_key_pem() -> &'static str {
    PRIVATE_KEY_PEM
}

pub(super) struct InstallationRec {
    account: String,
    /// Permission name → `read` / `write` / `admin`.
    permissions: BTreeMap<String, String>,
}

/// What a token may reach: its installation's repositories (or the listed ones) with its
/// permissions.
#[derive(Clone)]
pub(super) struct TokenScope {
    installation_id: i64,
    /// Repository ids; `None`: every repository of the installation.
    repositories: Option<Vec<u64>>,
    permissions: BTreeMap<String, String>,
}

impl TokenScope {
    pub(super) fn reaches(&self, repo: &RepoRec) -> bool {
        repo.installation_id == self.installation_id
            && self
                .repositories
                .as_ref()
                .is_none_or(|ids| ids.contains(&repo.id))
    }

    /// Whether the token holds `permission` at `level` or above.
    pub(super) fn allows(&self, permission: &str, level: &str) -> bool {
        let held = self
            .permissions
            .get(permission)
            .and_then(|h| access_rank(h));
        held.is_some_and(|held| Some(held) >= access_rank(level))
    }
}

fn access_rank(level: &str) -> Option<usize> {
    ACCESS_LEVELS.iter().position(|l| *l == level)
}

pub(super) struct TokenRec {
    scope: TokenScope,
    expires_at: DateTime<Utc>,
}

impl Inner {
    pub(super) fn issue_token(&mut self, scope: TokenScope) -> (String, DateTime<Utc>) {
        let token = format!("ghs_{}", random_alnum(36));
        let ttl = chrono::Duration::from_std(self.token_ttl).unwrap_or(chrono::Duration::MAX);
        let expires_at = Utc::now()
            .checked_add_signed(ttl)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.tokens
            .insert(token.clone(), TokenRec { scope, expires_at });
        self.issued.push(token.clone());
        (token, expires_at)
    }

    /// What a currently valid installation token may reach.
    pub(super) fn token_scope(&self, token: &str) -> Option<TokenScope> {
        let rec = self.tokens.get(token)?;
        (Utc::now() < rec.expires_at).then(|| rec.scope.clone())
    }

    /// A token of the whole installation, with everything it was granted.
    pub(super) fn installation_scope(&self, installation_id: i64) -> TokenScope {
        TokenScope {
            installation_id,
            repositories: None,
            permissions: self
                .installations
                .get(&installation_id)
                .map(|i| i.permissions.clone())
                .unwrap_or_default(),
        }
    }
}

impl FakeGitHub {
    /// Registers an installation of the app on `account`, granted the App's usual
    /// permissions (checks, contents, issues and pull requests: write; metadata: read).
    pub fn add_installation(&self, installation_id: i64, account: &str) {
        let permissions = DEFAULT_PERMISSIONS
            .iter()
            .map(|(name, level)| (name.to_string(), level.to_string()))
            .collect();
        lock(&self.shared).installations.insert(
            installation_id,
            InstallationRec {
                account: account.to_string(),
                permissions,
            },
        );
    }

    /// Replaces what the installation was granted; tokens already issued keep theirs.
    pub fn set_installation_permissions(&self, installation_id: i64, permissions: &[(&str, &str)]) {
        let mut inner = lock(&self.shared);
        let installation = inner
            .installations
            .get_mut(&installation_id)
            .expect("known installation");
        installation.permissions = permissions
            .iter()
            .map(|(name, level)| (name.to_string(), level.to_string()))
            .collect();
    }

    /// Lifetime of installation tokens issued from now on (default 1 hour).
    pub fn set_token_ttl(&self, ttl: Duration) {
        lock(&self.shared).token_ttl = ttl;
    }

    /// Issues an installation token directly, bypassing the JWT exchange, for
    /// every repository and permission of the installation. The token is also
    /// reported by [`FakeGitHub::issued_tokens`].
    pub fn mint_token(&self, installation_id: i64) -> String {
        let mut inner = lock(&self.shared);
        let scope = inner.installation_scope(installation_id);
        inner.issue_token(scope).0
    }

    /// Every installation token issued so far, in order.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.shared).issued.clone()
    }

    /// Revokes every installation token issued so far: they now get
    /// `401 Bad credentials` on REST and `401` on git. Tokens issued
    /// afterwards work. [`FakeGitHub::issued_tokens`] still lists them.
    pub fn revoke_tokens(&self) {
        lock(&self.shared).tokens.clear();
    }
}

// ---------------------------------------------------------------------------
// POST /app/installations/{id}/access_tokens
// ---------------------------------------------------------------------------

fn verify_jwt(shared: &Shared, jwt: &str) -> Result<(), &'static str> {
    const UNDECODABLE: &str = "A JSON web token could not be decoded";
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC_KEY_PEM.as_bytes())
        .expect("fake GitHub public key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    validation.required_spec_claims = HashSet::new();
    let data = jsonwebtoken::decode::<Value>(jwt, &key, &validation).map_err(|_| UNDECODABLE)?;
    let claims = data.claims;
    let now = Utc::now().timestamp();

    let iat = claims.get("iat").and_then(Value::as_i64).ok_or(
        "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
    )?;
    if iat > now + JWT_IAT_LEEWAY_SECS {
        return Err("'Issued at' claim ('iat') must be an Integer representing a time in the past");
    }
    let exp = claims
        .get("exp")
        .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
        .ok_or("'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires")?;
    if exp <= now {
        return Err(
            "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
        );
    }
    if exp > now + JWT_MAX_LIFETIME_SECS + JWT_EXP_LEEWAY_SECS {
        return Err("'Expiration time' claim ('exp') is too far in the future");
    }
    let iss_ok = match claims.get("iss") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => return Err("'Issuer' claim ('iss') must be an Integer"),
    }
    .is_some_and(|id| id == APP_ID || lock(shared).manifests.knows_app(id));
    if !iss_ok {
        return Err(UNDECODABLE);
    }
    Ok(())
}

/// Checks `Authorization: Bearer <App JWT>`; the error is GitHub's 401.
pub(super) fn require_app_jwt(shared: &Shared, auth: Option<&str>) -> Result<(), Response> {
    let undecodable = || {
        gh_error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        )
    };
    let jwt = match auth.and_then(split_auth) {
        Some((scheme, jwt)) if scheme == "bearer" => jwt,
        _ => return Err(undecodable()),
    };
    verify_jwt(shared, jwt).map_err(|msg| gh_error(StatusCode::UNAUTHORIZED, msg))
}

/// What `POST /app/installations/{id}/access_tokens` asked for, validated
/// against the installation.
fn requested_scope(
    inner: &Inner,
    installation_id: i64,
    body: &Value,
) -> Result<TokenScope, Response> {
    let installation = &inner.installations[&installation_id];
    let mut repositories: Vec<u64> = Vec::new();
    for (key, by_name) in [("repositories", true), ("repository_ids", false)] {
        let items = match body.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(invalid_request(&format!(
                    "For 'properties/{key}', {other} is not an array."
                )));
            }
        };
        for item in items {
            let found = match (by_name, item) {
                (true, Value::String(name)) => inner.repos.iter().find(|r| {
                    r.installation_id == installation_id && r.name.eq_ignore_ascii_case(name)
                }),
                (false, Value::Number(id)) => inner
                    .repos
                    .iter()
                    .find(|r| r.installation_id == installation_id && Some(r.id) == id.as_u64()),
                (_, other) => {
                    let kind = if by_name { "a string" } else { "an integer" };
                    return Err(invalid_request(&format!(
                        "For 'items', {other} is not {kind}."
                    )));
                }
            };
            match found {
                Some(r) if !repositories.contains(&r.id) => repositories.push(r.id),
                Some(_) => {}
                None => {
                    return Err(gh_error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        REPOSITORY_NOT_IN_INSTALLATION,
                    ));
                }
            }
        }
    }
    let permissions = match body.get("permissions") {
        None | Some(Value::Null) => installation.permissions.clone(),
        Some(Value::Object(asked)) => {
            let mut granted = BTreeMap::new();
            for (name, level) in asked {
                let Some((level, rank)) = level.as_str().and_then(|l| Some((l, access_rank(l)?)))
                else {
                    return Err(invalid_request(&format!(
                        "For 'properties/{name}', {level} is not a member of {ACCESS_LEVELS:?}."
                    )));
                };
                let held = installation
                    .permissions
                    .get(name)
                    .and_then(|h| access_rank(h));
                if held.is_none_or(|held| held < rank) {
                    return Err(gh_error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        PERMISSIONS_NOT_GRANTED,
                    ));
                }
                granted.insert(name.clone(), level.to_string());
            }
            // Every token may read the repository's metadata when the installation can.
            if let Some(metadata) = installation.permissions.get("metadata") {
                granted
                    .entry("metadata".to_string())
                    .or_insert_with(|| metadata.clone());
            }
            granted
        }
        Some(other) => {
            return Err(invalid_request(&format!(
                "For 'properties/permissions', {other} is not an object."
            )));
        }
    };
    Ok(TokenScope {
        installation_id,
        repositories: (!repositories.is_empty()).then_some(repositories),
        permissions,
    })
}

pub(super) fn create_access_token(
    shared: &Shared,
    auth: Option<&str>,
    id: &str,
    body: &Bytes,
) -> Response {
    if let Err(resp) = require_app_jwt(shared, auth) {
        return resp;
    }
    let Some(installation_id) = id.parse::<i64>().ok() else {
        return not_found();
    };
    let mut inner = lock(shared);
    if !inner.installations.contains_key(&installation_id) {
        return not_found();
    }
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return gh_error(StatusCode::BAD_REQUEST, "Problems parsing JSON"),
        }
    };
    let scope = match requested_scope(&inner, installation_id, &body) {
        Ok(scope) => scope,
        Err(resp) => return resp,
    };
    let (token, expires_at) = inner.issue_token(scope.clone());
    let mut value = json!({
        "token": token,
        "expires_at": ts(&expires_at),
        "permissions": scope.permissions,
        "repository_selection": if scope.repositories.is_some() { "selected" } else { "all" },
    });
    if let Some(ids) = &scope.repositories {
        let repos: Vec<Value> = ids
            .iter()
            .filter_map(|id| inner.repos.iter().find(|r| r.id == *id))
            .map(|r| repo_json(&inner.base_url, r))
            .collect();
        value["repositories"] = Value::Array(repos);
    }
    json_response(StatusCode::CREATED, &value)
}
