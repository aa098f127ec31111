#!/usr/bin/env bash
# End-to-end test of the local pipeline, through the local Lambda service (scripts/local_lambda.py) and
# the SQS triggers of scripts/esm_runner.py:
#   curl -> HTTP API route -> receiver -> SQS ingest -> consumer -> DynamoDB + SQS delivery -> dispatcher
#   -> demo destination
#
#   scripts/pipeline-test.sh
#
# Starts its own pipeline (scripts/run-local.sh --background --no-reload --fail-first 1 --failure-visibility 1) and
# stops it at the end, whatever happens. Checks:
#   1. an Incode onboarding webhook (scripts/curl-webhook.sh) is accepted;
#   2. it reaches the demo destination with a valid Standard Webhooks signature (checked there with
#      the reference `standardwebhooks` package), after one 503 answer and one retry, under the event
#      id docs/configuration.md defines (recomputed here);
#   3. DynamoDB: the delivery item is DELIVERED after 2 attempts with their history; the event item has
#      the webhook's session status; the claim's lease ends at a real invocation deadline (the
#      consumer's Timeout after the claim, not cargo lambda watch's fixed deadline in 1970); the
#      archive object in S3 holds the envelope with the raw body byte for byte;
#   4. an IDnow webhook reaches both destinations: the envelope at /kyc-events and, byte for byte, the
#      provider's JWT body at /idnow-raw (raw-idnow destination);
#   5. a poison message (body "not json") put straight on the ingest queue ends in the ingest DLQ
#      after maxReceiveCount receives (redrive by SQS, as in AWS; --failure-visibility 1 makes each
#      retry come after 1 s instead of the queue's 180 s);
#   6. the fault-test hooks: after a SIGKILL of the SQS trigger runner and `run-local.sh --restart esm`,
#      after POST /_local/functions/consumer/kill, and after a SIGKILL of the whole Lambda service and
#      `run-local.sh --restart lambda`, a new webhook is still delivered;
#   7. the Lambda service runs each function with the template's Timeout and reports its instances;
#   8. after the stop, none of the processes the run started is left.
# The last line is "N passed, M failed"; the exit status is 0 only when nothing failed.
# Needs: cargo (the first build of the functions takes minutes), curl, python3.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1

passed=0
failed=0
ok() { passed=$((passed + 1)); printf 'PASS  %s\n' "$1"; }
ko() { failed=$((failed + 1)); printf 'FAIL  %s\n' "$1"; [[ -n ${2:-} ]] && printf '      %s\n' "$2"; }
finish() {
  printf '%s passed, %s failed\n' "$passed" "$failed"
  ((failed == 0))
  exit
}
t0=$SECONDS

we_started=0
stop_pipeline() {
  ((we_started)) || return 0
  we_started=0
  scripts/run-local.sh --stop >/dev/null 2>&1 || true
}
trap 'stop_pipeline' EXIT
trap 'echo "interrupted"; exit 130' INT TERM

echo "pipeline-test: starting the pipeline (scripts/run-local.sh --background; log: .local/pipeline-test-start.log) ..."
mkdir -p .local
# run-local.sh refuses to start beside a running pipeline (and cleans up after itself on failure).
if ! scripts/run-local.sh --background --no-reload --fail-first 1 --failure-visibility 1 >.local/pipeline-test-start.log 2>&1; then
  tail -n 30 .local/pipeline-test-start.log
  ko "pipeline starts (run-local.sh --background)"
  finish
fi
we_started=1
ok "pipeline starts (run-local.sh --background) in $((SECONDS - t0))s"
# shellcheck disable=SC1091
source .local/pipeline.env
started_pids=$(awk '{print $2}' "$PIDS_FILE")
started_pids+=" $(cat "$MOTO_PID_FILE" 2>/dev/null)"

# The checks in Python (boto3 from .venv against the emulator); each prints PASS/FAIL lines.
checks() { # phase
  .venv/bin/python - "$1" <<'PY'
import hashlib
import json
import os
import sys
import time

import boto3

phase = sys.argv[1]
env = os.environ
demo_log = env["DEMO_LOG"]
session = boto3.session.Session(region_name=env["AWS_REGION"], aws_access_key_id="test", aws_secret_access_key="test")
ddb = session.client("dynamodb", endpoint_url=env["AWS_ENDPOINT_URL"])
sqs = session.client("sqs", endpoint_url=env["AWS_ENDPOINT_URL"])


def result(ok, name, detail=""):
    print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"\n      {detail}" if detail and not ok else ""), flush=True)


