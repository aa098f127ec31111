#!/usr/bin/env python3
"""The fault-injection run: N webhooks through the local pipeline while processes die, then a count
of what was lost, repeated or left behind. RELIABILITY.md explains the guarantees it checks and
records the figures of a full run.

  scripts/fault-run.sh [--events N] [--short] [--seed S] [--report FILE]

What it does (every loop bounded in count and time; only 127.0.0.1):
  1. starts two test destinations on 127.0.0.1 (in this process): `chaos` answers 503 to ~30 % of
     requests and, to ~1 %, answers only after sleeping past its timeout; `steady` always answers 200;
  2. starts the pipeline as scripts/run-local.sh --background does, with those destinations;
  3. sends N webhooks at the receiver (Incode onboarding statuses and IDnow session events, HS256 JWT
     bodies, over several sessions each, in shuffled order within a session, ~10 % sent twice as a
     provider would retry: the same Incode body, an IDnow event with a new eventDeliverId);
  4. meanwhile: SIGKILLs the SQS trigger runner three times and restarts it (not in --short: a message
     a killed poller held comes back only after the queue's visibility timeout, 720 s for delivery
     jobs, which a CI run cannot wait for), SIGKILLs the consumer's and the dispatcher's busy
     instances mid-batch, sends one event 100 times concurrently at the receiver, and hands one ingest
     message to 10 concurrent consumer invocations;
  5. drains (every queue empty, nothing in flight) and reports: accepted, unique events, delivered per
     destination, dead-lettered with reasons, lost, parked in the ingest DLQ, duplicate deliveries
     (explained by a destination answering after its timeout, a killed dispatcher, copies a killed
     trigger runner held coming back together one visibility timeout later, or an AWS call that
     failed after the attempt as the dispatcher's error log shows; or unexplained), sessions not at
     their furthest status, DynamoDB write requests and SQS requests per webhook (counted by the
     emulator), throughput against the emulator's own, and end-to-end latency (provider request to
     destination 2xx) p50/p99.
Webhooks leave at --rate per second (default 20): moto on two shared cores, not the relay, sets the
pace; faster, its answers slow past the functions' AWS call timeouts and the run measures the emulator.
Exit status: 0 when lost = 0, parked = 0, unexplained duplicates = 0 and regressed sessions = 0.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import jwt  # PyJWT
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".local"
LAMBDA = "http://127.0.0.1:9000"
SECRET = "whsec_dGVzdC1vbmx5LWZhdWx0LWluamVjdGlvbi1rZXk="  # TEST value
CHAOS_TIMEOUT_MS = 1500
RECEIVED_BEFORE_KILL_S = 155
HANG_S = 3.0

# Session status ranks (shared/src/provider/status.rs) of the statuses this run sends.
INCODE_FLOW = ["ID_VALIDATION_FINISHED", "FACE_VALIDATION_FINISHED", "GOVERNMENT_VALIDATION_FINISHED",
               "ONBOARDING_FINISHED"]
INCODE_RANK = {"ID_VALIDATION_FINISHED": 30, "FACE_VALIDATION_FINISHED": 50,
               "GOVERNMENT_VALIDATION_FINISHED": 60, "ONBOARDING_FINISHED": 70}
IDNOW_FLOW = [("session.created", "CREATED", 10), ("session.started", "STARTED", 20),
              ("session.completed", "COMPLETED", 1000)]


def log(msg: str) -> None:
    print(f"fault-run [{time.strftime('%H:%M:%S')}]: {msg}", flush=True)


def env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.removeprefix("export ").split("=", 1)
            out[k.strip()] = v.strip().strip("'\"")
    return out


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


# --- destinations ----------------------------------------------------------------------------------


class Destinations:
    """The two test destinations; every request is recorded (time, webhook-id, answer, hung)."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self):
        dest = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_):
                pass

            def do_POST(self):
                received = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                name = self.path.strip("/")
                with dest.lock:
                    roll = dest.rng.random()
                hang = name == "chaos" and roll < 0.01
                status = 503 if name == "chaos" and 0.01 <= roll < 0.31 else 200
                if hang:
                    time.sleep(HANG_S)
                try:
                    envelope = json.loads(body)
                except ValueError:
                    envelope = {}
                record = {"t": received, "answered": time.time(), "dest": name, "status": status, "hung": hang,
                          "webhook_id": self.headers.get("webhook-id"), "event_id": envelope.get("event_id"),
                          "provider": envelope.get("provider"), "session_id": envelope.get("session_id"),
                          "correlation": correlation(envelope)}
                with dest.lock:
                    dest.requests.append(record)
                payload = b"{}"
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the relay gave up waiting (a hang): the answer goes nowhere

        return Handler

    def document(self) -> dict:
        base = f"http://127.0.0.1:{self.port}"
        auth = {"type": "standard_webhooks", "secret": SECRET}
        return {"destinations": [
            {"id": "chaos", "url": f"{base}/chaos", "timeout_ms": CHAOS_TIMEOUT_MS, "auth": auth,
             "retry_policy": {"custom": {"initial_ms": 500, "multiplier": 2, "max_retries": 6,
                                         "max_interval_ms": 8000}}},
            {"id": "steady", "url": f"{base}/steady", "auth": auth, "retry_policy": "idnow"},
        ]}


