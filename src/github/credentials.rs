//! The App's credentials as the service uses them now: from the environment, or from
//! set-up, which replaces them while the service runs. The webhook verifier and token
//! minting both read them here, from memory.

use std::sync::Arc;

use secrecy::SecretString;
use tokio::sync::watch;

use super::app::AppCredentials;
use super::oauth::OAuthClient;

/// Where a credential came from; the environment wins over set-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Environment,
    Setup,
}

pub struct Sourced<T> {
    pub value: Arc<T>,
    pub source: Source,
}

impl<T> Clone for Sourced<T> {
    fn clone(&self) -> Self {
        Self {
            value: self.value.clone(),
            source: self.source,
        }
    }
}

impl<T> Sourced<T> {
    pub fn new(value: T, source: Source) -> Self {
        Self {
            value: Arc::new(value),
            source,
        }
    }
}

/// The App's id and key, the webhook secret and the App's OAuth client, each when known.
#[derive(Clone, Default)]
pub struct Current {
    pub app: Option<Sourced<AppCredentials>>,
    pub webhook_secret: Option<Sourced<SecretString>>,
    pub oauth: Option<Sourced<OAuthClient>>,
}

impl Current {
    /// `self` with what set-up stored in the parts the environment does not set. The OAuth
    /// client belongs to one App: set-up's client is taken only with set-up's App.
    fn with_setup(&self, setup: Current) -> Current {
        let app = environment_wins(&self.app, setup.app);
        let oauth = match &app {
            Some(app) if app.source == Source::Environment => self.oauth.clone(),
            _ => environment_wins(&self.oauth, setup.oauth),
        };
        Current {
            app,
            webhook_secret: environment_wins(&self.webhook_secret, setup.webhook_secret),
            oauth,
        }
    }
}

fn environment_wins<T>(
    current: &Option<Sourced<T>>,
    setup: Option<Sourced<T>>,
) -> Option<Sourced<T>> {
    match current {
        Some(env) if env.source == Source::Environment => Some(env.clone()),
        _ => setup.or_else(|| current.clone()),
    }
}

/// Shared by every part of the service. A read is a short read lock and an `Arc` clone:
/// the webhook path never waits on the database for its secret.
#[derive(Clone)]
pub struct Credentials(Arc<watch::Sender<Current>>);

impl Credentials {
    pub fn new(current: Current) -> Self {
        Self(Arc::new(watch::Sender::new(current)))
    }

    pub fn current(&self) -> Current {
        self.0.borrow().clone()
    }

    pub fn app(&self) -> Option<Arc<AppCredentials>> {
        self.0.borrow().app.as_ref().map(|app| app.value.clone())
    }

    pub fn webhook_secret(&self) -> Option<Arc<SecretString>> {
        self.0
            .borrow()
            .webhook_secret
            .as_ref()
            .map(|secret| secret.value.clone())
    }

    pub fn oauth(&self) -> Option<Arc<OAuthClient>> {
        self.0
            .borrow()
            .oauth
            .as_ref()
            .map(|client| client.value.clone())
    }

    /// Takes what set-up just stored, except where the environment sets the part.
    pub fn adopt_setup(&self, setup: Current) {
        self.0
            .send_modify(|current| *current = current.with_setup(setup));
    }

    /// Returns once an App is configured, at once if it already is.
    pub async fn app_configured(&self) {
        let mut changes = self.0.subscribe();
        // The sender lives as long as `self`: waiting cannot fail.
        let _ = changes.wait_for(|current| current.app.is_some()).await;
    }
}

impl From<AppCredentials> for Credentials {
    fn from(app: AppCredentials) -> Self {
        Self::new(Current {
            app: Some(Sourced::new(app, Source::Environment)),
            webhook_secret: None,
            oauth: None,
        })
    }
}
