#!/usr/bin/env bash
# The Python producers side by side (issue 13): this package (asyncio and threads, per-record
# futures and put_many) against aiokpl and boto3 put_records, with kpl put as the Rust
# reference, on the seed workload into a fresh 4-shard stream of `kpl local` each; at our
# default RateLimit (150) and with the limiter out of the way (1000000). See
# python/bench/bench_python.py for what is measured.
#
# Usage: scripts/bench-python.sh [ARGS...]   (e.g. --repeat 5, --only ours-async-futures,kpl-put)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${KPL_BENCH_VENV:-target/bench-venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    aiokpl==0.2.0 boto3 ./python  # boto3 as aiobotocore (aiokpl's) allows
cargo build --release -q -p kinesis-producer-cli
exec "$venv/bin/python" python/bench/bench_python.py --kpl "$PWD/target/release/kpl" "$@"
