#!/usr/bin/env bash
# Builds the example hooks in hooks/examples/ for wasm32-wasip2 and copies each
# component next to its crate as <crate>.wasm (the files config.example.toml and the
# tests use).
#
#   bash scripts/build-hook-examples.sh           # build and update the committed .wasm
#   bash scripts/build-hook-examples.sh --check   # build, and fail if a committed .wasm
#                                                 # differs from what its source builds
#
# Needs `rustup target add wasm32-wasip2`. Paths are remapped so that the output does
# not depend on where the repository or CARGO_HOME live; the same toolchain (Rust 1.95,
# rust-toolchain of the repository) gives the same bytes.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$PWD"
EXAMPLES="$ROOT/hooks/examples"
CHECK=0
[[ "${1:-}" == "--check" ]] && CHECK=1

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "!! wasm32-wasip2 is not installed (rustup target add wasm32-wasip2): cannot build the example hooks" >&2
  exit 2
fi

CARGO_HOME_DIR="${CARGO_HOME:-$HOME/.cargo}"
export CARGO_TARGET_DIR="${HOOK_EXAMPLES_TARGET_DIR:-$EXAMPLES/target}"
export RUSTFLAGS="--remap-path-prefix=$EXAMPLES=/examples --remap-path-prefix=$CARGO_HOME_DIR=/cargo"
# Keep the host's CARGO_BUILD_* / RUSTC_WRAPPER settings from changing the output.
unset RUSTC_WRAPPER CARGO_BUILD_RUSTFLAGS || true

(cd "$EXAMPLES" && cargo build --locked --release --target wasm32-wasip2 --quiet)

status=0
for crate in shard-prefix notify sandbox-probe; do
  built="$CARGO_TARGET_DIR/wasm32-wasip2/release/${crate//-/_}.wasm"
  committed="$EXAMPLES/$crate/$crate.wasm"
  if (( CHECK )); then
    if cmp -s "$built" "$committed"; then
      echo "    $crate.wasm matches its source ($(stat -c %s "$committed") bytes)"
    else
      echo "!! hooks/examples/$crate/$crate.wasm differs from what its source builds; run bash scripts/build-hook-examples.sh and commit" >&2
      status=1
    fi
  else
    cp "$built" "$committed"
    echo "    hooks/examples/$crate/$crate.wasm ($(stat -c %s "$committed") bytes)"
  fi
done
exit "$status"
