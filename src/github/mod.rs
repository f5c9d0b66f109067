//! Everything that talks to GitHub's REST API: App authentication, installation tokens and
//! one client wrapper that every call goes through.

pub mod app;
pub mod client;
pub mod credentials;
pub mod error;
pub mod manifest;
pub mod oauth;
pub mod transport;

pub use app::{AppCredentials, GitHubApp};
pub use client::InstallationClient;
pub use credentials::Credentials;
pub use error::GitHubError;
