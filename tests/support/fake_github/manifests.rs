//! GitHub's App manifest flow: the form `/settings/apps/new` that makes an App from a
//! manifest and sends the person back with a code, and `POST /app-manifests/{code}/conversions`
//! that trades the code (once, within the hour) for the App and its secrets.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::apps::private_key_pem;
use super::wire::{
    gh_error, json_response, node_id, not_found, random_alnum, ts, user_json, validation_failed,
};
use super::{FakeGitHub, Shared, lock};

/// GitHub's codes last an hour.
const CODE_LIFETIME: Duration = Duration::from_secs(3600);
/// Ids of Apps made from manifests; far from [`super::APP_ID`] so a test can tell them apart.
const FIRST_APP_ID: u64 = 770_000;

/// An App made from a manifest, with the secrets the conversion hands out once.
#[derive(Clone, Debug)]
pub struct CreatedApp {
    pub id: u64,
    pub slug: String,
    pub owner: String,
    pub manifest: Value,
    pub client_id: String,
    pub client_secret: String,
    pub webhook_secret: String,
    created_at: DateTime<Utc>,
}

#[derive(Default)]
pub(super) struct Manifests {
    apps: Vec<CreatedApp>,
    /// Code → index in `apps`, until converted.
    codes: Vec<(String, usize)>,
}

impl Manifests {
    /// Whether `id` is one of the Apps made here (its JWTs are signed with the fake's key).
    pub(super) fn knows_app(&self, id: u64) -> bool {
        self.apps.iter().any(|app| app.id == id)
    }

    /// The secret and the callback URLs (the manifest's `callback_urls`) of the OAuth
    /// client `client_id` of an App made here.
    pub(super) fn client(&self, client_id: &str) -> Option<(String, Vec<String>)> {
        let app = self.apps.iter().find(|app| app.client_id == client_id)?;
        let callbacks = app.manifest["callback_urls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|url| url.as_str().map(str::to_owned))
            .collect();
        Some((app.client_secret.clone(), callbacks))
    }
}

impl FakeGitHub {
    /// Every App made from a manifest, in order.
    pub fn created_apps(&self) -> Vec<CreatedApp> {
        lock(&self.shared).manifests.apps.clone()
    }

    /// Ages every unconverted code past GitHub's hour.
    pub fn expire_manifest_codes(&self) {
        let mut inner = lock(&self.shared);
        let aged = Utc::now() - chrono::Duration::from_std(CODE_LIFETIME).unwrap() * 2;
        for app in &mut inner.manifests.apps {
            app.created_at = aged;
        }
    }
}

fn slug(name: &str) -> String {
    let slug: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    slug.trim_matches('-').to_owned()
}

/// `POST /settings/apps/new?state=` (or `/organizations/{org}/settings/apps/new`) with a
/// form field `manifest`: as if the person confirmed at once, GitHub makes the App and
/// redirects to the manifest's `redirect_url` with `code` and `state`.
pub(super) fn new_app_from_form(
    shared: &Shared,
    parts: &Parts,
    org: Option<&str>,
    body: &Bytes,
) -> Response {
    let state = parts.uri.query().and_then(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "state")
            .map(|(_, value)| value.into_owned())
    });
    let manifest = url::form_urlencoded::parse(body)
        .find(|(name, _)| name == "manifest")
        .and_then(|(_, value)| serde_json::from_str::<Value>(&value).ok());
    let Some(manifest) = manifest.filter(Value::is_object) else {
        return gh_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid GitHub App configuration: manifest is not a JSON object",
        );
    };
    let (Some(_), Some(redirect_url)) = (
        manifest["url"].as_str(),
        manifest["redirect_url"].as_str().map(str::to_owned),
    ) else {
        return validation_failed(
            json!([{ "resource": "Manifest", "code": "missing_field", "field": "url or redirect_url" }]),
        );
    };
    let mut inner = lock(shared);
    let id = FIRST_APP_ID + inner.manifests.apps.len() as u64;
    let name = manifest["name"].as_str().unwrap_or("app").to_owned();
    let app = CreatedApp {
        id,
        slug: format!("{}-{id}", slug(&name)),
        owner: org.unwrap_or("octocat").to_owned(),
        manifest,
        client_id: format!("Iv23{}", random_alnum(16)),
        client_secret: random_alnum(40),
        webhook_secret: random_alnum(32),
        created_at: Utc::now(),
    };
    let code = random_alnum(20);
    inner.manifests.apps.push(app);
    let index = inner.manifests.apps.len() - 1;
    inner.manifests.codes.push((code.clone(), index));
    let mut location =
        url::Url::parse(&redirect_url).expect("the manifest's redirect_url is a URL");
    location.query_pairs_mut().append_pair("code", &code);
    if let Some(state) = state {
        location.query_pairs_mut().append_pair("state", &state);
    }
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::FOUND;
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(location.as_str()).expect("a URL is a header value"),
    );
    response
}

/// `POST /app-manifests/{code}/conversions`: 201 with the App and its secrets; 404 for a
/// code never issued or already used; 422 for one older than an hour.
pub(super) fn convert(shared: &Shared, code: &str) -> Response {
    let mut inner = lock(shared);
    let Some(position) = inner.manifests.codes.iter().position(|(c, _)| c == code) else {
        return not_found();
    };
    let (_, index) = inner.manifests.codes.remove(position);
    let app = inner.manifests.apps[index].clone();
    let age = (Utc::now() - app.created_at).to_std().unwrap_or_default();
    if age > CODE_LIFETIME {
        return validation_failed(
            json!([{ "resource": "Manifest", "code": "expired", "field": "code" }]),
        );
    }
    let base = inner.base_url.clone();
    let owner_kind = if app.owner == "octocat" {
        "User"
    } else {
        "Organization"
    };
    let manifest = &app.manifest;
    let value = json!({
        "id": app.id,
        "slug": app.slug,
        "node_id": node_id("A", app.id),
        "client_id": app.client_id,
        "owner": user_json(&base, &app.owner, super::wire::owner_id(&app.owner), owner_kind),
        "name": manifest["name"],
        "description": manifest["description"],
        "external_url": manifest["url"],
        "html_url": format!("{base}/apps/{}", app.slug),
        "created_at": ts(&app.created_at),
        "updated_at": ts(&app.created_at),
        "permissions": manifest["default_permissions"],
        "events": manifest["default_events"],
        "installations_count": 0,
        "client_secret": app.client_secret,
        "webhook_secret": app.webhook_secret,
        "pem": private_key_pem(),
    });
    json_response(StatusCode::CREATED, &value)
}
