//! `conveyor bench intake`: signed real payloads posted to a running `serve`, measuring
//! stored deliveries per second and latency.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::PgPool;

use super::{millis, percentile};

pub struct IntakeBench {
    /// Base URL of the running service.
    pub url: String,
    pub secret: String,
    pub concurrency: usize,
    pub requests: usize,
    /// Directory of GitHub payloads: `<event>/<name>.json`.
    pub payloads: PathBuf,
    /// The path webhooks are posted to.
    pub path: String,
    /// Which answers count as acknowledged.
    pub server: Server,
}

/// What is being measured: Conveyor, which answers 202 once a delivery is stored, or
/// another tool for comparison (Probot answers 200 and stores nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Server {
    Conveyor,
    Other,
}

impl Server {
    fn acknowledged(self, status: reqwest::StatusCode) -> bool {
        match self {
            Self::Conveyor => status == reqwest::StatusCode::ACCEPTED,
            Self::Other => status.is_success(),
        }
    }
}

#[derive(Debug)]
pub struct IntakeReport {
    pub stored: usize,
    pub failed: usize,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl IntakeReport {
    pub fn per_second(&self) -> f64 {
        self.stored as f64 / self.elapsed.as_secs_f64()
    }
}

/// Every `*.json` under `dir`, with its event name (the folder it is in).
fn load_payloads(dir: &Path) -> anyhow::Result<Vec<(String, Bytes)>> {
    let mut payloads = Vec::new();
    for event in std::fs::read_dir(dir).with_context(|| format!("--payloads {}", dir.display()))? {
        let event = event?.path();
        if !event.is_dir() {
            continue;
        }
        let name = event
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for file in std::fs::read_dir(&event)? {
            let file = file?.path();
            if file.extension().is_some_and(|e| e == "json") {
                payloads.push((name.clone(), Bytes::from(std::fs::read(&file)?)));
            }
        }
    }
    if payloads.is_empty() {
        bail!("--payloads {}: no <event>/*.json files", dir.display());
    }
    Ok(payloads)
}

/// A payload to post, with the HMAC state after its bytes.
struct Payload {
    event: String,
    body: Bytes,
    mac: Hmac<Sha256>,
}

impl Payload {
    /// The payload made unique by `salt`, and its signature. The same bytes under another
    /// delivery id are a duplicate, so each request appends trailing whitespace (which JSON
    /// ignores) spelling `salt`; signing it then hashes only that suffix, since the generator
    /// shares the machine and should spend its CPU on sending.
    fn unique(&self, salt: u64) -> (Bytes, String) {
        let suffix: Vec<u8> = (0..32)
            .map(|digit| b" \t\r\n"[(salt >> (2 * digit)) as usize & 3])
            .collect();
        let mut body = BytesMut::with_capacity(self.body.len() + suffix.len());
        body.extend_from_slice(&self.body);
        body.extend_from_slice(&suffix);
        let mut mac = self.mac.clone();
        mac.update(&suffix);
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        (body.freeze(), signature)
    }
}

pub async fn run(bench: IntakeBench, pool: Option<PgPool>) -> anyhow::Result<IntakeReport> {
    let payloads: Vec<Payload> = load_payloads(&bench.payloads)?
        .into_iter()
        .map(|(event, body)| {
            let mut mac = Hmac::<Sha256>::new_from_slice(bench.secret.as_bytes())
                .expect("HMAC accepts keys of any length");
            mac.update(&body);
            Payload { event, body, mac }
        })
        .collect();
    let payloads = Arc::new(payloads);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(bench.concurrency)
        .build()?;
    let endpoint = format!("{}{}", bench.url.trim_end_matches('/'), bench.path);
    let server = bench.server;
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let run_salt = u64::from(fastrand::u32(..)) << 32;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..bench.concurrency {
        let (client, endpoint, payloads, next, run_id) = (
            client.clone(),
            endpoint.clone(),
            payloads.clone(),
            next.clone(),
            run_id.clone(),
        );
        let total = bench.requests;
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return (latencies, failed);
                }
                let payload = &payloads[n % payloads.len()];
                let (body, signature) = payload.unique(run_salt | n as u64);
                let sent = Instant::now();
                let response = client
                    .post(&endpoint)
                    .header("content-type", "application/json")
                    .header("x-github-event", &payload.event)
                    .header("x-github-delivery", format!("bench-{run_id}-{n}"))
                    .header("x-hub-signature-256", signature)
                    .body(body)
                    .send()
                    .await;
                match response {
                    Ok(r) if server.acknowledged(r.status()) => latencies.push(sent.elapsed()),
                    _ => failed += 1,
                }
            }
        });
    }
    let mut latencies = Vec::with_capacity(bench.requests);
    let mut failed = 0;
    while let Some(done) = workers.join_next().await {
        let (mut l, f) = done?;
        latencies.append(&mut l);
        failed += f;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    if let Some(pool) = pool {
        let rows: i64 =
            sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE delivery_id LIKE $1")
                .bind(format!("bench-{run_id}-%"))
                .fetch_one(&pool)
                .await?;
        if rows as usize != latencies.len() {
            bail!(
                "{} deliveries were acknowledged but {rows} are stored",
                latencies.len()
            );
        }
    }
    Ok(IntakeReport {
        stored: latencies.len(),
        failed,
        elapsed,
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
        max: latencies.last().copied().unwrap_or_default(),
    })
}

pub fn print(report: &IntakeReport, concurrency: usize) {
    println!(
        "intake: {} stored, {} failed, concurrency {concurrency}, {:.2}s: {:.0} deliveries/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        report.stored,
        report.failed,
        report.elapsed.as_secs_f64(),
        report.per_second(),
        millis(report.p50),
        millis(report.p99),
        millis(report.max),
    );
}
