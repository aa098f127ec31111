#!/usr/bin/env bash
# The fault-injection run (RELIABILITY.md): N webhooks through the local pipeline while the SQS trigger
# runner and the function processes are killed, duplicate storms, a destination that fails 30 % of the
# time and hangs on 1 %; then lost / duplicated / regressed counts, requests per webhook, latency.
#
#   scripts/fault-run.sh                    # the full run: 10 000 events (tens of minutes on 2 cores)
#   scripts/fault-run.sh --short            # the CI variant: 300 events, no runner SIGKILL
#   scripts/fault-run.sh --events 2000 --seed 7 --report .local/fault-2000.json
#
# Uses the fixed ports of scripts/run-local.sh (9000, 9102, 9103) under the same lock as the pipeline
# test, and stops everything it started. Exit status 0 only when nothing was lost, no delivery was
# repeated without a destination timeout or a killed dispatcher to explain it, and every session
# ended at its furthest status. Options: tests/fault/fault_run.py --help.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/bootstrap.sh dev
exec flock /tmp/kyc-relay-pipeline.lock .venv/bin/python -u tests/fault/fault_run.py "$@"
