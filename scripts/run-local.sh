#!/usr/bin/env bash
# The whole pipeline on this machine, one command, no Docker:
#
#   receiver (local Lambda :9000) -> SQS ingest (moto) -> [ESM runner] -> consumer (DynamoDB in moto)
#   -> SQS delivery -> [ESM runner] -> dispatcher -> demo destination (127.0.0.1:9103)
#
#   scripts/run-local.sh                  start everything, show the demo destination's output; Ctrl-C stops all
#   scripts/run-local.sh --demo           ... and send one sample Incode webhook once it is up
#   scripts/run-local.sh --background     start everything, write .local/pipeline.env, return when ready
#   scripts/run-local.sh --stop           stop what a --background run started
#   scripts/run-local.sh --restart NAME   (re)start one process of a --background run, dead or alive:
#                                         esm (the SQS trigger runner) or lambda (the Lambda service and
#                                         all function processes); for fault tests, after a SIGKILL
# Options (start): --fail-first N        the demo destination answers 503 to its first N requests (retries)
#                  --no-reload           no rebuild on source edits (steadier for tests while someone
#                                        edits the code)
#                  --failure-visibility S  records the consumer/dispatcher report as failed come back after
#                                          S seconds instead of the queue's visibility timeout (180/720 s),
#                                          so a poison message reaches the DLQ in seconds (see esm_runner.py)
#                  --esm-concurrency N   concurrent batches per queue: min(the template's
#                                        MaximumConcurrency, N); default 5, as Lambda starts
#                  --function-concurrency N  instances per function before invocations are throttled
#                                        (default 10)
#                  --destinations FILE   the destinations document the functions load (default
#                                        config/destinations.local.json; the fault-injection run
#                                        points them at its own test destinations)
#
# Started here (each in its own process group, all stopped together):
#   moto_server        SQS + DynamoDB + S3 with the queues, tables and buckets of template.yaml (scripts/local_aws.py)
#   JWKS server        events/keys/jwks.json on 127.0.0.1:9102 (IDNOW_JWKS_URL of config/local.env)
#   demo destination   scripts/demo_destination.py on 127.0.0.1:9103, verifying the Standard Webhooks
#                      signatures with the TEST secret of config/destinations.local.json
#   Lambda service     scripts/local_lambda.py on 127.0.0.1:9000: builds the workspace (debug), runs each
#                      function as Lambda does (Runtime API, the template's Timeout as a real deadline,
#                      process killed at it, concurrent instances), the template's HTTP API routes, the
#                      Invoke API; env = config/local.env + .local/aws.env +
#                      DESTINATIONS_CONFIG_FILE=config/destinations.local.json (.local/functions.env)
#   ESM runner         scripts/esm_runner.py: ingest -> consumer, delivery -> dispatcher (Lambda's SQS
#                      trigger), several pollers per queue
# Logs: .local/{moto,lambda,functions,build,esm,jwks}.log; the demo destination prints to the terminal
# (to .local/demo-destination.log with --background) and appends every request to
# .local/demo-destination.jsonl. Function processes: .local/lambda-instances.json (pids, states),
# also GET http://127.0.0.1:9000/_local/status. Ports 9000, 9102 and 9103 must be free.
# RUN_LOCAL_BUILD_TIMEOUT (default 1200 s) bounds the wait for the first build (a cold debug build of
# the workspace takes minutes on 2 cores).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

state=$root/.local
pids_file=$state/pipeline.pids
pipeline_env=$state/pipeline.env
lambda_port=9000
jwks_port=9102
demo_port=9103
lambda_url=http://127.0.0.1:$lambda_port
# The template's HTTP API routes are served at the root, as API Gateway serves them.
receiver_url=$lambda_url
demo_log=$state/demo-destination.jsonl
build_timeout=${RUN_LOCAL_BUILD_TIMEOUT:-1200}

