#!/usr/bin/env bash
# Sends the sample API Gateway events under events/receiver/ (or the given files) to the receiver of a
# running local pipeline (scripts/run-local.sh) and reports, per event: accepted (200) or refused
# (status), checked against events/receiver/manifest.json (MISMATCH when it differs), then whether each
# accepted webhook reached the demo destination ("delivered", with its signature check), was a
# duplicate of an event delivered already (the consumer deduplicates), or was not delivered.
#
#   scripts/send-samples.sh                       # every sample
#   scripts/send-samples.sh events/receiver/idnow-*.json
#   SAMPLES_WAIT=30 scripts/send-samples.sh       # seconds to wait for deliveries (default 20)
#
# Each event goes to the Lambda Invoke API of the local Lambda service (scripts/local_lambda.py), as
# `aws lambda invoke` or `cargo lambda invoke receiver -A 127.0.0.1 --data-file FILE` would send it: the
# function sees the event as written, including its requestContext.http.sourceIp, so the IP-based
# hostile samples are refused as they would be in AWS (a plain curl to the HTTP API routes would
# arrive from 127.0.0.1, which config/local.env allows). Only requestContext.requestId is replaced by a unique value per send: the
# envelope carries it to the destination, which is how deliveries are matched to samples.
# Exit status: 0 when every status matches the manifest and every accepted webhook was delivered (or
# was a duplicate of a delivered one); 1 otherwise.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

py=.venv/bin/python
[[ -x $py ]] || py=python3
pipeline_env=$root/.local/pipeline.env
if [[ -f $pipeline_env ]]; then
  lambda=$(sed -n 's/^LAMBDA_ENDPOINT=//p' "$pipeline_env")
  demo_log=$(sed -n 's/^DEMO_LOG=//p' "$pipeline_env")
