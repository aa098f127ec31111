#!/usr/bin/env bash
# The test suite: bootstraps the project-local venv, starts the local AWS emulator (moto server on a
# free 127.0.0.1 port), runs every Rust test against it, and stops the emulator whatever happens.
# Extra arguments go to `cargo test` (e.g. scripts/test.sh -p integration-tests receiver).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scripts/bootstrap.sh dev
state=$(mktemp -d "${TMPDIR:-/tmp}/kyc-relay-test.XXXXXX")
stop() {
  .venv/bin/python scripts/local_aws.py down --pid-file "$state/moto.pid" >/dev/null 2>&1 || true
  rm -rf "$state"
}
trap stop EXIT INT TERM

.venv/bin/python scripts/local_aws.py up --detach --env-file "$state/aws.env" \
  --pid-file "$state/moto.pid" --log-file "$state/moto.log" >/dev/null
# shellcheck disable=SC1091
source "$state/aws.env"
export AWS_ENDPOINT_URL AWS_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
# Tests provision their own queues and tables (unique names) in this emulator.
cargo test --workspace "$@"