mode=foreground
demo=0
fail_first=0
destinations_file=$root/config/destinations.local.json
failure_visibility=
reload=1
esm_concurrency=5
function_concurrency=10
restart_name=
while (($#)); do
  case "$1" in
    --background) mode=background ;;
    --stop) mode=stop ;;
    --restart) mode=restart; restart_name=${2:?--restart needs esm or lambda}; shift ;;
    --demo) demo=1 ;;
    --no-reload) reload=0 ;;
    --fail-first) fail_first=${2:?--fail-first needs a number}; shift ;;
    --destinations) destinations_file=$(cd "$(dirname "${2:?--destinations needs a file}")" && pwd)/$(basename "$2"); shift ;;
    --failure-visibility) failure_visibility=${2:?--failure-visibility needs seconds}; shift ;;
    --esm-concurrency) esm_concurrency=${2:?--esm-concurrency needs a number}; shift ;;
    --function-concurrency) function_concurrency=${2:?--function-concurrency needs a number}; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-local: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf 'run-local: %s\n' "$*"; }
started_at=$SECONDS

# --- stopping ------------------------------------------------------------------------------------

# Expected command line of each process group leader we start (guards against a recycled pid).
marker() {
  case "$1" in
    jwks) echo "http.server" ;;
    demo-destination) echo "demo_destination.py" ;;
    lambda) echo "local_lambda.py" ;;
    esm) echo "esm_runner.py" ;;
    *) echo "$1" ;;
  esac
}

