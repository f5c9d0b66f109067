//! `conveyor bench sandbox`: what the sandbox adds to every step. A no-op step (`true`) runs
//! through the real step runner unconfined, sandboxed without a network and sandboxed with
//! one (slirp4netns), interleaved, and each variant's wall time per step is compared.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{millis, percentile};
use crate::pipeline::definition::Step;
use crate::pipeline::sandbox::{Sandbox, SandboxMode};
use crate::pipeline::step;
use crate::pipeline::workspace::Workspaces;

#[derive(Debug, clap::Args)]
pub struct SandboxBench {
    /// No-op steps per variant in each run.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// How many times to repeat the measurement (the median over runs is reported last).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

/// How a step is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Unconfined,
    Offline,
    Networked,
}

pub const VARIANTS: [Variant; 3] = [Variant::Unconfined, Variant::Offline, Variant::Networked];

impl Variant {
    pub fn label(self) -> &'static str {
        match self {
            Variant::Unconfined => "unconfined",
            Variant::Offline => "sandbox (no network)",
            Variant::Networked => "sandbox (network)",
        }
    }
}

/// One variant's step times in one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: Duration,
    pub p90: Duration,
}

impl Spread {
    pub fn of(times: &[Duration]) -> Self {
        let mut sorted = times.to_vec();
        sorted.sort();
        Self {
            median: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
        }
    }
}

#[derive(Debug)]
pub struct SandboxReport {
    pub steps: usize,
    /// Per run, each variant's spread, in the order of [`VARIANTS`].
    pub runs: Vec<[Spread; 3]>,
    /// Per variant, the median over runs of the runs' medians.
    pub medians: [Duration; 3],
}

impl SandboxReport {
    /// Milliseconds a step of `variant` takes beyond an unconfined one (negative if less).
    pub fn added_ms(&self, variant: Variant) -> f64 {
        millis(self.medians[index(variant)]) - millis(self.medians[0])
    }
}

fn index(variant: Variant) -> usize {
    VARIANTS
        .iter()
        .position(|v| *v == variant)
        .expect("a variant")
}

/// The report over runs of per-variant step times (each run's in the order of [`VARIANTS`]).
pub fn summarise(steps: usize, runs: &[[Vec<Duration>; 3]]) -> SandboxReport {
    let runs: Vec<[Spread; 3]> = runs
        .iter()
        .map(|times| times.each_ref().map(|t| Spread::of(t)))
        .collect();
    let medians = [0, 1, 2].map(|v| {
        let mut medians: Vec<Duration> = runs.iter().map(|run| run[v].median).collect();
        medians.sort();
        percentile(&medians, 50.0)
    });
    SandboxReport {
        steps,
        runs,
        medians,
    }
}

/// Runs the benchmark in a workspace under `data_dir`; `sandboxed` is the service's sandbox
/// (its hidden files included), whatever `CONVEYOR_SANDBOX` says. Each run's lines are
/// printed as it ends.
pub async fn run(
    bench: &SandboxBench,
    data_dir: &Path,
    sandboxed: Sandbox,
) -> anyhow::Result<SandboxReport> {
    if sandboxed.mode() != SandboxMode::On {
        bail!("the sandbox bench needs a sandbox that is on");
    }
    let workspaces = Workspaces::open(data_dir);
    let workspace = workspaces
        .create()
        .with_context(|| format!("creating a workspace in {}", data_dir.display()))?;
    sandboxed
        .hand_over(&workspace)
        .context("handing the workspace to the sandbox's user")?;
    let unconfined = Sandbox::new(SandboxMode::Off, Vec::new());
    let steps = VARIANTS.map(|variant| Step {
        network: Some(variant == Variant::Networked),
        ..Step::new(variant.label(), "true")
    });
    let sandbox_for = |variant: Variant| match variant {
        Variant::Unconfined => &unconfined,
        _ => &sandboxed,
    };
    let time_step = async |variant: Variant| -> anyhow::Result<Duration> {
        let started = Instant::now();
        let result = step::run(
            0,
            &steps[index(variant)],
            &workspace,
            &[],
            sandbox_for(variant),
            Duration::MAX,
            None,
        )
        .await
        .with_context(|| format!("{}: the step could not run", variant.label()))?;
        let elapsed = started.elapsed();
        if !result.succeeded() {
            let code = result.exit_code.map_or("no exit code".to_owned(), |code| {
                format!("exit code {code}")
            });
            let why = match variant {
                Variant::Unconfined => "the step failed",
                _ => "the sandbox did not start",
            };
            bail!(
                "{}: {why}: `true` ended with {code}: {}",
                variant.label(),
                result.output.trim()
            );
        }
        Ok(elapsed)
    };
    // One untimed step each: it fails the bench early if a sandbox cannot start, and warms
    // the caches.
    for variant in VARIANTS {
        time_step(variant).await?;
    }
    let mut times = Vec::new();
    for run in 0..bench.runs.max(1) {
        let mut run_times: [Vec<Duration>; 3] = Default::default();
        for n in 0..bench.steps.max(1) {
            // Each variant goes first, second and third in turn.
            for k in 0..VARIANTS.len() {
                let variant = VARIANTS[(n + k) % VARIANTS.len()];
                run_times[index(variant)].push(time_step(variant).await?);
            }
        }
        print_run(run + 1, &run_times.each_ref().map(|t| Spread::of(t)));
        times.push(run_times);
    }
    Ok(summarise(bench.steps.max(1), &times))
}

fn print_run(run: usize, spreads: &[Spread; 3]) {
    for (variant, spread) in VARIANTS.iter().zip(spreads) {
        println!(
            "run {run}: {:<20} median {:>6.2} ms, p90 {:>6.2} ms",
            variant.label(),
            millis(spread.median),
            millis(spread.p90),
        );
    }
}

pub fn print(report: &SandboxReport) {
    println!(
        "median of {} runs ({} steps per variant each):",
        report.runs.len(),
        report.steps
    );
    for (variant, median) in VARIANTS.iter().zip(report.medians) {
        println!(
            "  {:<20} {:>6.2} ms per step",
            variant.label(),
            millis(median)
        );
    }
    for variant in [Variant::Offline, Variant::Networked] {
        println!(
            "{}: {:+.1} ms per step",
            variant.label(),
            report.added_ms(variant)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().copied().map(Duration::from_millis).collect()
    }

    #[test]
    fn the_summary_takes_the_median_over_runs_and_subtracts_unconfined() {
        let runs = [
            [ms(&[3, 1, 2]), ms(&[5, 4, 7]), ms(&[15, 10, 20])],
            [ms(&[2, 2, 9]), ms(&[5, 6, 50]), ms(&[12, 11, 13])],
            [ms(&[1, 1, 1]), ms(&[4, 4, 4]), ms(&[14, 14, 14])],
        ];
        let report = summarise(3, &runs);
        assert_eq!(
            report.runs[0][2],
            Spread {
                median: Duration::from_millis(15),
                p90: Duration::from_millis(20),
            }
        );
        assert_eq!(report.runs[1][1].median, Duration::from_millis(6));
        assert_eq!(report.medians, [2, 5, 14].map(Duration::from_millis));
        assert!((report.added_ms(Variant::Offline) - 3.0).abs() < 1e-9);
        assert!((report.added_ms(Variant::Networked) - 12.0).abs() < 1e-9);
        assert_eq!(report.added_ms(Variant::Unconfined), 0.0);
    }
}
