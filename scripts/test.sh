#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine, then runs it.
# Usage: ./scripts/test.sh   (from anywhere in the repository)
#
# The JetStream trigger log tests run against a real NATS server: given
# RESC_NATS_URL, they use it; otherwise this script starts `nats-server -js`
# on a free loopback port with a temporary store, exports its URL as
# RESC_NATS_URL, and stops it (and removes the store) when the tests end.
# RESC_SKIP_NATS=1 skips those tests instead.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh

if [ -z "${RESC_NATS_URL:-}" ] && [ "${RESC_SKIP_NATS:-}" != 1 ] && command -v nats-server >/dev/null; then
  nats_dir="$(mktemp -d -t resc-nats.XXXXXX)"
  # Port -1: the server picks a free one and logs it.
  nats-server -js -a 127.0.0.1 -p -1 -sd "$nats_dir/store" >"$nats_dir/log" 2>&1 &
  nats_pid=$!
  trap 'kill "$nats_pid" 2>/dev/null || true; wait "$nats_pid" 2>/dev/null || true; rm -rf "$nats_dir"' EXIT
  for _ in $(seq 100); do
    grep -q "Server is ready" "$nats_dir/log" && break
    kill -0 "$nats_pid" 2>/dev/null || break
    sleep 0.1
  done
  port="$(sed -n 's/.*Listening for client connections on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$nats_dir/log" | head -n1)"
  if [ -z "$port" ] || ! grep -q "Server is ready" "$nats_dir/log"; then
    echo "nats-server did not start:" >&2
    cat "$nats_dir/log" >&2
    exit 1
  fi
  export RESC_NATS_URL="nats://127.0.0.1:$port"
  echo "nats-server (JetStream) for the tests at $RESC_NATS_URL"
fi

cargo test --workspace --all-features