def correlation(envelope: dict) -> str | None:
    """The driver's own id of an event, carried inside it: Incode externalId, IDnow eventId."""
    event = envelope.get("event") or {}
    if envelope.get("provider") == "incode":
        return event.get("externalId")
    return event.get("eventId")


# --- traffic ----------------------------------------------------------------------------------------


class Traffic:
    def __init__(self, n: int, seed: int, cfg: dict[str, str]):
        self.rng = random.Random(seed)
        self.cfg = cfg
        self.events: list[dict] = []  # one per unique event
        sessions = []
        run = f"{int(time.time())}"
        i = 0
        while i < n:
            if self.rng.random() < 0.5:
                sid = f"fi-{run}-inc-{len(sessions)}"
                flow = [dict(provider="incode", session=sid, status=s, rank=INCODE_RANK[s]) for s in INCODE_FLOW]
            else:
                sid = f"fi-{run}-idn-{len(sessions)}"
                flow = [dict(provider="idnow", session=sid, name=nm, status=st, rank=r) for nm, st, r in IDNOW_FLOW]
            flow = flow[: max(1, min(len(flow), n - i))]
            for e in flow:
                e["correlation"] = f"{sid}-{e['status'].lower()}"
            if self.rng.random() < 0.3:  # out of order within the session
                self.rng.shuffle(flow)
            sessions.append(flow)
            i += len(flow)
        # Interleave sessions: send each session's events in its (shuffled) order, sessions mixed.
        queues = [collections.deque(s) for s in sessions]
        while queues:
            q = self.rng.choice(queues)
            self.events.append(q.popleft())
            if not q:
                queues.remove(q)
        self.sends: list[tuple[dict, bool]] = []
        for e in self.events:
            self.sends.append((e, False))
            if self.rng.random() < 0.10:
                self.sends.append((e, True))  # a provider retry
        self.results: list[dict] = []
        self.lock = threading.Lock()
        self._token = None

    def token(self) -> str:
        if self._token is None:
            basic = base64.b64encode(f"{self.cfg['OAUTH_CLIENT_ID']}:{self.cfg['OAUTH_CLIENT_SECRET']}".encode()).decode()
            req = urllib.request.Request(f"{LAMBDA}/oauth/token", data=b"grant_type=client_credentials", method="POST",
                                         headers={"Authorization": f"Basic {basic}",
                                                  "Content-Type": "application/x-www-form-urlencoded"})
            with urllib.request.urlopen(req, timeout=30) as r:
                self._token = json.load(r)["access_token"]
        return self._token

    def request(self, e: dict, retry: bool) -> urllib.request.Request:
        if e["provider"] == "incode":
            body = json.dumps({"interviewId": e["session"], "externalId": e["correlation"],
                               "onboardingStatus": e["status"]}).encode()
            return urllib.request.Request(
                f"{LAMBDA}/webhooks/incode/onboarding-status", data=body, method="POST",
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token()}",
                         self.cfg["INCODE_SHARED_HEADER_NAME"]: self.cfg["INCODE_SHARED_HEADER_VALUE"]})
        event = {"eventId": e["correlation"], "eventDeliverId": f"d-{e['correlation']}-{'r' if retry else '1'}",
                 "eventVersion": "1.0", "eventName": e["name"], "eventSequence": e["rank"],
                 "createdAt": "2026-12-01T00:00:00Z", "environment": "fault-run",
                 "payload": {"flowId": "flow-fault", "sessionId": e["session"], "sessionStatus": e["status"]}}
        now = int(time.time())
        token = jwt.encode({"iss": self.cfg["IDNOW_JWT_ISSUER"], "aud": self.cfg["IDNOW_JWT_AUDIENCE"], "iat": now,
                            "exp": now + 3600, "sub": event["eventId"], "data": event},
                           self.cfg["IDNOW_JWT_SECRET"], algorithm="HS256")
        return urllib.request.Request(f"{LAMBDA}/webhooks/idnow", data=token.encode(), method="POST",
                                      headers={"Content-Type": "application/jwt"})

    def send(self, e: dict, retry: bool, tries: int = 6) -> dict:
        """As a provider: a non-2xx or no answer is retried (bounded)."""
        t0 = time.time()
        status = None
        for attempt in range(tries):
            try:
                with urllib.request.urlopen(self.request(e, retry), timeout=15) as r:
                    status = r.status
            except urllib.error.HTTPError as err:
                status = err.code
            except OSError:
                status = 0
            if status == 200:
                break
            time.sleep(min(0.5 * 2 ** attempt, 4))
        result = {"correlation": e["correlation"], "retry": retry, "t": t0, "status": status}
        with self.lock:
            self.results.append(result)
        return result


