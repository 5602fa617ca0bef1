#!/usr/bin/env bash
# Install what the tests need, then run every check and test. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# Plugins are compiled to wasm32-wasip2 components. rust-toolchain.toml pins the toolchain and
# lists the target; this installs it when rustup has not yet.
toolchain=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
rustup toolchain install "$toolchain" --profile minimal --component rustfmt,clippy --target wasm32-wasip2 >/dev/null

# Brokers the integration tests talk to.
scripts/services.sh

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# The plugin crates build only for wasm32-wasip2; lint them there.
cargo clippy --workspace --exclude qmedic --exclude qmedic-tests --exclude qmedic-plugin-build \
  --target wasm32-wasip2 --all-targets -- -D warnings
cargo test --no-fail-fast
