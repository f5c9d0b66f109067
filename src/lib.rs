//! Conveyor: a self-hosted GitHub App that turns labelled issues into pipeline runs and
//! pull requests.

pub mod authz;
pub mod bench;
pub mod commands;
pub mod config;
pub mod db;
pub mod engine;
pub mod github;
pub mod housekeeping;
pub mod http;
pub mod installations;
pub mod local_run;
pub mod logging;
pub mod metrics;
pub mod outbox;
pub mod pipeline;
pub mod report;
pub mod requests;
pub mod runner;
pub mod scheduler;
pub mod service;
pub mod setup;
pub mod text_bounds;
pub mod waiting_report;
pub mod wakeup;
pub mod webhook;