fi
lambda=${LAMBDA_ENDPOINT:-${lambda:-http://127.0.0.1:9000}}
demo_log=${DEMO_LOG:-${demo_log:-$root/.local/demo-destination.jsonl}}

if (($# == 0)); then
  set -- events/receiver/*.json
fi

exec "$py" - "$lambda" "$demo_log" "${SAMPLES_WAIT:-20}" "$pipeline_env" "$@" <<'PY'
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

lambda_url, demo_log, wait_s, pipeline_env = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])
files = sys.argv[5:]
manifest = json.loads(Path("events/receiver/manifest.json").read_text())
run = f"samples-{int(time.time())}-{os.getpid()}"
invoke = f"{lambda_url.rstrip('/')}/2015-03-31/functions/receiver/invocations"


def canonical(text):
    try:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return None


def jwt_data(token):
    import base64
    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return claims.get("data") if isinstance(claims, dict) else None
    except (IndexError, ValueError):
        return None


def identity(event):
    """What identifies the sample's event downstream (to recognise a duplicate)."""
    path = event.get("rawPath", "")
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return None
    if path.startswith("/webhooks/idnow"):
        doc = jwt_data(body) if body.count(".") == 2 and not body.lstrip().startswith("{") else None
        if doc is None:
            try:
                doc = json.loads(body)
            except ValueError:
                return None
        return ("idnow", doc.get("eventId") if isinstance(doc, dict) else None)
    if path.startswith("/webhooks/incode"):
        segment = path[len("/webhooks/incode"):].strip("/")
        return ("incode", canonical(body), segment.replace("-", "_") or None, segment or None)
    return None


if not Path(demo_log).exists():
    print(f"note: {demo_log} not found: deliveries cannot be checked (is scripts/run-local.sh running?)")

files = [f for f in files if Path(f).name != "manifest.json"]
print(f"sending {len(files)} sample(s) to {invoke}")
results = []
mismatches = 0
for i, name in enumerate(files):
    path = Path(name)
    if path.name == "manifest.json":
        continue
    event = json.loads(path.read_text())
    request_id = f"{run}-{i}"
    event.setdefault("requestContext", {})["requestId"] = request_id
    expected = manifest.get(path.name, {}).get("status")
    req = urllib.request.Request(invoke, data=json.dumps(event).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.loads(r.read() or b"null")
        status = int(answer.get("statusCode", 0)) if isinstance(answer, dict) else 0
        reply = answer.get("body", "") if isinstance(answer, dict) else str(answer)
    except urllib.error.HTTPError as e:
        status, reply = 0, f"invoke failed: HTTP {e.code} {e.read()[:200].decode('utf-8', 'replace')}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        print(f"cannot invoke the receiver at {invoke}: {e}\nis scripts/run-local.sh running?")
        sys.exit(1)
    verdict = "accepted (200)" if status == 200 else f"refused with {status}"
    if expected is None:
        check = "(not in manifest)"
    elif expected == status:
        check = "ok"
    else:
        check = f"MISMATCH: manifest says {expected}"
        mismatches += 1
    message = ""
    if status != 200:
        try:
            message = json.loads(reply).get("message") or json.loads(reply).get("error_description") or ""
        except (ValueError, AttributeError):
            message = reply[:80]
    print(f"  {path.name:<48} {verdict:<16} {check}{'  ' + message if message else ''}")
    is_webhook = event.get("rawPath", "").startswith("/webhooks/")
    results.append({"file": path.name, "status": status, "request_id": request_id,
                    "webhook": is_webhook, "identity": identity(event) if is_webhook and status == 200 else None})

accepted = [r for r in results if r["status"] == 200 and r["webhook"]]
tokens = [r for r in results if r["status"] == 200 and not r["webhook"]]


def queues_idle():
    """True when the ingest and delivery queues hold no message (visible, in flight or delayed): the
    consumer and dispatcher are done with everything sent so far. None when it cannot be checked."""
    if not pipeline_env.exists():
        return None
    env = {}
    for line in pipeline_env.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            env[key.strip()] = value.strip()
    try:
        import boto3
        sqs = boto3.client("sqs", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env.get("AWS_REGION", "eu-central-1"),
                           aws_access_key_id="test", aws_secret_access_key="test")
        for var in ("INGEST_QUEUE_URL", "DELIVERY_QUEUE_URL"):
            a = sqs.get_queue_attributes(QueueUrl=env[var], AttributeNames=[
                "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed"])["Attributes"]
            if any(int(v) for v in a.values()):
                return False
        return True
    except Exception:
        return None


def deliveries():
    """Envelope deliveries the demo destination answered 200 (this pipeline run), and raw ones."""
    env, raw = [], []
    if not Path(demo_log).exists():
        return env, raw
    for line in Path(demo_log).read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        try:
            body = json.loads(rec.get("body") or "")
        except ValueError:
            body = None
        if isinstance(body, dict) and "event_id" in body and "provider" in body:
            env.append((rec, body))
        else:
            raw.append(rec)
    return env, raw


def same_event(ident, b):
    if not ident:
        return False
    if ident[0] == "idnow":
        return b.get("provider") == "idnow" and b.get("event_id") == ident[1]
    return (b.get("provider") == "incode" and ident[1] is not None and canonical(b.get("raw_body")) == ident[1]
            and (ident[2] is None or b.get("event_type") == ident[2] or b.get("type_hint") == ident[3]))


def find(r, env):
    mine = [(rec, b) for rec, b in env if b.get("request_id") == r["request_id"]]
    ok = [x for x in mine if x[0].get("status") == 200]
    earlier = [(rec, b) for rec, b in env if rec.get("status") == 200 and b.get("request_id") != r["request_id"]
               and same_event(r["identity"], b)]
    if ok and earlier and earlier[0][1].get("event_id") == ok[-1][1].get("event_id"):
        return "twice", ok[-1]
    if ok:
        return "delivered", ok[-1]
    if earlier:
        return "duplicate", earlier[0]
    if mine:
        return "retrying", mine[-1]
    return None, None


if tokens:
    print(f"{len(tokens)} OAuth token request(s) answered 200 (not webhooks: nothing to deliver)")
undelivered = 0
if accepted:
    print(f"waiting up to {wait_s:g}s for {len(accepted)} accepted webhook(s) at the demo destination ({demo_log}) ...")
    deadline = time.monotonic() + wait_s
    idle_since = None
    while True:
        env, raw = deliveries()
        found = {r["file"]: find(r, env) for r in accepted}
        # A duplicate is only a duplicate once the pipeline is done with it (else it may still be
        # delivered a second time, which would be a bug worth seeing).
        idle = queues_idle()
        if idle is False:
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        settled = idle_since is not None and time.monotonic() - idle_since >= (1.0 if idle else 3.0)
        if (all(v[0] in ("delivered", "twice") for v in found.values())
                or (settled and all(v[0] in ("delivered", "duplicate") for v in found.values()))
                or time.monotonic() > deadline):
            break
        time.sleep(0.5)
    for r in accepted:
        kind, hit = found[r["file"]]
        if kind == "delivered":
            rec, b = hit
            extra = [x for x in raw if x.get("webhook_id") and x.get("status") == 200
                     and r["identity"] and r["identity"][0] == "idnow"
                     and (x.get("summary") or {}).get("event_id") == b.get("event_id")]
            also = f" + raw to {extra[-1]['path']}" if extra else ""
            print(f"  {r['file']:<48} delivered: {b['provider']} {b['event_type']} {b['event_id']} "
                  f"(signature {rec.get('signature')}){also}")
        elif kind == "duplicate":
            rec, b = hit
            print(f"  {r['file']:<48} duplicate of delivered event {b['event_id']} (deduplicated by the consumer)")
        elif kind == "twice":
            undelivered += 1
            print(f"  {r['file']:<48} DELIVERED AGAIN: event {hit[1]['event_id']} had been delivered before "
                  f"(the consumer should have deduplicated it)")
        elif kind == "retrying":
            undelivered += 1
            print(f"  {r['file']:<48} NOT YET DELIVERED: the destination answered {hit[0].get('status')} (retries pending)")
        else:
            undelivered += 1
            print(f"  {r['file']:<48} NOT DELIVERED within {wait_s:g}s (see .local/esm.log, .local/functions.log)")

refused = sum(1 for r in results if r["status"] != 200)
print(f"{len(results)} sent: {len(accepted)} webhooks accepted, {len(tokens)} tokens issued, {refused} refused; "
      f"{mismatches} status mismatch(es) with the manifest, {undelivered} accepted webhook(s) not delivered (or delivered twice)")
sys.exit(1 if mismatches or undelivered else 0)
PY