# --- the run ----------------------------------------------------------------------------------------


class Run:
    def __init__(self, args):
        self.args = args
        self.kills: list[dict] = []  # {what, t}
        self.notes: list[str] = []

    def sh(self, *cmd, check=True, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), cwd=ROOT, check=check, text=True, capture_output=True, **kw)

    def start(self, dests: Destinations) -> dict[str, str]:
        doc = STATE / "fault-destinations.json"
        STATE.mkdir(exist_ok=True)
        doc.write_text(json.dumps(dests.document(), indent=2))
        log("starting the pipeline (scripts/run-local.sh --background) ...")
        # Records reported as failed come back after 35 s, not the queues' 180 s / 720 s: still longer
        # than the consumer's 30 s timeout, so a claim's lease is always over when its message
        # returns, as in AWS (a shorter wait would turn a killed consumer's batch into
        # "in progress elsewhere" five times over, and into the DLQ: an artefact, not a fault).
        r = self.sh("scripts/run-local.sh", "--background", "--no-reload", "--destinations", str(doc),
                    "--failure-visibility", "35", "--function-concurrency", "24", check=False, timeout=1800)
        if r.returncode != 0:
            sys.exit(f"fault-run: the pipeline did not start:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return env_file(STATE / "pipeline.env")

    def stop(self) -> None:
        self.sh("scripts/run-local.sh", "--stop", check=False, timeout=120)

    # --- faults ---
    def pgid(self, name: str) -> int | None:
        for line in (STATE / "pipeline.pids").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == name:
                return int(parts[1])
        return None

    def kill_esm(self) -> None:
        pgid = self.pgid("esm")
        if pgid is None:
            self.notes.append("no esm pgid found")
            return
        os.killpg(pgid, signal.SIGKILL)
        self.kills.append({"what": "esm", "t": time.time()})
        log(f"SIGKILL the SQS trigger runner (pgid {pgid})")
        time.sleep(1)
        r = self.sh("scripts/run-local.sh", "--restart", "esm", check=False, timeout=120)
        log(f"restarted the SQS trigger runner ({'ok' if r.returncode == 0 else 'FAILED: ' + r.stderr[-300:]})")

    def kill_busy(self, fn: str) -> None:
        """SIGKILL the function's instances that are in an invocation (mid-batch): waits (bounded) for
        one to be busy."""
        deadline = time.monotonic() + 20
        pids = []
        while not pids and time.monotonic() < deadline:
            req = urllib.request.Request(f"{LAMBDA}/_local/functions/{fn}/kill?state=busy&signal=KILL", method="POST")
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    pids = json.load(r).get("killed", [])
            except OSError as e:
                self.notes.append(f"kill {fn}: {e}")
                return
            if not pids:
                time.sleep(0.05)
        self.kills.append({"what": fn, "t": time.time(), "pids": pids})
        log(f"SIGKILL {fn}'s busy instances: {pids or 'none was busy within 20 s'}")

    def receiver_storm(self, traffic: Traffic, e: dict) -> dict:
        with ThreadPoolExecutor(max_workers=20) as pool:
            statuses = list(pool.map(lambda _: traffic.send(e, retry=True, tries=3)["status"], range(100)))
        log(f"receiver storm: one event sent 100 times concurrently: {collections.Counter(statuses)}")
        return {"sent": 100, "answers": dict(collections.Counter(statuses))}

    def consumer_storm(self, cfg: dict, traffic: Traffic, e: dict) -> dict:
        """One ingest message handed to 10 concurrent consumer invocations: the SQS trigger runner is
        stopped (SIGSTOP) while the webhook is accepted, the message is taken off the queue here, given
        to ten invocations at once, deleted after, and the runner continued."""
        sqs = client(cfg, "sqs")
        pgid = self.pgid("esm")
        os.killpg(pgid, signal.SIGSTOP)
        try:
            assert traffic.send(e, retry=False)["status"] == 200
            # Other events' messages received on the way are held aside and released once at the
            # end: releasing each at once would receive it again and again, and after
            # maxReceiveCount receives SQS would move it to the DLQ (the test's doing, not the relay's).
            deadline = time.monotonic() + 30
            message, others = None, []
            while message is None and time.monotonic() < deadline:
                for m in sqs.receive_message(QueueUrl=cfg["INGEST_QUEUE_URL"], MaxNumberOfMessages=10,
                                             VisibilityTimeout=120, WaitTimeSeconds=1,
                                             AttributeNames=["All"]).get("Messages", []):
                    if e["correlation"] in m["Body"] and message is None:
                        message = m
                    else:
                        others.append(m)
            for m in others:
                sqs.change_message_visibility(QueueUrl=cfg["INGEST_QUEUE_URL"], ReceiptHandle=m["ReceiptHandle"],
                                              VisibilityTimeout=0)
            if message is None:
                self.notes.append("consumer storm: message not found")
                return {"error": "message not found"}
            arn = sqs.get_queue_attributes(QueueUrl=cfg["INGEST_QUEUE_URL"], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            event = {"Records": [{"messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"],
                                  "body": message["Body"], "attributes": message.get("Attributes", {}),
                                  "messageAttributes": {}, "md5OfBody": message["MD5OfBody"],
                                  "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": cfg["AWS_REGION"]}]}

            def invoke(_):
                req = urllib.request.Request(f"{LAMBDA}/2015-03-31/functions/consumer/invocations",
                                             data=json.dumps(event).encode(), method="POST")
                with urllib.request.urlopen(req, timeout=60) as r:
                    return json.load(r)

            with ThreadPoolExecutor(max_workers=10) as pool:
                answers = list(pool.map(invoke, range(10)))
            failed = sum(1 for a in answers if a.get("batchItemFailures"))
            sqs.delete_message(QueueUrl=cfg["INGEST_QUEUE_URL"], ReceiptHandle=message["ReceiptHandle"])
            log(f"consumer storm: one message to 10 concurrent invocations: {10 - failed} processed it, "
                f"{failed} reported it back (in progress elsewhere)")
            return {"invocations": 10, "processed": 10 - failed, "reported_back": failed}
        finally:
            os.killpg(pgid, signal.SIGCONT)

    # --- drain ---
    def drain(self, cfg: dict, timeout_s: float, faults_done) -> float:
        sqs = client(cfg, "sqs")
        queues = [cfg["INGEST_QUEUE_URL"], cfg["DELIVERY_QUEUE_URL"], cfg["RETRY_QUEUE_URL"]]
        t0 = time.monotonic()
        quiet_since = None
        last_log = 0.0
        while time.monotonic() - t0 < timeout_s:
            depth = 0
            for q in queues:
                a = sqs.get_queue_attributes(QueueUrl=q, AttributeNames=[
                    "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed"])["Attributes"]
                depth += sum(int(v) for v in a.values())
            if depth == 0 and faults_done():
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 5:
                    return time.monotonic() - t0
            else:
                quiet_since = None
            if time.monotonic() - last_log > 30:
                log(f"draining: {depth} messages on the queues (visible, in flight or delayed)")
                last_log = time.monotonic()
            time.sleep(1)
        self.notes.append(f"drain timed out after {timeout_s:.0f} s")
        return time.monotonic() - t0


def emulator_baseline(cfg: dict, n: int = 300) -> float:
    """The emulator's own rate: SendMessage + ReceiveMessage + DeleteMessage round trips per second on a
    scratch queue, with 8 client threads (what the pipeline's processes share)."""
    sqs = client(cfg, "sqs", max_pool_connections=16)
    url = sqs.create_queue(QueueName=f"fault-baseline-{int(time.time())}")["QueueUrl"]
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: sqs.send_message(QueueUrl=url, MessageBody=f"m{i}"), range(n)))
    took = time.monotonic() - t0
    sqs.delete_queue(QueueUrl=url)
    return n / took


