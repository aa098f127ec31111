#!/usr/bin/env bash
# The test suite: bootstraps the project-local venv, starts the local AWS emulator (moto server on a
# free 127.0.0.1 port), runs every Rust test against it, stops the emulator whatever happens, then
# runs the local pipeline end to end (scripts/pipeline-test.sh: the three functions under
# `cargo lambda watch`, fed by the SQS trigger runner, on ports 9000/9102/9103).
# Extra arguments go to `cargo test` (e.g. scripts/test.sh -p integration-tests receiver) and skip
# the pipeline stage; SKIP_PIPELINE=1 skips it too.
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
stop
trap - EXIT INT TERM

if [[ $# -eq 0 && -z "${SKIP_PIPELINE:-}" ]]; then
  # The pipeline starts an emulator of its own.
  unset AWS_ENDPOINT_URL
  scripts/pipeline-test.sh
fi
