#!/usr/bin/env bash
# The one test command: installs what the tests need, then runs every check and test.
# CI (.ci/run) runs exactly this, on a clean checkout.
set -euo pipefail
cd "$(dirname "$0")/.."

# The interop tests run the public reference library, PyPI aws-kinesis-agg, in a virtualenv.
venv="${KPL_TEST_VENV:-target/interop-venv}"
if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating $venv for the reference aws-kinesis-agg"
  python3 -m venv "$venv"
fi
echo "==> installing tests/interop/requirements.txt into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
KPL_TEST_PYTHON="$(cd "$venv/bin" && pwd)/python"
export KPL_TEST_PYTHON

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy (all targets, warnings are errors)"
cargo clippy --all-targets -- -D warnings
echo "==> the library builds without the CLI feature"
cargo check --lib --no-default-features
echo "==> cargo test (unit, property, golden, interop, CLI; benches run once as tests)"
cargo test --all-targets
echo "==> doc tests"
cargo test --doc