FUNCTION_LOG = STATE / "functions.log"
# The dispatcher's errors after a destination answered: the answer is not recorded (or the next job not
# enqueued), SQS redelivers the job and the destination is called again with the same webhook-id. An
# SDK timeout on a call that did reach the emulator lands here too.
AFTER_ATTEMPT = ("cannot record delivery", "cannot record attempt", "cannot enqueue job; SQS will redeliver it",
                 "cannot dead-letter job", "cannot record failure")


def function_log_size() -> int:
    try:
        return FUNCTION_LOG.stat().st_size
    except OSError:
        return 0


def failed_after_attempt(offset: int) -> dict[str, str]:
    """delivery_id -> the error line's message, for this run's AFTER_ATTEMPT errors."""
    out: dict[str, str] = {}
    try:
        with FUNCTION_LOG.open("rb") as f:
            f.seek(offset)
            for raw in f:
                line = raw.decode("utf-8", "replace")
                if '"ERROR"' not in line or "delivery_id" not in line:
                    continue
                try:
                    fields = json.loads(line[line.index("{"):]).get("fields", {})
                except ValueError:
                    continue
                if fields.get("message") in AFTER_ATTEMPT and fields.get("delivery_id"):
                    out[fields["delivery_id"]] = fields["message"]
    except OSError:
        pass
    return out


