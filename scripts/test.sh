#!/usr/bin/env bash
# The one test command: installs what the tests need, then runs every check and test.
# CI (.ci/run) runs exactly this, on a clean checkout.
set -euo pipefail
cd "$(dirname "$0")/.."

# Installs Debian packages (as root, or with sudo); fails with what was needed where there is no
# apt-get.
apt_install() {
  local why="$1"
  shift
  if ! command -v apt-get >/dev/null; then
    echo "scripts/test.sh: $* needed ($why); install it, then run this again" >&2
    exit 1
  fi
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "==> installing $* with apt-get ($why)"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# The interop tests run the public reference library, PyPI aws-kinesis-agg, in a virtualenv.
venv="${KPL_TEST_VENV:-target/interop-venv}"
if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating $venv for the reference aws-kinesis-agg"
  if ! { command -v python3 >/dev/null && python3 -m venv "$venv"; }; then
    # A bare Debian/Ubuntu machine lacks python3 or its venv module: install them with apt.
    rm -rf "$venv"
    apt_install "the interop tests" python3 python3-venv python3-pip
    python3 -m venv "$venv"
  fi
fi
echo "==> installing tests/interop/requirements.txt into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
KPL_TEST_PYTHON="$(cd "$venv/bin" && pwd)/python"
export KPL_TEST_PYTHON
echo "==> installing tests/cloudwatch/requirements.txt (moto's CloudWatch) into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/cloudwatch/requirements.txt
KPL_MOTO_SERVER="$(cd "$venv/bin" && pwd)/moto_server"
export KPL_MOTO_SERVER

# StreamARN addressing and streams' own record size limits are tested against kinesis-local
# (npm, a Scala.js build of kinesis-mock): the tests start and stop it themselves, on free
# ports of 127.0.0.1, from this install.
kinesis_local="${KPL_KINESIS_LOCAL_DIR:-target/kinesis-local}"
if [ ! -f "$kinesis_local/node_modules/kinesis-local/main.js" ]; then
  command -v npm >/dev/null || apt_install "kinesis-local" nodejs npm
  echo "==> installing kinesis-local into $kinesis_local"
  mkdir -p "$kinesis_local"
  npm install --prefix "$kinesis_local" --no-audit --no-fund --silent kinesis-local@0.6.2
fi
KPL_KINESIS_LOCAL="$(cd "$kinesis_local/node_modules/kinesis-local" && pwd)"
export KPL_KINESIS_LOCAL

# tests/network.rs: the proxy is tinyproxy, and openssl makes the test CA and certificates.
missing=""
command -v tinyproxy >/dev/null || [ -x /usr/bin/tinyproxy ] || missing="tinyproxy"
command -v openssl >/dev/null || missing="$missing openssl"
# shellcheck disable=SC2086 # one word per package
[ -z "$missing" ] || apt_install "the proxy and TLS tests" $missing
KPL_TINYPROXY="$(command -v tinyproxy || echo /usr/bin/tinyproxy)"
export KPL_TINYPROXY

# cli/tests/cli_report.rs renders `kpl bench --report` in a real browser: Chromium, headless,
# loading only the file. Debian's package where apt-get can install it; elsewhere the Chromium
# already there (`chromium`, Ubuntu's snap at /snap/bin/chromium, `chromium-browser`), or the one
# KPL_CHROMIUM names. Ubuntu's apt package is only a shim that installs the snap, which fails
# without snapd (in containers), so it is not tried.
find_chromium() {
  for c in "${KPL_CHROMIUM:-}" "$(command -v chromium || true)" /snap/bin/chromium \
    "$(command -v chromium-browser || true)"; do
    if [ -n "$c" ] && [ -x "$c" ] && "$c" --version >/dev/null 2>&1; then
      echo "$c"
      return
    fi
  done
}
KPL_CHROMIUM="$(find_chromium)"
if [ -z "$KPL_CHROMIUM" ]; then
  if grep -qi '^ID=ubuntu' /etc/os-release 2>/dev/null; then
    echo "scripts/test.sh: Chromium is needed (the HTML report test); Ubuntu ships it only as a snap: snap install chromium, or set KPL_CHROMIUM to a Chromium binary" >&2
    exit 1
  fi
  apt_install "the HTML report test" chromium
  KPL_CHROMIUM="$(find_chromium)"
fi
export KPL_CHROMIUM

# A clean checkout gains nothing from incremental caches, and they cost gigabytes of disk.
if [ "${CI:-}" = "true" ]; then
  export CARGO_INCREMENTAL=0
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy (both packages, all targets, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> the library builds with no features, and with its defaults carries only the library"
cargo check -p kinesis-producer --lib --no-default-features
# What `kinesis-producer = "0.1"` compiles: none of the tool's or the tests' crates. `cargo tree`
# failing fails the script (set -e); only grep's "nothing found" is not an error.
tree="$(cargo tree -p kinesis-producer -e normal --prefix none --format '{p}')"
cli_only="$(echo "$tree" | awk '{print $1}' \
  | { grep -xE 'clap|indicatif|resvg|ferrokinesis|axum|serde_json|glob' || true; } | sort -u)"
if [ -n "$cli_only" ]; then
  echo "scripts/test.sh: the library's default features pull in: $cli_only" >&2
  exit 1
fi
echo "==> cargo test (unit, property, golden, interop, CLI; benches run once as tests)"
cargo test --workspace --all-targets
echo "==> the Python package: pip install ./python (maturin builds it, release), pytest, its type stubs"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r python/tests/requirements.txt
started=$SECONDS
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check ./python
echo "    (pip install ./python took $((SECONDS - started)) s)"
# The fixture starts `kpl local` from the binary cargo test just built.
KPL_BIN="$PWD/target/debug/kpl" "$venv/bin/python" -m pytest -q python/tests
# From a directory without the package's sources, so the installed module is what is checked.
(cd target && "$KPL_TEST_PYTHON" -m mypy.stubtest kinesis_producer._native)
"$venv/bin/python" -m mypy --strict python/kinesis_producer
echo "==> doc tests"
cargo test -p kinesis-producer --doc
echo "==> the library's docs build without warnings (default features, as docs.rs and users build them)"
RUSTDOCFLAGS="-D warnings" cargo doc -p kinesis-producer --no-deps --quiet
