#!/usr/bin/env bash
# The CLI's own path against the engine, in one run (issue 12, item 4): the CPU seconds that
# `kpl put --json --partition-key-field user` spends on the seed workload (100,000 JSON events
# of ~60 bytes over 1,000 user keys, made here with a fixed seed; ten times over, 1,000,000
# lines, as a run of 100,000 is too short for CPU times counted in 10 ms ticks), and the
# producer's CPU seconds that `kpl bench --aggregation on` reports for the same number of
# records of the same size and key count
# (records made in memory, no reading or parsing), each into a fresh `kpl local` on 127.0.0.1
# with 4 shards, the client-side limiter out of the way (RateLimit 1000000), alternately, RUNS
# times each. Prints each run and the medians.
#
# Item 7's end-to-end figure comes from the same runs: `kpl put`'s user records per second
# (1,000,000 lines over its wall time), against the endpoint's own ceiling measured after it on a
# fresh `kpl local`: examples/endpoint_ceiling.rs putting the same workload as aggregates built
# before its clock starts, so that nothing but the calls and the endpoint is measured.
#
# Usage: scripts/bench-cli.sh [RUNS]   (builds target/release/kpl first; KPL=path/to/kpl measures
# that binary instead, e.g. one built from an earlier commit)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
PORT=${KPL_BENCH_PORT:-4599}
if [ -z "${KPL:-}" ]; then
    cargo build --release -q -p kinesis-producer-cli
    KPL=$PWD/target/release/kpl
fi
cargo build --release -q --example endpoint_ceiling
CEILING=$PWD/target/release/examples/endpoint_ceiling
WORK=$(mktemp -d)
LOCAL=
cleanup() {
    if [ -n "$LOCAL" ]; then kill "$LOCAL" 2>/dev/null || true; wait "$LOCAL" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1

# The seed workload: {"user":"user-0331","event":"view","seq":0,"v":0.395}, ~60 bytes a line.
awk 'BEGIN { srand(7); split("click view purchase scroll login", ev, " ");
    for (i = 0; i < 1000000; i++)
        printf "{\"user\":\"user-%04d\",\"event\":\"%s\",\"seq\":%d,\"v\":%.3f}\n",
            int(rand() * 1000), ev[1 + int(rand() * 5)], i % 100000, rand() }' > "$WORK/events.jsonl"
echo "RateLimit = 1000000" > "$WORK/fast.properties"

start_local() {
    "$KPL" local --port "$PORT" --create-stream seed:4 --log-level error >/dev/null 2>&1 &
    LOCAL=$!
    for _ in $(seq 100); do
        if (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return; fi
        sleep 0.05
    done
    echo "kpl local did not start on 127.0.0.1:$PORT" >&2
    exit 1
}
stop_local() { kill "$LOCAL"; wait "$LOCAL" 2>/dev/null || true; LOCAL=; }

# CPU seconds (user + system, from getrusage through bash's `time`) and wall seconds of one
# process: "CPU WALL".
cpu_of() {
    local out
    out=$( { TIMEFORMAT='%U %S %R'; time "$@" >/dev/null 2>"$WORK/err"; } 2>&1 )
    awk '{ printf "%.3f %.3f\n", $1 + $2, $3 }' <<<"$out"
}

put=() bench=() rate=() ceiling=()
for run in $(seq "$RUNS"); do
    start_local
    read -r p pw < <(cpu_of "$KPL" put --stream seed --endpoint-url "http://127.0.0.1:$PORT" \
        --config "$WORK/fast.properties" --json --partition-key-field user \
        --dead-letter "$WORK/dead.jsonl" "$WORK/events.jsonl")
    grep -q "1000000 put, 0 failed" "$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
    stop_local
    start_local
    c=$("$CEILING" "http://127.0.0.1:$PORT" seed 1000000 | grep -o '"user_records_per_s": *[0-9]*' | cut -d: -f2 | tr -d ' ')
    stop_local
    start_local
    b=$("$KPL" bench --sink kinesis --stream seed --endpoint-url "http://127.0.0.1:$PORT" \
        --config "$WORK/fast.properties" --records 1000000 --size fixed:60 --keys 1000 --aggregation on --json \
        2>/dev/null | grep -o '"cpu_seconds_producer": *[0-9.]*' | head -1 | cut -d: -f2 | tr -d ' ')
    stop_local
    pr=$(awk -v w="$pw" 'BEGIN { printf "%.0f", 1000000 / w }')
    echo "run $run: kpl put ${p} CPU s, engine (kpl bench, aggregated) ${b} CPU s per 1,000,000 records;" \
        "kpl put ${pr} user records/s, the endpoint's ceiling ${c}"
    put+=("$p") bench+=("$b") rate+=("$pr") ceiling+=("$c")
done
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
mp=$(median "${put[@]}") mb=$(median "${bench[@]}") mr=$(median "${rate[@]}") mc=$(median "${ceiling[@]}")
awk -v p="$mp" -v b="$mb" -v n="$RUNS" 'BEGIN {
    printf "medians of %d: kpl put %.3f CPU s, engine %.3f CPU s per 100,000 records: %.2fx\n", n, p / 10, b / 10, p / b }'
awk -v r="$mr" -v c="$mc" -v lo="$(printf '%s\n' "${rate[@]}" | sort -n | head -1)" \
    -v hi="$(printf '%s\n' "${rate[@]}" | sort -n | tail -1)" \
    -v clo="$(printf '%s\n' "${ceiling[@]}" | sort -n | head -1)" \
    -v chi="$(printf '%s\n' "${ceiling[@]}" | sort -n | tail -1)" 'BEGIN {
    printf "kpl put into kpl local: %d user records/s (%d-%d); the endpoint alone, pre-built aggregates: %d (%d-%d); kpl put at %.2f of it\n",
        r, lo, hi, c, clo, chi, r / c }'