def poll(fn, timeout, step=0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def requests():
    try:
        lines = open(demo_log).read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def envelope(rec):
    try:
        return json.loads(rec.get("body") or "")
    except ValueError:
        return None


if phase == "incode":
    interview = env["INTERVIEW"]
    body = {"interviewId": interview, "externalId": "customer-42", "onboardingStatus": "ONBOARDING_FINISHED"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected_id = "inc_" + hashlib.sha256(b"incode\0onboarding_status\0" + canonical.encode() + b"\0").hexdigest()[:32]

    def mine():
        return [r for r in requests() if r["path"] == "/kyc-events"
                and (envelope(r) or {}).get("session_id") == interview]

    delivered = poll(lambda: [r for r in mine() if r["status"] == 200], 30)
    result(bool(delivered), "Incode webhook delivered to the demo destination (200)",
           f"requests seen for it: {[(r['status'], r['signature']) for r in mine()]}")
    if delivered:
        rec = delivered[-1]
        e = envelope(rec)
        result(rec["signature"] == "valid", "its Standard Webhooks signature is valid (reference library)",
               rec["signature"])
        result(e["event_id"] == expected_id and e["provider"] == "incode" and e["event_type"] == "onboarding_status",
               "its envelope: provider incode, onboarding_status, the documented content-derived event id",
               f"got {e.get('provider')} {e.get('event_type')} {e.get('event_id')}, expected {expected_id}")
        attempts = [r for r in mine()]
        result([r["status"] for r in attempts] == [503, 200]
               and len({r["webhook_id"] for r in attempts}) == 1,
               "retry path: first attempt answered 503, retried with the same webhook-id, then 200",
               f"statuses {[r['status'] for r in attempts]}, webhook-ids {[r['webhook_id'] for r in attempts]}")

        # The records table (shared/src/records/mod.rs): the session's partition, the event item and
        # its delivery item.
        pk = f"s#incode#{interview}"
        sk = f"ev#{len(e['event_id'].encode())}#{e['event_id']}"

        def get(key_sk):
            return ddb.get_item(TableName=env["RECORDS_TABLE"], Key={"pk": {"S": pk}, "sk": {"S": key_sk}},
                                ConsistentRead=True).get("Item")

        def delivered_item():
            item = get(sk + "#d#demo")
            return item if (item or {}).get("status", {}).get("S") == "DELIVERED" else None

        delivery = poll(delivered_item, 10)
        result(delivery is not None, "DynamoDB: the delivery item for 'demo' is DELIVERED",
               f"item: {get(sk + '#d#demo')}")
        if delivery:
            attempts_n = delivery.get("attempts", {}).get("N")
            history = [h["M"]["o"]["S"] for h in delivery.get("history", {}).get("L", [])]
            result(attempts_n == "2" and history == ["http_503", "http_200"],
                   "the delivery item counts 2 attempts with their history", f"attempts = {attempts_n}, {history}")
        event = get(sk)
        result(bool(event) and event.get("status", {}).get("S") == "ONBOARDING_FINISHED",
               "DynamoDB: the event item holds the session status ONBOARDING_FINISHED", f"item: {event}")
        if event:
            # The lease is the invocation's deadline: the consumer's Timeout (30 s) after the invocation
            # started, so a little under 30 s after the claim was written.
            lease = int(event.get("lease", {}).get("N", "0")) - int(event.get("claimed", {}).get("N", "0"))
            result(25_000 <= lease <= 30_000,
                   f"the claim's lease ends at the invocation's real deadline ({lease} ms after the claim; Timeout 30 s)",
                   f"lease - claimed = {lease} ms")
            s3 = session.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
            objects = [o["S"] for o in event.get("archive", {}).get("L", [])]
            archived = []
            for key in objects:
                body = s3.get_object(Bucket=env["ARCHIVE_BUCKET"], Key=key)["Body"].read().decode()
                archived += [json.loads(line) for line in body.splitlines() if line]
            mine_archived = [a for a in archived if a["event_id"] == e["event_id"]]
            result(len(mine_archived) == 1 and mine_archived[0]["raw_body"] == e["raw_body"],
                   "the archive (S3) holds the envelope, raw body byte for byte", f"objects {objects}")

elif phase == "idnow":
    sample = json.load(open("events/receiver/idnow-jwt-body-hs256.json"))
    jwt_body = sample["body"]

    def both():
        rs = [r for r in requests() if r["status"] == 200]
        env_ = [r for r in rs if r["path"] == "/kyc-events" and (envelope(r) or {}).get("provider") == "idnow"]
        raw = [r for r in rs if r["path"] == "/idnow-raw"]
        return (env_, raw) if env_ and raw else None

    got = poll(both, 30)
    result(bool(got), "IDnow webhook delivered to both destinations (demo envelope, raw-idnow raw)",
           f"demo log paths: {[(r['path'], r['status']) for r in requests()]}")
    if got:
        env_, raw = got
        r = raw[-1]
        result(r["body"] == jwt_body and r["headers"].get("content-type", "").startswith("application/jwt")
               and r["signature"] == "valid",
               "raw-idnow got the provider's JWT body byte for byte, as application/jwt, validly signed",
               f"content-type {r['headers'].get('content-type')}, signature {r['signature']}, "
               f"same body: {r['body'] == jwt_body}")

elif phase == "recovered":
    interview = env["INTERVIEW"]
    got = poll(lambda: [r for r in requests() if r["path"] == "/kyc-events" and r["status"] == 200
                        and (envelope(r) or {}).get("session_id") == interview], 60)
    result(bool(got), f"{env.get('HOOK_NOTE', 'after the restart')}: a new Incode webhook is delivered",
           "not delivered within 60 s: see .local/esm.log, .local/lambda.log, .local/functions.log")

elif phase == "poison":
    ingest, dlq = env["INGEST_QUEUE_URL"], env["INGEST_DLQ_URL"]
    marker = f"not json ({time.time()})"
    t = time.monotonic()
    sqs.send_message(QueueUrl=ingest, MessageBody=marker)

    def in_dlq():
        for m in sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                     VisibilityTimeout=0, AttributeNames=["All"]).get("Messages", []):
            if m["Body"] == marker:
                return m
        return None

    m = poll(in_dlq, 60, step=0.1)
    took = time.monotonic() - t
    result(m is not None, f"poison message (malformed envelope) redriven to the ingest DLQ "
           f"({took:.1f}s, after {m and int(m['Attributes'].get('ApproximateReceiveCount', 1)) - 1} receives)",
           "not in the DLQ within 60 s: see .local/esm.log")
    a = sqs.get_queue_attributes(QueueUrl=ingest, AttributeNames=["ApproximateNumberOfMessages",
                                 "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    result(a == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"},
           "the ingest queue is empty afterwards", str(a))
PY
}

