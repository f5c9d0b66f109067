//! `app-manifest.json`, filled in with this installation's public URL for GitHub's App
//! manifest flow.

use serde_json::{Value, json};

/// The App Conveyor asks GitHub for: permissions, events and the rest.
pub const TEMPLATE: &str = include_str!("../../app-manifest.json");

/// Where set-up and webhooks are served, relative to `CONVEYOR_PUBLIC_URL`.
pub const WEBHOOK_PATH: &str = "/webhooks/github";
pub const CALLBACK_PATH: &str = "/setup/callback";
/// Where GitHub sends a person back after they sign in with the App (the pages' sign-in).
pub const SIGN_IN_CALLBACK_PATH: &str = "/auth/callback";

/// The manifest for an installation of Conveyor served at `public_url` (no trailing slash).
pub fn for_public_url(public_url: &str) -> Value {
    let mut manifest: Value =
        serde_json::from_str(TEMPLATE).expect("app-manifest.json is valid JSON");
    manifest["url"] = json!(public_url);
    manifest["hook_attributes"]["url"] = json!(format!("{public_url}{WEBHOOK_PATH}"));
    manifest["redirect_url"] = json!(format!("{public_url}{CALLBACK_PATH}"));
    manifest["callback_urls"] = json!([format!("{public_url}{SIGN_IN_CALLBACK_PATH}")]);
    // After someone installs the App, GitHub sends them back to the status page.
    manifest["setup_url"] = json!(format!("{public_url}/"));
    manifest["setup_on_update"] = json!(true);
    manifest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_url_points_at_the_public_url() {
        let manifest = for_public_url("https://ci.example.org");
        assert_eq!(
            manifest["hook_attributes"]["url"],
            "https://ci.example.org/webhooks/github"
        );
        assert_eq!(
            manifest["redirect_url"],
            "https://ci.example.org/setup/callback"
        );
        assert_eq!(manifest["setup_url"], "https://ci.example.org/");
        assert_eq!(
            manifest["callback_urls"],
            json!(["https://ci.example.org/auth/callback"])
        );
        assert!(!manifest.to_string().contains("conveyor.example.com"));
    }
}
