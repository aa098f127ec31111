#!/usr/bin/env bash
# Runs a command against the local AWS emulator: starts moto (scripts/local_aws.py, with the queues,
# tables and buckets of template.yaml) on a free 127.0.0.1 port, exports AWS_ENDPOINT_URL, the region and
# dummy credentials, runs the command, and stops the emulator whatever happens.
# Usage: scripts/with-local-aws.sh COMMAND [ARG...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scripts/bootstrap.sh dev
state=$(mktemp -d "${TMPDIR:-/tmp}/kyc-relay-aws.XXXXXX")
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
"$@"
