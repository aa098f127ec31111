#!/usr/bin/env bash
# The whole pipeline on this machine, one command, no Docker:
#
#   receiver (cargo lambda watch :9000) -> SQS ingest (moto) -> [ESM runner] -> consumer (DynamoDB in moto)
#   -> SQS delivery -> [ESM runner] -> dispatcher -> demo destination (127.0.0.1:9103)
#
#   scripts/run-local.sh                  start everything, show the demo destination's output; Ctrl-C stops all
#   scripts/run-local.sh --demo           ... and send one sample Incode webhook once it is up
#   scripts/run-local.sh --background     start everything, write .local/pipeline.env, return when ready
#   scripts/run-local.sh --stop           stop what a --background run started
# Options (start): --fail-first N        the demo destination answers 503 to its first N requests (retries)
#                  --no-reload           `cargo lambda watch --ignore-changes`: no rebuild on source edits
#                                        (steadier for tests while someone edits the code)
#                  --failure-visibility S  records the consumer/dispatcher report as failed come back after
#                                          S seconds instead of the queue's visibility timeout (180/720 s),
#                                          so a poison message reaches the DLQ in seconds (see esm_runner.py)
#
# Started here (each in its own process group, all stopped together):
#   moto_server        SQS + DynamoDB with the queues and tables of template.yaml (scripts/local_aws.py)
#   JWKS server        events/keys/jwks.json on 127.0.0.1:9102 (IDNOW_JWKS_URL of config/local.env)
#   demo destination   scripts/demo_destination.py on 127.0.0.1:9103, verifying the Standard Webhooks
#                      signatures with the TEST secret of config/destinations.local.json
#   cargo lambda watch all three functions on 127.0.0.1:9000, env = config/local.env + .local/aws.env
#                      + DESTINATIONS_CONFIG_FILE=config/destinations.local.json (.local/functions.env)
#   ESM runner         scripts/esm_runner.py: ingest -> consumer, delivery -> dispatcher (Lambda's SQS trigger)
# Logs: .local/{moto,watch,esm,jwks}.log; the demo destination prints to the terminal (to
# .local/demo-destination.log with --background) and appends every request to .local/demo-destination.jsonl.
# Ports 9000, 9102 and 9103 must be free. RUN_LOCAL_BUILD_TIMEOUT (default 1200 s) bounds the wait for
# the first build (a cold debug build of the workspace takes minutes on 2 cores).
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
receiver_url=$lambda_url/lambda-url/receiver
demo_log=$state/demo-destination.jsonl
build_timeout=${RUN_LOCAL_BUILD_TIMEOUT:-1200}

mode=foreground
demo=0
fail_first=0
failure_visibility=
watch_args=()
while (($#)); do
  case "$1" in
    --background) mode=background ;;
    --stop) mode=stop ;;
    --demo) demo=1 ;;
    --no-reload) watch_args+=(--ignore-changes) ;;
    --fail-first) fail_first=${2:?--fail-first needs a number}; shift ;;
    --failure-visibility) failure_visibility=${2:?--failure-visibility needs seconds}; shift ;;
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
    watch) echo "lambda watch" ;;
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
  # cargo lambda watch starts each function in a session of its own: remember the descendants, in
  # case they outlive the group (cargo-lambda stops them itself on SIGTERM).
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

start() { # name log-file command... : own session/process group, recorded for stop_all
  local name=$1 log=$2
  shift 2
  if [[ $log == - ]]; then
    setsid "$@" </dev/null &
  else
    setsid "$@" </dev/null >"$log" 2>&1 &
  fi
  echo "$name $!" >>"$pids_file"
}

