#!/usr/bin/env bash
# Webhook intake side by side: Conveyor (`conveyor serve`, every delivery stored before its
# 202) against Probot 14 (signature verified and the event dispatched to a handler that does
# nothing, stored nowhere), alternately on the same payloads with the same load generator
# (`conveyor bench intake`), on two payload sets: GitHub's `issues.labeled` example and the
# whole fixture mix. Prints every run, each side's median and the ratio of the medians.
#
#   bench/intake-vs-probot.sh            RUNS=5 REQUESTS=20000 CONCURRENCY=64 by default
#
# Needs cargo, node and npm, and a Postgres server in DATABASE_URL whose user may create
# databases: Conveyor gets a scratch database, dropped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

RUNS=${RUNS:-5}
REQUESTS=${REQUESTS:-20000}
CONCURRENCY=${CONCURRENCY:-64}
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
FIXTURES=${FIXTURES:-../shared/fixtures/github-webhooks}
CONVEYOR_PORT=${CONVEYOR_PORT:-3917}
PROBOT_PORT=${PROBOT_PORT:-3918}

scratch=$(mktemp -d)
database="conveyor_bench_intake_$$"
server_url="${DATABASE_URL%/*}"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $database" >/dev/null 2>&1 || true
    rm -rf "$scratch"
}
trap cleanup EXIT

cargo build --release --locked --quiet
conveyor=$PWD/target/release/conveyor

echo "installing probot@14 into $scratch/probot"
mkdir -p "$scratch/probot"
npm install --prefix "$scratch/probot" --no-audit --no-fund --loglevel=error probot@14 >/dev/null
echo "probot $(node -p "require('$scratch/probot/node_modules/probot/package.json').version")"
cat >"$scratch/probot/server.mjs" <<'JS'
// Probot as its users deploy it behind their own HTTP server: the Node middleware verifies
// the signature and dispatches every event to the app's handlers.
import { createServer } from "node:http";
import { createNodeMiddleware, createProbot } from "probot";

const probot = createProbot({
  overrides: {
    appId: 1,
    privateKey: process.env.PRIVATE_KEY,
    secret: process.env.WEBHOOK_SECRET,
    logLevel: "warn",
  },
});
const middleware = await createNodeMiddleware(
  (app) => app.onAny(async () => {}),
  { probot, webhooksPath: "/webhooks/github" },
);
createServer((req, res) => middleware(req, res, () => res.writeHead(404).end()))
  .listen(Number(process.env.PORT), "127.0.0.1");
JS

secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
# Probot checks the key's shape at start-up only; it never signs with it here.
openssl genrsa -out "$scratch/key.pem" 2048 2>/dev/null

# The labelled issue as GitHub sends it: compact JSON, about 7 KB.
mkdir -p "$scratch/labeled/issues"
python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1])), separators=(",", ":")))' \
    "$FIXTURES/issues/labeled.payload.json" >"$scratch/labeled/issues/labeled.json"

psql -q "$DATABASE_URL" -c "CREATE DATABASE $database" >/dev/null
export DATABASE_URL="$server_url/$database" GITHUB_WEBHOOK_SECRET="$secret"
"$conveyor" migrate >/dev/null

wait_for() {
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
        sleep 0.1
    done
    echo "nothing answers on port $1" >&2
    exit 1
}

CONVEYOR_LISTEN="127.0.0.1:$CONVEYOR_PORT" CONVEYOR_DATA_DIR="$scratch/data" \
    "$conveyor" serve >"$scratch/conveyor.log" 2>&1 &
pids+=($!)
PORT=$PROBOT_PORT WEBHOOK_SECRET=$secret PRIVATE_KEY=$(cat "$scratch/key.pem") \
    node "$scratch/probot/server.mjs" >"$scratch/probot.log" 2>&1 &
pids+=($!)
wait_for "$CONVEYOR_PORT"
wait_for "$PROBOT_PORT"

# One measured run: prints the bench's line and leaves deliveries/s in $rate.
measure() {
    local server=$1 port=$2 payloads=$3 line
    line=$("$conveyor" bench intake --runs 1 --server "$server" --url "http://127.0.0.1:$port" \
        --concurrency "$CONCURRENCY" --requests "$REQUESTS" --payloads "$payloads" | tail -n 1)
    printf '  %-9s %s\n' "$server" "${line#median of 1: }"
    rate=$(sed -E 's/.*: ([0-9]+) deliveries\/s.*/\1/' <<<"$line")
    p99=$(sed -E 's/.* p99 ([0-9.]+) ms.*/\1/' <<<"$line")
}

for set in labeled mix; do
    payloads=$scratch/labeled
    [ "$set" = mix ] && payloads=$FIXTURES
    echo "== $set ($(find "$payloads" -name '*.json' | wc -l) payloads), $REQUESTS requests, $CONCURRENCY connections, $RUNS runs each, alternating"
    # A warm-up of each, not counted: the first requests pay for JIT and connection set-up.
    REQUESTS=2000 measure conveyor "$CONVEYOR_PORT" "$payloads" >/dev/null
    REQUESTS=2000 measure other "$PROBOT_PORT" "$payloads" >/dev/null
    ours=() theirs=() our_p99=() their_p99=()
    for run in $(seq 1 "$RUNS"); do
        echo " run $run"
        measure conveyor "$CONVEYOR_PORT" "$payloads"
        ours+=("$rate") our_p99+=("$p99")
        measure other "$PROBOT_PORT" "$payloads"
        theirs+=("$rate") their_p99+=("$p99")
    done
    a=$(median "${ours[@]}") b=$(median "${theirs[@]}")
    echo " median: conveyor $a/s (p99 $(median "${our_p99[@]}") ms), probot $b/s (p99 $(median "${their_p99[@]}") ms)"
    echo " ratio ($set): $(ratio "$a" "$b")x"
done
