#!/usr/bin/env bash
# Benchmarks that need the local AWS emulator (see BENCHMARKS.md). Bootstraps .venv (moto) and
# bench/.venv (aws-lambda-powertools + boto3, for the Python comparison), starts moto on a free port,
# runs the Rust bench against it, then the Powertools consumer on the same records, and stops moto
# whatever happens.
#
# Usage: bench/run.sh [receiver] [consumer] [python] [cpu [ARGS...]]   (default: the first three)
#   receiver  receiver latency vs one raw SendMessage   (cargo bench ... --bench moto -- receiver)
#   consumer  Rust consumer CPU and AWS calls per event (cargo bench ... --bench moto -- consumer)
#   python    the Powertools consumer on the records the Rust consumer bench wrote
#   cpu       CPU and instructions per event through the release binaries (bench/function_cpu.py;
#             the rest of the arguments go to it; needs `cargo build --release --bins && cargo build --release -p empty-handler` first)
# BENCH_N (default 200) and BENCH_BATCH (default 10) size the runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

want=()
cpu_args=()
while [[ $# -gt 0 ]]; do
  if [[ $1 == cpu ]]; then
    want+=(cpu)
    shift
    cpu_args=("$@")
    break
  fi
  want+=("$1")
  shift
done
[[ ${#want[@]} -eq 0 ]] && want=(receiver consumer python)
set -- "${want[@]}" ${cpu_args[@]+"${cpu_args[@]}"}
has() { local w; for w in "${want[@]}"; do [[ $w == "$1" ]] && return 0; done; return 1; }

# Once, around the whole run: the emulator (and the venvs).
if [[ -z "${AWS_ENDPOINT_URL:-}" ]]; then
  has python && scripts/bootstrap.sh bench
  exec scripts/with-local-aws.sh "$0" "$@"
fi
state=$(mktemp -d "${TMPDIR:-/tmp}/kyc-relay-bench.XXXXXX")
trap 'rm -rf "$state"' EXIT

echo "bench: $(date -u +%FT%TZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), moto at $AWS_ENDPOINT_URL"
rust=()
has receiver && rust+=(receiver)
has consumer && rust+=(consumer)
if [[ ${#rust[@]} -gt 0 ]]; then
  cargo bench -p integration-tests --bench moto -- "${rust[@]}"
fi

if has cpu; then
  .venv/bin/python bench/function_cpu.py ${cpu_args[@]+"${cpu_args[@]}"}
fi

if has python; then
  [[ -f target/bench/consumer-records.json ]] || {
    echo "bench: target/bench/consumer-records.json missing: run bench/run.sh consumer first" >&2
    exit 1
  }
  # Its own queues and tables (the sessions table and delivery queue of template.yaml).
  .venv/bin/python scripts/local_aws.py create --endpoint "$AWS_ENDPOINT_URL" --stack-name pybench \
    --env-file "$state/py.env" >/dev/null 2>&1
  (
    # shellcheck disable=SC1091
    source "$state/py.env"
    export SESSIONS_TABLE DELIVERY_QUEUE_URL
    bench/.venv/bin/python bench/powertools_consumer.py
  )
fi