alive() { # name -> 0 if its group still runs
  local pid
  pid=$(awk -v n="$1" '$1 == n {print $2}' "$pids_file")
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

say "bootstrapping .venv (moto, boto3, cargo-lambda, zig, standardwebhooks) ..."
scripts/bootstrap.sh dev
export PATH="$root/.venv/bin:$PATH" # cargo-lambda and zig
command -v cargo >/dev/null || fail "cargo not found: install Rust (rustup)"

say "starting moto (SQS + DynamoDB) with the queues and tables of template.yaml ..."
.venv/bin/python scripts/local_aws.py up --detach --env-file "$state/aws.env" \
  --pid-file "$state/moto.pid" --log-file "$state/moto.log" >"$state/local_aws.log" 2>&1 ||
  fail "local_aws.py up" "$state/local_aws.log"

# cargo lambda watch takes one --env-file: config/local.env + the emulator's values + destinations.
{
  echo "# Generated by scripts/run-local.sh: config/local.env + .local/aws.env + destinations. TEST values."
  cat config/local.env
  echo
  sed 's/^export //' "$state/aws.env"
  echo "DESTINATIONS_CONFIG_FILE=$root/config/destinations.local.json"
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

say "starting cargo lambda watch on $lambda_url (log: .local/watch.log) ..."
start watch "$state/watch.log" cargo lambda watch -A 127.0.0.1 -P "$lambda_port" --env-file "$state/functions.env" \
  ${watch_args[@]+"${watch_args[@]}"}

# The functions are compiled on their first invocation. The receiver is ready when it answers
# anything at all (401 here: no credentials); the consumer and dispatcher when an empty SQS batch
# comes back as a batch response.
say "waiting for the functions to build and start (first build: minutes; log: .local/watch.log) ..."
deadline=$((SECONDS + build_timeout))
next_note=$((SECONDS + 30))
probe() { # name url data -> prints the HTTP status
  curl -s -o "$state/probe-$1.out" -w '%{http_code}' -m 20 -X POST "$2" \
    -H 'Content-Type: application/json' --data "$3" 2>/dev/null || true
}
for fn in receiver consumer dispatcher; do
  while :; do
    if [[ $fn == receiver ]]; then
      status=$(probe "$fn" "$receiver_url/webhooks/incode" '{}')
    else
      status=$(probe "$fn" "$lambda_url/2015-03-31/functions/$fn/invocations" '{"Records":[]}')
    fi
    [[ $status =~ ^[1-5][0-9][0-9]$ ]] && break
    alive watch || fail "cargo lambda watch exited" "$state/watch.log"
    ((SECONDS < deadline)) || fail "$fn not answering after ${build_timeout}s (RUN_LOCAL_BUILD_TIMEOUT)" "$state/watch.log"
    if ((SECONDS >= next_note)); then
      say "  still building ($((SECONDS - started_at))s): $(grep -a -E 'Compiling|Finished|error' "$state/watch.log" | tail -n 1 | sed 's/^ *//' | cut -c1-100)"
      next_note=$((SECONDS + 30))
    fi
    sleep 1
  done
  case "$fn:$status" in
    receiver:401) ;;
    consumer:200 | dispatcher:200) ;;
    *) fail "$fn answered $status: $(head -c 400 "$state/probe-$fn.out")" "$state/watch.log" ;;
  esac
  say "  $fn ready ($((SECONDS - started_at))s)"
done
rm -f "$state"/probe-*.out

esm_args=(--env-file "$state/functions.env" --endpoint "$lambda_url"
  --map INGEST_QUEUE_URL=consumer --map DELIVERY_QUEUE_URL=dispatcher)
[[ -n $failure_visibility ]] && esm_args+=(--failure-visibility "$failure_visibility")
start esm "$state/esm.log" .venv/bin/python -u scripts/esm_runner.py "${esm_args[@]}"
for ((i = 0; i < 100; i++)); do
  grep -q 'running .* poller' "$state/esm.log" 2>/dev/null && break
  alive esm || fail "the ESM runner exited" "$state/esm.log"
  sleep 0.1
done

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
  sed 's/^export //' "$state/aws.env"
} >"$pipeline_env"

say "ready in $((SECONDS - started_at))s."
cat <<EOF

  receiver     $receiver_url/webhooks/incode/<type> | /webhooks/idnow | /oauth/token
  invoke API   $lambda_url/2015-03-31/functions/<receiver|consumer|dispatcher>/invocations
  emulator     $AWS_ENDPOINT_URL   (queues and tables: .local/aws.env)
  destination  http://127.0.0.1:$demo_port/kyc-events   (requests: .local/demo-destination.jsonl)
  logs         .local/watch.log (functions), .local/esm.log (SQS triggers), .local/moto.log

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
      say "  not delivered within 30 s: see .local/esm.log and .local/watch.log"
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
  for name in jwks demo-destination watch esm; do
    alive "$name" || fail "$name exited unexpectedly" "$state/$name.log"
  done
  sleep 1
done
