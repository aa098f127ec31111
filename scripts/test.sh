#!/usr/bin/env bash
# The test suite: runs every Rust test against the local AWS emulator (scripts/with-local-aws.sh:
# moto on a free 127.0.0.1 port, stopped afterwards whatever happens), then the local Lambda
# emulation's own tests (scripts/local_lambda_test.py: deadlines, timeouts, concurrency, partial batch
# responses, with fake functions on free ports), then the local pipeline end to end
# (scripts/pipeline-test.sh: the three functions under scripts/local_lambda.py, fed by the SQS trigger
# runner, on ports 9000/9102/9103).
# Extra arguments go to `cargo test` (e.g. scripts/test.sh -p integration-tests receiver) and skip
# the later stages; SKIP_PIPELINE=1 skips them too.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# Tests provision their own queues and tables (unique names) in the emulator.
scripts/with-local-aws.sh cargo test --workspace "$@"

if [[ $# -eq 0 && -z "${SKIP_PIPELINE:-}" ]]; then
  .venv/bin/python scripts/local_lambda_test.py
  # The pipeline starts an emulator of its own.
  scripts/pipeline-test.sh
fi
