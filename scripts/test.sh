#!/usr/bin/env bash
# Sets up what the tests need (ONNX Runtime), then runs every test of the workspace.
# Extra arguments go to `cargo test` (e.g. scripts/test.sh --test s3).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --locked "$@"
