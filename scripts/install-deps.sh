#!/usr/bin/env bash
# Installs the system packages the workspace needs to build and test, if missing:
# libibverbs-dev, cmake and libclang-dev build the `verbs` feature (bindgen);
# redis-server is the baseline the transport benchmark and its test run against;
# nats-server (run with -js) hosts the JetStream trigger log its tests run against;
# coinor-libcbc-dev is CBC for resc-ilp's `cbc` feature (good_lp's coin_cbc backend).
set -euo pipefail
packages=(libibverbs-dev cmake libclang-dev redis-server nats-server coinor-libcbc-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
