#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine, then runs it.
# Usage: ./scripts/test.sh   (from anywhere in the repository)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo test --workspace --all-features
