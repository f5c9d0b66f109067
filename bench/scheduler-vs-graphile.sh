#!/usr/bin/env bash
# Scheduler burn-down side by side: Conveyor's scheduler (`conveyor bench scheduler`: TASKS
# no-op tasks over REPOSITORIES repositories at LIMIT running each) against graphile-worker
# 0.17 (TASKS no-op jobs, concurrency 24, no queues), alternately, each on a scratch database
# of its own on the same Postgres server. Both are timed from a full backlog to the last
# completion. Prints every run, each side's median and the ratio of the medians, and
# Conveyor's enqueue-to-start latency at 20 % of its throughput.
#
#   bench/scheduler-vs-graphile.sh       RUNS=5 TASKS=20000 REPOSITORIES=1000 LIMIT=2
#
# Needs cargo, node and npm, and a Postgres server in DATABASE_URL whose user may create
# databases.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

RUNS=${RUNS:-5}
TASKS=${TASKS:-20000}
REPOSITORIES=${REPOSITORIES:-1000}
LIMIT=${LIMIT:-2}
CONCURRENCY=${CONCURRENCY:-24}
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}

scratch=$(mktemp -d)
database="graphile_bench_$$"
cleanup() {
    psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $database" >/dev/null 2>&1 || true
    rm -rf "$scratch"
}
trap cleanup EXIT

cargo build --release --locked --quiet
conveyor=$PWD/target/release/conveyor

echo "installing graphile-worker@0.17 into $scratch/graphile"
mkdir -p "$scratch/graphile"
npm install --prefix "$scratch/graphile" --no-audit --no-fund --loglevel=error graphile-worker@0.17 >/dev/null
echo "graphile-worker $(node -p "require('$scratch/graphile/node_modules/graphile-worker/package.json').version")"
cat >"$scratch/graphile/burn.mjs" <<'JS'
// A backlog of no-op jobs, then one worker pool timed until every job has completed.
import { Logger, makeWorkerUtils, run } from "graphile-worker";

// Quiet, as Conveyor's bench is: no line per job.
const logger = new Logger(() => () => {});

const connectionString = process.env.DATABASE_URL;
const jobs = Number(process.env.TASKS);
const utils = await makeWorkerUtils({ connectionString, logger });
await utils.migrate();
await utils.withPgClient((client) => client.query("DELETE FROM graphile_worker._private_jobs"));
await utils.addJobs(Array.from({ length: jobs }, () => ({ identifier: "noop", payload: {} })));
await utils.release();

let completed = 0;
let finish;
const finished = new Promise((resolve) => (finish = resolve));
const started = performance.now();
const runner = await run({
  connectionString,
  concurrency: Number(process.env.CONCURRENCY),
  noHandleSignals: true,
  logger,
  taskList: { noop: async () => {} },
});
runner.events.on("job:complete", () => {
  if (++completed === jobs) finish();
});
await finished;
const seconds = (performance.now() - started) / 1000;
await runner.stop();
console.log(`graphile-worker: ${jobs} jobs in ${seconds.toFixed(2)}s: ${(jobs / seconds).toFixed(0)} jobs/s`);
JS

psql -q "$DATABASE_URL" -c "CREATE DATABASE $database" >/dev/null
graphile_url="${DATABASE_URL%/*}/$database"

echo "== $TASKS tasks, $RUNS runs each, alternating"
ours=() theirs=() latency=()
for run in $(seq 1 "$RUNS"); do
    echo " run $run"
    report=$("$conveyor" bench scheduler --tasks "$TASKS" --repositories "$REPOSITORIES" --limit "$LIMIT")
    sed 's/^/  /' <<<"$report"
    ours+=("$(sed -nE 's/^scheduler .*: ([0-9]+) tasks\/s$/\1/p' <<<"$report")")
    latency+=("$(sed -nE 's/.* p99 ([0-9.]+) ms;.*/\1/p' <<<"$report")")
    line=$(DATABASE_URL=$graphile_url TASKS=$TASKS CONCURRENCY=$CONCURRENCY \
        node "$scratch/graphile/burn.mjs" 2>"$scratch/graphile.log" | tail -n 1)
    echo "  $line"
    theirs+=("$(sed -E 's/.*: ([0-9]+) jobs\/s$/\1/' <<<"$line")")
done
a=$(median "${ours[@]}") b=$(median "${theirs[@]}")
echo " median: conveyor $a tasks/s (enqueue-to-start p99 $(median "${latency[@]}") ms at 20 % load), graphile-worker $b jobs/s"
echo " ratio: $(ratio "$a" "$b")x"