def client(cfg: dict, service: str, max_pool_connections: int = 10):
    """A boto3 client on the emulator, tagged so it counts apart from the pipeline's requests."""
    return boto3.client(service, endpoint_url=cfg["AWS_ENDPOINT_URL"], region_name=cfg["AWS_REGION"],
                        aws_access_key_id="test", aws_secret_access_key="test",
                        config=Config(user_agent_extra="fault-driver", max_pool_connections=max_pool_connections))


def delivery_visibility(cfg: dict) -> float:
    """The delivery lanes' visibility timeout (the longest, should they differ), as SQS has it."""
    sqs = client(cfg, "sqs")
    return max(float(sqs.get_queue_attributes(QueueUrl=cfg[q], AttributeNames=["VisibilityTimeout"])
                     ["Attributes"]["VisibilityTimeout"]) for q in ("DELIVERY_QUEUE_URL", "RETRY_QUEUE_URL"))


def counts(cfg: dict, reset: bool = False) -> dict[str, int]:
    req = urllib.request.Request(f"{cfg['AWS_ENDPOINT_URL']}/_local/counts", method="DELETE" if reset else "GET")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def records_view(cfg: dict) -> tuple[dict, int]:
    """Every item of the records table: {pk: [items]}, and the largest item in bytes (approx.)."""
    ddb = client(cfg, "dynamodb")
    out: dict[str, list] = collections.defaultdict(list)
    largest = 0
    kwargs = {"TableName": cfg["RECORDS_TABLE"]}
    while True:
        page = ddb.scan(**kwargs)
        for item in page.get("Items", []):
            out[item["pk"]["S"]].append(item)
            largest = max(largest, len(json.dumps(item)))
        if "LastEvaluatedKey" not in page:
            return out, largest
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def dead_letters(cfg: dict, url: str, parse: bool = True) -> list:
    sqs = client(cfg, "sqs")
    seen, out = set(), []
    for _ in range(200):
        ms = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60,
                                 WaitTimeSeconds=0).get("Messages", [])
        if not ms:
            break
        for m in ms:
            if m["MessageId"] not in seen:
                seen.add(m["MessageId"])
                out.append(json.loads(m["Body"]) if parse else m["Body"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000, help="unique events to send (default 10000)")
    ap.add_argument("--short", action="store_true",
                    help="the CI variant: 300 events, no SIGKILL of the trigger runner (see above)")
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--concurrency", type=int, default=8, help="concurrent provider requests")
    ap.add_argument("--rate", type=float, default=20.0,
                    help="webhooks sent per second (default 20): the local emulator, not the relay, sets the "
                         "pace a 2-core machine keeps up with; 0 sends as fast as --concurrency allows")
    ap.add_argument("--report", type=Path, default=STATE / "fault-report.json")
    ap.add_argument("--drain-timeout", type=float, default=1800)
    ap.add_argument("--keep", action="store_true", help="leave the pipeline running afterwards (to inspect it)")
    args = ap.parse_args()
    n = 300 if args.short and args.events == 10_000 else args.events

    run = Run(args)
    dests = Destinations(args.seed)
    cfg = run.start(dests)
    cfg.update(env_file(ROOT / "config" / "local.env"))
    report: dict = {"events": n, "seed": args.seed, "short": args.short, "rate_per_s": args.rate}
    try:
        report["emulator_sends_per_s"] = round(emulator_baseline(cfg), 1)
        counts(cfg, reset=True)
        traffic = Traffic(n, args.seed, cfg)
        storm_event = dict(provider="incode", session=f"fi-storm-{int(time.time())}", status="ONBOARDING_FINISHED",
                           rank=70, correlation=f"fi-storm-{int(time.time())}-receiver")
        solo_event = dict(provider="incode", session=f"fi-solo-{int(time.time())}", status="ONBOARDING_FINISHED",
                          rank=70, correlation=f"fi-solo-{int(time.time())}-consumer")
        total = len(traffic.sends)
        # Faults fire as processing progresses (the share of unique events delivered to `steady`),
        # so they land while batches are in flight, during the sending and the draining alike.
        faults = [(0.30, lambda: run.kill_busy("consumer")), (0.40, lambda: run.kill_busy("dispatcher")),
                  (0.05, lambda: report.__setitem__("receiver_storm", run.receiver_storm(traffic, storm_event))),
                  (0.10, lambda: report.__setitem__("consumer_storm", run.consumer_storm(cfg, traffic, solo_event)))]
        if not args.short:
            faults += [(0.20, run.kill_esm), (0.50, run.kill_esm), (0.75, run.kill_esm),
                       (0.60, lambda: run.kill_busy("consumer")), (0.85, lambda: run.kill_busy("dispatcher"))]
        faults.sort(key=lambda f: f[0])
        done = threading.Event()

        def progress() -> float:
            with dests.lock:
                got = {q["correlation"] for q in dests.requests if q["dest"] == "steady" and q["status"] == 200}
            return len(got) / n

        def injector():
            while faults and not done.is_set():
                if progress() >= faults[0][0]:
                    share, fault = faults.pop(0)
                    log(f"at {share:.0%} delivered:")
                    try:
                        fault()
                    except Exception as e:  # a failed fault is reported, not fatal
                        run.notes.append(f"fault at {share:.0%} failed: {e!r}")
                else:
                    time.sleep(0.2)

        injector_thread = threading.Thread(target=injector, daemon=True)
        injector_thread.start()
        log(f"sending {total} webhooks ({n} unique events, {total - n} provider retries), "
            f"{args.concurrency} at a time; {len(faults)} faults on the way")
        t_start = time.time()
        log_offset = function_log_size()
        sent = 0
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            futures = []
            for e, retry in traffic.sends:
                if args.rate > 0:  # paced: the n-th webhook leaves at n / rate seconds
                    wait = t_start + sent / args.rate - time.time()
                    if wait > 0:
                        time.sleep(wait)
                futures.append(pool.submit(traffic.send, e, retry))
                sent += 1
                if sent % 500 == 0:
                    log(f"{sent}/{total} submitted")
            for f in futures:
                f.result()
        t_sent = time.time()
        log(f"all sent in {t_sent - t_start:.0f} s; draining ...")
        drained = run.drain(cfg, args.drain_timeout, lambda: not faults)
        done.set()
        injector_thread.join(timeout=60)
        for share, _ in faults:
            run.notes.append(f"fault at {share:.0%} delivered did not fire")
        t_end = time.time()
        # Late answers of hung requests land after the queues are empty.
        time.sleep(HANG_S + 1)
        report.update(analyse(traffic, dests, cfg, run, storm_event, solo_event, t_start, t_end,
                              failed_after_attempt(log_offset)))
        report["timing"] = {"send_s": round(t_sent - t_start, 1), "drain_s": round(drained, 1),
                            "total_s": round(t_end - t_start, 1)}
        report["faults"] = run.kills
        report["notes"] = run.notes
    finally:
        if not args.keep:
            run.stop()
    args.report.write_text(json.dumps(report, indent=2))
    if report.get("emulator_sends_per_s"):
        report["throughput"]["per_emulator_send"] = round(report["throughput"]["events_per_s"]
                                                          / report["emulator_sends_per_s"], 4)
    print_report(report)
    ok = (report["lost"] == 0 and report["parked_in_ingest_dlq"] == 0 and report["duplicates"]["unexplained"] == 0
          and report["sessions"]["regressed"] == 0)
    log(f"report written to {args.report}; verdict: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def analyse(traffic: Traffic, dests: Destinations, cfg: dict, run: Run, storm: dict, solo: dict,
            t_start: float, t_end: float, after_attempt: dict[str, str]) -> dict:
    events = {e["correlation"]: e for e in traffic.events}
    events[storm["correlation"]] = storm
    events[solo["correlation"]] = solo
    first_sent: dict[str, float] = {}
    accepted: set[str] = set()
    for r in traffic.results:
        first_sent[r["correlation"]] = min(first_sent.get(r["correlation"], r["t"]), r["t"])
        if r["status"] == 200:
            accepted.add(r["correlation"])
    with dests.lock:
        requests = list(dests.requests)
    ok_by = collections.defaultdict(list)  # (dest, correlation) -> [request]
    all_by_webhook = collections.defaultdict(list)
    for q in requests:
        all_by_webhook[(q["dest"], q["webhook_id"])].append(q)
        if q["status"] == 200:
            ok_by[(q["dest"], q["correlation"])].append(q)
    dlq = dead_letters(cfg, cfg["DELIVERY_DLQ_URL"])
    ingest_dlq = dead_letters(cfg, cfg["INGEST_DLQ_URL"], parse=False)
    # A job the dispatcher gave up on carries `dead_letter` (reason, history); one SQS moved after
    # maxReceiveCount receives (its dispatcher kept failing before it could decide) has none.
    dead = collections.Counter(j.get("dead_letter", {}).get("reason", "moved by SQS after maxReceiveCount")
                               for j in dlq)
    dead_keys = {(j["destination_id"], correlation(j["envelope"])) for j in dlq}
    # Envelopes the consumer could not process are parked whole in the ingest DLQ (redrivable with the
    # CLI): not delivered yet, but not lost either. Counted apart.
    parked = set()
    for body in ingest_dlq:
        try:
            parked.add(correlation(json.loads(body)))
        except (ValueError, AttributeError):
            pass

    lost, parked_pairs = [], []
    for c in accepted:
        for d in ("chaos", "steady"):
            if not ok_by.get((d, c)) and (d, c) not in dead_keys:
                (parked_pairs if c in parked else lost).append((d, c))

    # Duplicate deliveries: a webhook-id answered 2xx more than once.
    explained = unexplained = 0
    why = collections.Counter()
    examples = []
    kill_times = [k["t"] for k in run.kills if k["what"] in ("dispatcher", "esm")]
    # A killed trigger runner's receives are never deleted: what it held (the job it was dispatching
    # and, when the dispatcher had moved that job to the retry lane, the copy its retry poller had
    # just received) stays invisible for the delivery queues' visibility timeout from its receive and
    # then comes back in one moment, to two invocations that both find no attempt recorded yet. So
    # two of the repeat's 2xx must fall in that return window: from the kill plus the visibility
    # timeout, less how long before the kill a held batch may have been received (the runner's
    # dispatcher invoke timeout, 135 s, and a 20 s long poll), to 130 s after.
    vis = delivery_visibility(cfg)
    runner_kills = [k["t"] for k in run.kills if k["what"] == "esm"]
    for (d, wid), qs in all_by_webhook.items():
        oks = [q for q in qs if q["status"] == 200]
        if len(oks) < 2:
            continue
        extra = len(oks) - 1
        # A hung request answered 200 after the relay stopped waiting; or the dispatcher (or the
        # trigger runner holding its batch) was killed between the POST and the record.
        if any(q["hung"] for q in oks) or any(q["answered"] - q["t"] > CHAOS_TIMEOUT_MS / 1000 for q in oks):
            explained += extra
            why["destination answered after the timeout"] += extra
        elif any(0 <= k - q["t"] <= 130 for q in oks[:-1] for k in kill_times):
            explained += extra
            why["dispatcher or trigger runner killed after the attempt"] += extra
        elif any(sum(-RECEIVED_BEFORE_KILL_S <= q["t"] - (k + vis) <= 130 for q in oks) >= 2 for k in runner_kills):
            explained += extra
            why["copies held by a killed trigger runner, back together after the visibility timeout"] += extra
        elif wid in after_attempt:
            explained += extra
            why[f"AWS call failed after the attempt ({after_attempt[wid]})"] += extra
        else:
            unexplained += extra
            examples.append({"dest": d, "webhook_id": wid, "times": [q["t"] for q in oks]})

    # Sessions: the furthest rank among the accepted events vs the records' view.
    records, largest = records_view(cfg)
    expected: dict[str, int] = {}
    for c in accepted:
        e = events[c]
        pk = f"s#{e['provider']}#{e['session']}"
        expected[pk] = max(expected.get(pk, 0), e["rank"])
    regressed = []
    for pk, rank in expected.items():
        got = max((int(it["rank"]["N"]) for it in records.get(pk, []) if "rank" in it), default=0)
        if got != rank:
            regressed.append({"session": pk, "expected_rank": rank, "got": got})

    c = counts(cfg)
    fn = {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("functions:")}
    esm = {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("esm:")}
    webhooks = len(traffic.results)
    writes = sum(v for k, v in fn.items() if k in ("dynamodb.PutItem", "dynamodb.UpdateItem", "dynamodb.DeleteItem"))
    reads = sum(v for k, v in fn.items() if k in ("dynamodb.Query", "dynamodb.GetItem"))
    sqs_own = sum(v for k, v in fn.items() if k.startswith("sqs."))
    sqs_esm = sum(v for k, v in esm.items() if k.startswith("sqs.") and k != "sqs.GetQueueAttributes")

    lag = collections.defaultdict(list)
    for (d, cor), qs in ok_by.items():
        if cor in first_sent:
            lag[d].append((min(q["answered"] for q in qs) - first_sent[cor]) * 1000)
    delivered = {d: len({cor for (dd, cor) in ok_by if dd == d and cor in accepted}) for d in ("chaos", "steady")}
    seconds = max(t_end - t_start, 1e-9)
    return {
        "accepted_requests": sum(1 for r in traffic.results if r["status"] == 200),
        "requests": webhooks,
        "unique_events": len(accepted),
        "delivered": delivered,
        "destination_requests": collections.Counter(q["dest"] for q in requests),
        "dead_lettered": dict(dead),
        "ingest_dlq": len(ingest_dlq),
        "parked_in_ingest_dlq": len(parked_pairs),
        "lost": len(lost),
        "lost_examples": lost[:10],
        "duplicates": {"explained": explained, "unexplained": unexplained, "why": dict(why),
                       "examples": examples[:10]},
        "sessions": {"checked": len(expected), "regressed": len(regressed), "examples": regressed[:10]},
        "per_webhook": {
            "dynamodb_write_requests": round(writes / webhooks, 3),
            "dynamodb_read_requests": round(reads / webhooks, 3),
            "sqs_requests_functions": round(sqs_own / webhooks, 3),
            "sqs_requests_pollers": round(sqs_esm / webhooks, 3),
            "s3_puts": round(fn.get("s3.PutObject", 0) / webhooks, 3),
            "largest_item_bytes_approx": largest,
        },
        "counts": c,
        # Relative to the emulator's own SQS sends per second (report["emulator_sends_per_s"]): how much
        # of what the emulator can serve the pipeline turns into delivered events.
        "throughput": {"events_per_s": round(len(accepted) / seconds, 2)},
        "lag_ms": {d: {"p50": round(percentile(v, 50) or 0), "p99": round(percentile(v, 99) or 0), "n": len(v)}
                   for d, v in lag.items()},
    }


def print_report(r: dict) -> None:
    print("\n================ fault-injection run ================")
    for k in ("events", "rate_per_s", "requests", "accepted_requests", "unique_events", "delivered", "dead_lettered",
              "ingest_dlq", "parked_in_ingest_dlq", "lost",
              "duplicates", "sessions", "per_webhook", "throughput", "emulator_sends_per_s", "lag_ms", "timing",
              "receiver_storm", "consumer_storm", "notes"):
        if k in r:
            v = r[k]
            if isinstance(v, dict):
                v = {kk: vv for kk, vv in v.items() if kk != "examples"}
            print(f"{k:>22}: {json.dumps(v)}")


if __name__ == "__main__":
    sys.exit(main())