export DEMO_LOG RECORDS_TABLE ARCHIVE_BUCKET AWS_ENDPOINT_URL AWS_REGION INGEST_QUEUE_URL INGEST_DLQ_URL LAMBDA_ENDPOINT
run_checks() { # phase: counts the PASS/FAIL lines of a phase
  local line
  while IFS= read -r line; do
    printf '%s\n' "$line"
    case "$line" in PASS*) passed=$((passed + 1)) ;; FAIL*) failed=$((failed + 1)) ;; esac
  done < <(checks "$1" 2>&1)
}

# 1-3: Incode, with the demo destination failing the first request.
INTERVIEW="pipeline-test-$(date +%s)-$$"
export INTERVIEW
if out=$(INTERVIEW_ID=$INTERVIEW scripts/curl-webhook.sh "$RECEIVER_URL" incode 2>&1); then
  ok "Incode webhook accepted by the receiver (OAuth token + shared header + bearer): 200"
else
  ko "Incode webhook accepted by the receiver" "$(printf '%s' "$out" | tail -n 3 | tr '\n' ' ')"
fi
run_checks incode

# 4: IDnow, both destinations.
if out=$(scripts/curl-webhook.sh "$RECEIVER_URL" idnow 2>&1); then
  ok "IDnow webhook (HS256 JWT body) accepted by the receiver: 200"
else
  ko "IDnow webhook accepted by the receiver" "$(printf '%s' "$out" | tail -n 3 | tr '\n' ' ')"
fi
run_checks idnow

# 5: poison message -> ingest DLQ.
run_checks poison
if grep -q 'consumer: 1 records, 1 failed' "$LOG_DIR/esm.log"; then
  ok "the ESM runner logged the consumer's batch item failures"
else
  ko "the ESM runner logged the consumer's batch item failures" "no 'consumer: 1 records, 1 failed' in .local/esm.log"
fi

# 6: the hooks a fault-injection run uses: SIGKILL the SQS trigger runner and restart it, SIGKILL
# every consumer instance through the service, SIGKILL the whole Lambda service and restart it; each
# time a new webhook must still get through.
pgid_of() { awk -v n="$1" '$1 == n {print $2}' "$PIDS_FILE"; }
hook_round() { # note
  INTERVIEW="pipeline-test-hook-$(date +%s%N)"
  export INTERVIEW HOOK_NOTE=$1
  if INTERVIEW_ID=$INTERVIEW scripts/curl-webhook.sh "$RECEIVER_URL" incode >/dev/null 2>&1; then
    run_checks recovered
  else
    ko "$1: the receiver accepts a new webhook" "see .local/lambda.log"
  fi
}
old_esm=$(pgid_of esm)
kill -KILL -- "-$old_esm" 2>/dev/null
# The killed runner's long polls (WaitTimeSeconds 2) stay open in moto for up to 2 s: a message arriving
# then is received for a dead poller and stays invisible for the ingest queue's visibility timeout
# (180 s), as in AWS. Nothing to poll for that; its bound is known.
sleep 3
if scripts/run-local.sh --restart esm >.local/pipeline-test-restart.log 2>&1 && [[ $(pgid_of esm) != "$old_esm" ]]; then
  ok "SIGKILL of the SQS trigger runner (pgid $old_esm), then run-local.sh --restart esm (pgid $(pgid_of esm))"