# Whether a process group still has a live (not zombie) member. A stopped process stays a zombie until
# its parent reaps it; after a --background start that parent is init, which may take a while.
group_alive() { # pgid
  ps -eo pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

stop_group() { # name pgid
  local name=$1 pgid=$2 i
  group_alive "$pgid" || return 0
  if [[ -r /proc/$pgid/cmdline ]] && ! tr '\0' ' ' <"/proc/$pgid/cmdline" | grep -q -- "$(marker "$name")"; then
    say "pid $pgid is no longer our $name (pid reused?); not touching it"
    return 0
  fi
  # Remember the descendants in case one left the group (the Lambda service's function processes
  # stay in it and also die with the service: PR_SET_PDEATHSIG).
  local kids
  kids=$(descendants "$pgid")
  kill -TERM -- "-$pgid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do # 10 s: the ESM runner finishes a batch in flight
    group_alive "$pgid" || break
    sleep 0.1
  done
  if group_alive "$pgid"; then
    say "$name (process group $pgid) did not stop on SIGTERM: SIGKILL"
    kill -KILL -- "-$pgid" 2>/dev/null || true
  fi
  local pid
  for pid in $kids; do
    [[ $(ps -o stat= -p "$pid" 2>/dev/null) == [^Z]* ]] || continue
    kill -TERM "$pid" 2>/dev/null || true
    sleep 0.5
    kill -KILL "$pid" 2>/dev/null || true
  done
}

descendants() { # pid -> every descendant pid (any session)
  ps -eo pid=,ppid= | awk -v root="$1" '
    { parent[$1] = $2 }
    END {
      for (p in parent) {
        q = p
        while (q in parent && q != root && q > 1) q = parent[q]
        if (q == root && p != root) print p
      }
    }'
}

stop_all() {
  if [[ -f "$pids_file" ]]; then
    local lines
    mapfile -t lines <"$pids_file"
    for ((i = ${#lines[@]} - 1; i >= 0; i--)); do # reverse start order: pollers before functions
      # shellcheck disable=SC2086
      stop_group ${lines[i]}
    done
    rm -f "$pids_file"
  fi
  if [[ -f "$state/moto.pid" ]]; then
    .venv/bin/python scripts/local_aws.py down --pid-file "$state/moto.pid" >>"$state/moto.log" 2>&1 || true
  fi
  rm -f "$pipeline_env"
}

start() { # name log-file command... : own session/process group, recorded for stop_all
  local name=$1 log=$2
  shift 2
  if [[ $log == - ]]; then
    setsid "$@" </dev/null &
  else
    setsid "$@" </dev/null >>"$log" 2>&1 & # appended: a --restart keeps the earlier lines
  fi
  local pid=$!
  # One line per name: a restart replaces the old one.
  if [[ -f $pids_file ]]; then
    awk -v n="$name" '$1 != n' "$pids_file" >"$pids_file.tmp" && mv "$pids_file.tmp" "$pids_file"
  fi
  echo "$name $pid" >>"$pids_file"
}

alive() { # name -> 0 if its group still runs
  local pid
  pid=$(awk -v n="$1" '$1 == n {print $2}' "$pids_file" 2>/dev/null)
  [[ -n $pid ]] && group_alive "$pid"
}

fail() { # message [log file]
  say "FAILED: $1" >&2
  if [[ -n ${2:-} && -s $2 ]]; then
    echo "---- last lines of ${2#"$root"/} ----" >&2
    tail -n 25 "$2" >&2
    echo "----" >&2
  fi
  exit 1
}

# The Lambda service: builds the workspace, then serves the functions on :9000 (scripts/local_lambda.py).
start_lambda() {
  local args=(--port "$lambda_port" --env-file "$state/functions.env" --concurrency "$function_concurrency"
    --state-file "$state/lambda-instances.json" --state-dir "$state/lambda"
    --function-log "$state/functions.log" --build-log "$state/build.log")
  ((reload)) && args+=(--watch)
  start lambda "$state/lambda.log" .venv/bin/python -u scripts/local_lambda.py "${args[@]}"
}

# Ready when the first build is served and each function answers: the receiver anything at all (401
# here: no credentials), the consumer and dispatcher an empty SQS batch with a batch response. The
# probes also warm one instance of each.
wait_lambda() {
  local deadline=$((SECONDS + build_timeout)) next_note=$((SECONDS + 30)) fn status
  say "waiting for the build and the functions (first build: minutes; logs: .local/build.log, .local/lambda.log) ..."
  until curl -sf -m 5 "$lambda_url/_local/status" 2>/dev/null | grep -q '"ready": true'; do
    alive lambda || fail "the Lambda service exited" "$state/lambda.log"
    ((SECONDS < deadline)) || fail "no build served after ${build_timeout}s (RUN_LOCAL_BUILD_TIMEOUT)" "$state/build.log"
    if ((SECONDS >= next_note)); then
      say "  still building ($((SECONDS - started_at))s): $(grep -a -E 'Compiling|Finished|error' "$state/build.log" | tail -n 1 | sed 's/^ *//' | cut -c1-100)"
      next_note=$((SECONDS + 30))
    fi
    sleep 1
  done
  for fn in receiver consumer dispatcher; do
    if [[ $fn == receiver ]]; then
      status=$(probe "$fn" "$receiver_url/webhooks/incode" '{}')
    else
      status=$(probe "$fn" "$lambda_url/2015-03-31/functions/$fn/invocations" '{"Records":[]}')
    fi
    case "$fn:$status" in
      receiver:401) ;;
      consumer:200 | dispatcher:200) grep -q batchItemFailures "$state/probe-$fn.out" ||
        fail "$fn answered: $(head -c 400 "$state/probe-$fn.out")" "$state/functions.log" ;;
      *) fail "$fn answered $status: $(head -c 400 "$state/probe-$fn.out")" "$state/functions.log" ;;
    esac
    say "  $fn ready ($((SECONDS - started_at))s)"
  done
  rm -f "$state"/probe-*.out
}

probe() { # name url data -> prints the HTTP status
  curl -s -o "$state/probe-$1.out" -w '%{http_code}' -m 20 -X POST "$2" \
    -H 'Content-Type: application/json' --data "$3" 2>/dev/null || true
}

# The SQS trigger runner (scripts/esm_runner.py), several pollers per queue.
start_esm() {
  local args=(--env-file "$state/functions.env" --endpoint "$lambda_url" --max-concurrency "$esm_concurrency"
    --map INGEST_QUEUE_URL=consumer --map DELIVERY_QUEUE_URL=dispatcher --map RETRY_QUEUE_URL=dispatcher)
  [[ -n $failure_visibility ]] && args+=(--failure-visibility "$failure_visibility")
  local before
  before=$(grep -c 'running .* poller' "$state/esm.log" 2>/dev/null || true)
  start esm "$state/esm.log" .venv/bin/python -u scripts/esm_runner.py "${args[@]}"
  for ((i = 0; i < 100; i++)); do # 10 s
    (($(grep -c 'running .* poller' "$state/esm.log" 2>/dev/null || true) > ${before:-0})) && return 0
    alive esm || fail "the ESM runner exited" "$state/esm.log"
    sleep 0.1
  done
  fail "the ESM runner did not start polling within 10 s" "$state/esm.log"
}

if [[ $mode == restart ]]; then
  # A --background pipeline's options are in pipeline.env: restart the process exactly as it was.
  [[ -f $pipeline_env && -f $pids_file ]] || { say "no --background pipeline to restart (.local/pipeline.env)" >&2; exit 1; }
  reload=$(sed -n 's/^PIPELINE_RELOAD=//p' "$pipeline_env")
  esm_concurrency=$(sed -n 's/^PIPELINE_ESM_CONCURRENCY=//p' "$pipeline_env")
  function_concurrency=$(sed -n 's/^PIPELINE_FUNCTION_CONCURRENCY=//p' "$pipeline_env")
  failure_visibility=$(sed -n 's/^PIPELINE_FAILURE_VISIBILITY=//p' "$pipeline_env")
  case "$restart_name" in
    esm | lambda) ;;
    *) say "--restart: esm or lambda, not $restart_name" >&2; exit 2 ;;
  esac
  old=$(awk -v n="$restart_name" '$1 == n {print $2}' "$pids_file")
  [[ -n $old ]] && stop_group "$restart_name" "$old"
  if [[ $restart_name == esm ]]; then
    start_esm
  else
    start_lambda
    wait_lambda
  fi
  say "restarted $restart_name: pid $(awk -v n="$restart_name" '$1 == n {print $2}' "$pids_file") ($((SECONDS - started_at))s)"
  exit 0
