#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine, then runs it.
# Usage: ./scripts/test.sh   (from anywhere in the repository)
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the workspace's crates need to build and test. Nothing
# beyond the Rust toolchain is needed yet; later transports (RDMA verbs,
# userfaultfd) add their -dev packages here.
packages=()
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

cargo test --workspace --all-features