else
  ko "SIGKILL of the SQS trigger runner, then run-local.sh --restart esm" "$(tail -n 5 .local/pipeline-test-restart.log)"
fi
hook_round "after the runner's restart"
killed=$(curl -s -X POST "$LAMBDA_ENDPOINT/_local/functions/consumer/kill?state=all&signal=KILL" |
  .venv/bin/python -c 'import json,sys; print(" ".join(str(i["pid"]) for i in json.load(sys.stdin)["killed"]))')
if [[ -n $killed ]]; then
  ok "POST /_local/functions/consumer/kill SIGKILLed the consumer instances (pids $killed)"
else
  ko "POST /_local/functions/consumer/kill SIGKILLed the consumer instances" "no instance reported"
fi
hook_round "after the consumer instances were killed"
old_lambda=$(pgid_of lambda)
kill -KILL -- "-$old_lambda" 2>/dev/null
if scripts/run-local.sh --restart lambda >>.local/pipeline-test-restart.log 2>&1 && [[ $(pgid_of lambda) != "$old_lambda" ]]; then
  ok "SIGKILL of the Lambda service and its functions (pgid $old_lambda), then run-local.sh --restart lambda"
else
  ko "SIGKILL of the Lambda service, then run-local.sh --restart lambda" "$(tail -n 5 .local/pipeline-test-restart.log)"
fi
hook_round "after the Lambda service's restart"
started_pids=$(awk '{print $2}' "$PIDS_FILE")
started_pids+=" $(cat "$MOTO_PID_FILE" 2>/dev/null)"

# 7: the Lambda service's view of the functions.
if .venv/bin/python - "$LAMBDA_ENDPOINT" <<'PY'
import json, sys, urllib.request
status = json.load(urllib.request.urlopen(f"{sys.argv[1]}/_local/status", timeout=5))
fns = status["functions"]
want = {"receiver": 10, "consumer": 30, "dispatcher": 120}
bad = [f"{n}: timeout {fns.get(n, {}).get('timeout_s')}" for n, t in want.items() if fns.get(n, {}).get("timeout_s") != t]
live = {n: [i["pid"] for i in f["instances"] if i["state"] != "dead"] for n, f in fns.items()}
bad += [f"{n}: no live instance" for n in want if not live.get(n)]
print(f"      instances: {live}")
sys.exit(1 if bad else 0)
PY
then
  ok "the Lambda service runs each function with the template's Timeout and reports its instances' pids"
else
  ko "the Lambda service runs each function with the template's Timeout and reports its instances' pids"
fi
function_pids=$(.venv/bin/python -c 'import json,sys; print(" ".join(str(i["pid"]) for f in json.load(open(sys.argv[1]))["functions"].values() for i in f["instances"]))' "$LAMBDA_INSTANCES_FILE" 2>/dev/null || true)

# 7b: every body the destinations received matches the published schema (schemas/v1).
if out=$(.venv/bin/python scripts/check_schemas.py --received "$root/.local/demo-destination.jsonl" 2>&1); then
  ok "delivered bodies match the published schema ($(tail -n 1 <<<"$out" | sed 's/^check_schemas: //'))"
else
  ko "delivered bodies match the published schema" "$(tail -n 5 <<<"$out" | tr '\n' ' ')"
fi

# 8: stop, and nothing left running.
stop_pipeline
left=""
for pid in $started_pids $function_pids; do
  [[ -n $pid ]] || continue
  stat=$(ps -o stat= -p "$pid" 2>/dev/null || true)
  [[ -n $stat && $stat != Z* ]] && left+=" $pid($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-60))"
done
# Any function process of this checkout's Lambda service (they run the binaries it copied there):
for pid in $(pgrep -f -- "^$root/.local/lambda/code/" || true); do
  left+=" $pid(function)"
done
if [[ -z $left ]]; then
  ok "run-local.sh --stop left nothing running"
else
  ko "run-local.sh --stop left nothing running" "still running:$left"
fi
echo "pipeline-test: took $((SECONDS - t0))s"
finish