fi

if [[ $mode == stop ]]; then
  if [[ ! -f "$pids_file" && ! -f "$state/moto.pid" ]]; then
    say "nothing to stop"
    exit 0
  fi
  stop_all
  say "stopped"
  exit 0
fi

# --- starting ------------------------------------------------------------------------------------

running_group() { # name pgid -> 0 if that group still runs our process
  group_alive "$2" && [[ -r /proc/$2/cmdline ]] && tr '\0' ' ' <"/proc/$2/cmdline" | grep -q -- "$(marker "$1")"
}
if [[ -f "$pids_file" ]]; then
  while read -r name pid; do
    if running_group "$name" "$pid"; then
      say "a pipeline is already running ($name, pid $pid): stop it with scripts/run-local.sh --stop" >&2
      exit 1
    fi
  done <"$pids_file"
  stop_all # stale files of a run that died: clean up what may be left (moto)
fi
if [[ -f "$state/moto.pid" ]] && group_alive "$(cat "$state/moto.pid")"; then
  say "an emulator started with local_aws.py up --detach is running (.local/moto.pid); stop it first:" \
    ".venv/bin/python scripts/local_aws.py down" >&2
  exit 1
fi
for port in $lambda_port $jwks_port $demo_port; do
  if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    say "port $port is in use on 127.0.0.1: something else is listening there (stop it first)" >&2
    exit 1
  fi
done

cleanup_on_exit=1
on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  if ((cleanup_on_exit)); then
    echo
    say "stopping everything ..."
    stop_all
    say "stopped"
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

mkdir -p "$state"
: >"$pids_file"
for log in lambda functions build esm jwks; do : >"$state/$log.log"; done
rm -f "$state/lambda-instances.json"

say "bootstrapping .venv (moto, boto3, standardwebhooks, ...) ..."
scripts/bootstrap.sh dev
command -v cargo >/dev/null || fail "cargo not found: install Rust (rustup)"

say "starting moto (SQS, DynamoDB, S3) with the queues, tables and buckets of template.yaml ..."
.venv/bin/python scripts/local_aws.py up --detach --env-file "$state/aws.env" \
  --pid-file "$state/moto.pid" --log-file "$state/moto.log" >"$state/local_aws.log" 2>&1 ||
  fail "local_aws.py up" "$state/local_aws.log"

# The functions' configuration: config/local.env + the emulator's values + destinations.
{
  echo "# Generated by scripts/run-local.sh: config/local.env + .local/aws.env + destinations. TEST values."
  cat config/local.env
  echo
  sed 's/^export //' "$state/aws.env"
  echo "DESTINATIONS_CONFIG_FILE=$destinations_file"
} >"$state/functions.env"
# shellcheck disable=SC1091
source "$state/aws.env"

# Only the public key set is served (events/keys also holds the TEST private keys).
rm -rf "$state/jwks" && mkdir -p "$state/jwks" && cp events/keys/jwks.json "$state/jwks/jwks.json"
start jwks "$state/jwks.log" .venv/bin/python -m http.server "$jwks_port" --bind 127.0.0.1 --directory "$state/jwks"

demo_secret=$(.venv/bin/python -c '
import json, sys
doc = json.load(open("config/destinations.local.json"))
print(next(d["auth"]["secret"] for d in doc["destinations"] if d["id"] == "demo"))')
: >"$demo_log"
demo_out=-
[[ $mode == background ]] && demo_out=$state/demo-destination.log
start demo-destination "$demo_out" .venv/bin/python -u scripts/demo_destination.py --port "$demo_port" \
  --secret "$demo_secret" --fail-first "$fail_first" --log "$demo_log"

say "starting the Lambda service on $lambda_url (logs: .local/lambda.log, .local/functions.log) ..."
start_lambda
wait_lambda
start_esm

q() { printf '%q' "$1"; }
{
  echo "# Written by scripts/run-local.sh; removed by --stop. Shell-sourceable."
  echo "PIPELINE_ROOT=$(q "$root")"
  echo "LAMBDA_ENDPOINT=$lambda_url"
  echo "RECEIVER_URL=$receiver_url"
  echo "JWKS_URL=http://127.0.0.1:$jwks_port/jwks.json"
  echo "DEMO_DESTINATION_URL=http://127.0.0.1:$demo_port"
  echo "DEMO_LOG=$(q "$demo_log")"
  echo "DEMO_SECRET=$(q "$demo_secret")"
  echo "FUNCTIONS_ENV=$(q "$state/functions.env")"
  echo "AWS_ENV=$(q "$state/aws.env")"
  echo "PIDS_FILE=$(q "$pids_file")"
  echo "MOTO_PID_FILE=$(q "$state/moto.pid")"
  echo "LOG_DIR=$(q "$state")"
  # Fault-test hooks: the pids of every function process (also GET $lambda_url/_local/status), and the
  # options a --restart needs.
  echo "LAMBDA_INSTANCES_FILE=$(q "$state/lambda-instances.json")"
  echo "PIPELINE_RELOAD=$reload"
  echo "PIPELINE_ESM_CONCURRENCY=$esm_concurrency"
  echo "PIPELINE_FUNCTION_CONCURRENCY=$function_concurrency"
  echo "PIPELINE_FAILURE_VISIBILITY=$failure_visibility"
  sed 's/^export //' "$state/aws.env"
} >"$pipeline_env"

say "ready in $((SECONDS - started_at))s."
cat <<EOF

  receiver     $receiver_url/webhooks/incode/<type> | /webhooks/idnow | /oauth/token
  invoke API   $lambda_url/2015-03-31/functions/<receiver|consumer|dispatcher>/invocations
  emulator     $AWS_ENDPOINT_URL   (queues, tables, buckets: .local/aws.env)
  destination  http://127.0.0.1:$demo_port/kyc-events   (requests: .local/demo-destination.jsonl)
  functions    .local/lambda-instances.json, $lambda_url/_local/status (pids, states, deadlines)
  logs         .local/functions.log (function output), .local/lambda.log (Lambda service),
               .local/build.log, .local/esm.log (SQS triggers), .local/moto.log

  Send webhooks from another terminal:
    scripts/curl-webhook.sh            # Incode: OAuth token, then an onboarding-status webhook
    scripts/curl-webhook.sh all        # ... and an IDnow webhook (HS256 JWT body)
    scripts/send-samples.sh            # every sample under events/receiver/: accepted / refused / delivered

EOF

if ((demo)); then
  say "--demo: sending one Incode webhook (scripts/curl-webhook.sh) ..."
  interview="demo-$(date +%s)"
  if INTERVIEW_ID=$interview scripts/curl-webhook.sh "$receiver_url" incode >"$state/demo-webhook.log" 2>&1; then
    say "  accepted (200); waiting for it at the demo destination ..."
    for ((i = 0; i < 300; i++)); do
      grep -q "\"session_id\": \"$interview\"" "$demo_log" 2>/dev/null && break
      sleep 0.1
    done
    grep -q "\"session_id\": \"$interview\"" "$demo_log" 2>/dev/null ||
      say "  not delivered within 30 s: see .local/esm.log and .local/functions.log"
  else
    say "  the webhook was not accepted:"
    cat "$state/demo-webhook.log"
  fi
fi

if [[ $mode == background ]]; then
  cleanup_on_exit=0
  say "running in the background; stop it with: scripts/run-local.sh --stop   (state: .local/pipeline.env)"
  exit 0
fi

say "running; Ctrl-C stops everything."
while :; do
  for name in jwks demo-destination lambda esm; do
    alive "$name" || fail "$name exited unexpectedly" "$state/$name.log"
  done
  sleep 1
done
