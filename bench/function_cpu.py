#!/usr/bin/env python3
"""CPU and instructions per event through the whole function binaries, each beside its floor.

A realistic stream goes through the real release binaries of the three functions, each run as one
Lambda instance behind a fake Lambda Runtime API served here on 127.0.0.1, with moto as AWS
(`AWS_ENDPOINT_URL`; `bench/run.sh cpu` starts it) and 127.0.0.1 HTTP servers as destinations:

  stream      S sessions (default 100), half Incode (session started, progress, three onboarding
              statuses, session succeeded: 6 webhooks), half IDnow (session.created, .started,
              .completed: 3 webhooks, RS256 JWT bodies verified against a JWKS served here); each
              session's webhooks shuffled (out of order), sessions interleaved, and 10 % of the
              webhooks sent again a little later as provider retries (duplicates of settled events)
  receiver    one API Gateway event per webhook -> SendMessage to the ingest queue
  consumer    the ingest messages in SQS events of 10 -> claims, archive objects, delivery jobs
  dispatcher  the delivery jobs (fast lane) in SQS events of 10 -> Query, POST, UpdateItem
  floor       bench/empty-handler (an empty lambda_runtime handler, same release profile) fed the same
              events: the runtime loop and JSON parsing that any function pays per invocation

The consumer and the dispatcher run once with one destination and once with three (every event goes
to every destination), each on a fresh stack of tables, queues and bucket.

CPU is that of the function process only (moto and this script are other processes): the sum of
/proc/<pid>/task/*/schedstat when the first `GET /next` arrives (init), and the process's rusage
(wait4: all threads, exited ones too) after the last response; per event = (rusage - init) / events
handed to it. With --callgrind every run is repeated under `valgrind --tool=callgrind` together with an
init-only run (killed at its first `GET /next`): instructions per event = (Ir(run) - Ir(init)) / events,
which a busy machine does not change. With --profile-bin-dir (binaries with symbols: `cargo build
--profile profiling --bins`) the callgrind runs use those binaries and print callgrind_annotate's top
entries (inclusive) for the consumer and the dispatcher.

Usage (from the repository root, after `cargo build --release --bins && cargo build --release -p empty-handler`: two builds, so the functions get the features they are deployed with):
  bench/run.sh cpu                       # = scripts/with-local-aws.sh .venv/bin/python bench/function_cpu.py
  .venv/bin/python bench/function_cpu.py [--sessions 100] [--callgrind] [--profile-bin-dir target/profiling]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import queue
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import jwt  # PyJWT, in .venv

from cold_start import parse_env_file  # bench/, this script's directory, is on sys.path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "target/bench/cpu"
REGION = "eu-central-1"
ACCOUNT = "123456789012"
INCODE_IP = "54.86.34.156"  # Incode US production, in INCODE_ALLOWED_IPS (incode-all)
IDNOW_IP = "198.51.100.10"  # inside IDNOW_ALLOWED_IPS of config/local.env
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # a test signing secret (Standard Webhooks)


def log(msg: str) -> None:
    print(f"function_cpu: {msg}", file=sys.stderr, flush=True)


LOCAL = parse_env_file(ROOT / "config/local.env")


# --- the stream ----------------------------------------------------------------------------------


def apigw(path: str, body: str, headers: dict[str, str], source_ip: str) -> dict:
    """An API Gateway HTTP API payload 2.0 event, as events/generate.py builds the samples."""
    headers = {k.lower(): v for k, v in headers.items()}
    headers.setdefault("user-agent", "bench-provider/1.0")
    headers["content-length"] = str(len(body.encode()))
    now = int(time.time() * 1000)
    route = "POST /webhooks/incode/{type}" if path.startswith("/webhooks/incode/") else f"POST {path}"
    event = {
        "version": "2.0", "routeKey": route, "rawPath": path, "rawQueryString": "", "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT, "apiId": "abcdef1234",
            "domainName": "abcdef1234.execute-api.eu-central-1.amazonaws.com", "domainPrefix": "abcdef1234",
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                     "userAgent": headers["user-agent"]},
            "requestId": str(uuid.uuid4()), "routeKey": route, "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()), "timeEpoch": now,
        },
        "body": body, "isBase64Encoded": False,
    }
    if path.startswith("/webhooks/incode/"):
        event["pathParameters"] = {"type": path.rsplit("/", 1)[1]}
    return event


def incode_session(rng: random.Random, bearer: str) -> list[dict]:
    iid = "%024x" % rng.getrandbits(96)
    bodies = [
        ("session-started", {"eventType": "SESSION_STARTED", "interviewId": iid}),
        ("session-progress", {"eventType": "SESSION_PROGRESS", "interviewId": iid}),
        ("onboarding-status", {"interviewId": iid, "externalId": f"customer-{iid[:6]}",
                               "onboardingStatus": "ID_VALIDATION_FINISHED"}),
        ("onboarding-status", {"interviewId": iid, "externalId": f"customer-{iid[:6]}",
                               "onboardingStatus": "FACE_VALIDATION_FINISHED"}),
        ("onboarding-status", {"interviewId": iid, "externalId": f"customer-{iid[:6]}",
                               "onboardingStatus": "ONBOARDING_FINISHED"}),
        ("session-succeeded", {"eventType": "SESSION_SUCCEEDED", "interviewId": iid,
                               "identityId": f"id-{iid[:8]}", "loginHint": "hint"}),
    ]
    headers = {"content-type": "application/json",
               LOCAL["INCODE_SHARED_HEADER_NAME"]: LOCAL["INCODE_SHARED_HEADER_VALUE"],
               "authorization": bearer}
    return [apigw(f"/webhooks/incode/{slug}", json.dumps(body), headers, INCODE_IP) for slug, body in bodies]


def idnow_session(rng: random.Random, key, now: int) -> list[dict]:
    sid = f"sess-{rng.getrandbits(48):012x}"
    out = []
    for seq, (name, status) in enumerate(
            [("session.created", "CREATED"), ("session.started", "STARTED"), ("session.completed", "COMPLETED")], 1):
        event = {"eventId": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "eventDeliverId": f"d-{seq}",
                 "eventVersion": "1.0", "eventName": name, "eventSequence": seq,
                 "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), "environment": "test",
                 "payload": {"flowId": "flow-1", "sessionId": sid, "sessionStatus": status}}
        claims = {"iss": LOCAL["IDNOW_JWT_ISSUER"], "aud": LOCAL["IDNOW_JWT_AUDIENCE"], "iat": now,
                  "exp": now + 86_400, "sub": event["eventId"], "data": event}
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "test-key-1"})
        out.append(apigw("/webhooks/idnow", token, {"content-type": "application/jwt"}, IDNOW_IP))
    return out


def stream(sessions: int, duplicates: float, seed: int) -> tuple[list[dict], int]:
    """(API Gateway events in arrival order, number of distinct webhooks)."""
    rng = random.Random(seed)
    now = int(time.time())
    bearer = "Bearer " + jwt.encode(
        {"iss": LOCAL["OAUTH_ISSUER"], "aud": LOCAL["OAUTH_AUDIENCE"], "sub": LOCAL["OAUTH_CLIENT_ID"],
         "iat": now, "exp": now + 86_400, "jti": "bench"}, LOCAL["OAUTH_TOKEN_SIGNING_KEY"], algorithm="HS256")
    key = (ROOT / "events/keys/test-rsa-private.pem").read_bytes()
    per_session = []
    for i in range(sessions):
        events = incode_session(rng, bearer) if i % 2 == 0 else idnow_session(rng, key, now)
        rng.shuffle(events)  # out of order within the session
        per_session.append(events)
    # Interleave sessions: at each step one of the sessions still open sends its next webhook.
    order: list[dict] = []
    open_ = [list(s) for s in per_session]
    while open_:
        s = rng.randrange(len(open_))
        order.append(open_[s].pop(0))
        if not open_[s]:
            open_.pop(s)
    distinct = len(order)
    # Provider retries: a webhook sent again 10 to 60 positions later (its first copy long settled).
    for original in rng.sample(order[:], int(distinct * duplicates)):
        pos = min(len(order), order.index(original) + rng.randint(10, 60))
        order.insert(pos, original)
    return order, distinct


# --- a fake Lambda Runtime API for one process -----------------------------------------------------


def proc_cpu_ns(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a function process killed mid-connection is how every run ends


class RuntimeApi:
    def __init__(self, function_arn: str, timeout_s: int):
        self.pending: queue.Queue = queue.Queue()
        self.results: queue.Queue = queue.Queue()
        self.first_next = threading.Event()
        self.pid = 0
        self.init_cpu_ns = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                if not self.path.endswith("/runtime/invocation/next"):
                    self.send_error(404)
                    return
                if not api.first_next.is_set():
                    api.init_cpu_ns = proc_cpu_ns(api.pid) if api.pid else 0
                    api.first_next.set()
                item = api.pending.get()
                if item is None:
                    self.close_connection = True
                    return
                rid, body = item
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", rid)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + timeout_s * 1000))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", function_arn)
                self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path.split("/")
                kind = parts[-1]  # response | error (invocation), error (init)
                rid = parts[-2] if "invocation" in parts else "init"
                api.results.put((kind, rid, body))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def invoke(self, event: dict, timeout: float) -> dict:
        rid = str(uuid.uuid4())
        self.pending.put((rid, json.dumps(event).encode()))
        kind, got, body = self.results.get(timeout=timeout)
        if kind != "response" or got != rid:
            raise RuntimeError(f"invocation {rid}: {kind} {got}: {body[:2000]!r}")
        return json.loads(body or b"null")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Instance:
    """One execution environment: the binary (optionally under valgrind) behind its Runtime API."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], timeout_s: int, log_path: Path):
        self.name = name
        self.api = RuntimeApi(f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:bench-{name}", timeout_s)
        env = dict(env, AWS_LAMBDA_RUNTIME_API=self.api.address)
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.api.pid = self.proc.pid
        if not self.api.first_next.wait(600):
            raise RuntimeError(f"{name}: no GET /next within 600 s (see {log_path})")
        if not self.api.results.empty():
            raise RuntimeError(f"{name}: init failed: {self.api.results.get()}")
        self.init_cpu_ms = self.api.init_cpu_ns / 1e6

    def invoke(self, event: dict, timeout: float = 600) -> dict:
        return self.api.invoke(event, timeout)

    def stop(self, sig=signal.SIGKILL) -> float:
        """Stops the process; returns its total CPU ms (rusage of all its threads)."""
        os.kill(self.proc.pid, sig)
        _, status, ru = os.wait4(self.proc.pid, 0)
        self.proc.returncode = status
        self.api.pending.put(None)
        self.api.close()
        self.log.close()
        return (ru.ru_utime + ru.ru_stime) * 1000


# --- the pieces around the functions ---------------------------------------------------------------


class Destinations:
    """n HTTP/1.1 keep-alive servers answering 200 to every POST, counting them."""

    def __init__(self, n: int):
        self.count = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    outer.count += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(n)]
        for s in self.servers:
            s.daemon_threads = True
            threading.Thread(target=s.serve_forever, daemon=True).start()
        self.document = json.dumps({"destinations": [
            {"id": f"dest-{i}", "url": f"http://127.0.0.1:{s.server_address[1]}/kyc", "retry_policy": "incode",
             "auth": {"type": "standard_webhooks", "secret": WHSEC}}
            for i, s in enumerate(self.servers)]})

    def close(self):
        for s in self.servers:
            s.shutdown()
            s.server_close()


class Jwks:
    def __init__(self):
        body = (ROOT / "events/keys/jwks.json").read_bytes()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"


def create_stack(endpoint: str, name: str) -> dict[str, str]:
    env_file = Path(tempfile.mkstemp(prefix=f"kyc-relay-{name}.", suffix=".env")[1])
    subprocess.run([str(ROOT / ".venv/bin/python"), str(ROOT / "scripts/local_aws.py"), "create", "--endpoint",
                    endpoint, "--stack-name", name, "--env-file", str(env_file)],
                   check=True, capture_output=True)
    out = parse_env_file(env_file)
    env_file.unlink()
    return out


def drain(sqs, url: str) -> list[dict]:
    out = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"],
                                  MessageAttributeNames=["All"]).get("Messages", [])
        if not got:
            return out
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
        out.extend(got)


def sqs_events(messages: list[dict], queue_url: str, batch: int) -> list[dict]:
    arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue_url.rstrip('/').rsplit('/', 1)[1]}"
    events = []
    for i in range(0, len(messages), batch):
        records = []
        for m in messages[i:i + batch]:
            attrs = m.get("Attributes", {})
            records.append({
                "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": attrs.get("SentTimestamp", "0"),
                               "SenderId": "AIDAEXAMPLE",
                               "ApproximateFirstReceiveTimestamp": attrs.get("SentTimestamp", "0")},
                "messageAttributes": {
                    k: {"stringValue": v.get("StringValue"), "stringListValues": [], "binaryListValues": [],
                        "dataType": v.get("DataType", "String")}
                    for k, v in (m.get("MessageAttributes") or {}).items()},
                "md5OfBody": m.get("MD5OfBody", ""), "eventSource": "aws:sqs", "eventSourceARN": arn,
                "awsRegion": REGION})
        events.append({"Records": records})
    return events


# --- running one function over its events ---------------------------------------------------------

TIMEOUTS = {"receiver": 10, "consumer": 30, "dispatcher": 120, "empty-handler": 30}


def lambda_env(name: str, memory: int = 256) -> dict[str, str]:
    return {
        "AWS_LAMBDA_FUNCTION_NAME": f"bench-{name}", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/bench-{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/12/01/[$LATEST]0123456789abcdef",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand", "AWS_EXECUTION_ENV": "AWS_Lambda_provided.al2023",
        "AWS_SESSION_TOKEN": "test", "LAMBDA_TASK_ROOT": "/var/task", "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "_HANDLER": "bootstrap", "TZ": ":UTC", "LANG": "en_US.UTF-8", "PATH": "/usr/local/bin:/usr/bin/:/bin",
    }


class Measured:
    def __init__(self, name, events, items, init_ms, total_ms, wall_s, responses):
        self.name, self.events, self.items = name, events, items
        self.init_ms, self.total_ms, self.wall_s, self.responses = init_ms, total_ms, wall_s, responses

    @property
    def run_ms(self) -> float:
        return self.total_ms - self.init_ms


def run_function(name: str, binary: Path, env: dict[str, str], events: list[dict], items: int,
                 wrapper: list[str] | None = None, tag: str = "") -> Measured:
    OUT.mkdir(parents=True, exist_ok=True)
    argv = (wrapper or []) + [str(binary)]
    inst = Instance(name, argv, env, TIMEOUTS.get(name, 30), OUT / f"{name}{tag}.log")
    t0 = time.monotonic()
    responses = [inst.invoke(e) for e in events]
    wall = time.monotonic() - t0
    # SIGTERM under valgrind (it writes its output on the way out), SIGKILL otherwise.
    total = inst.stop(signal.SIGTERM if wrapper else signal.SIGKILL)
    return Measured(name, len(events), items, inst.init_cpu_ms, total, wall, responses)


def callgrind_ir(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def callgrind(name: str, binary: Path, env: dict[str, str], events: list[dict], tag: str) -> tuple[int, int, Path]:
    """(Ir of init, Ir of the run after init, callgrind output of the whole run)."""
    outs = []
    for kind, evs in (("init", []), ("run", events)):
        out = OUT / f"callgrind.{name}{tag}.{kind}"
        out.unlink(missing_ok=True)
        wrapper = ["valgrind", "--tool=callgrind", "--quiet", f"--callgrind-out-file={out}"]
        run_function(name, binary, env, evs, 0, wrapper=wrapper, tag=f"{tag}.callgrind-{kind}")
        for _ in range(100):  # valgrind finishes writing after the process is reaped
            if out.exists() and out.stat().st_size:
                break
            time.sleep(0.1)
        outs.append(out)
    ir_init, ir_all = callgrind_ir(outs[0]), callgrind_ir(outs[1])
    return ir_init, ir_all - ir_init, outs[1]


def annotate(path: Path, top: int) -> str:
    res = subprocess.run(["callgrind_annotate", "--inclusive=yes", f"--threshold=100", str(path)],
                         capture_output=True, text=True)
    lines = [l for l in res.stdout.splitlines() if re.match(r"^\s*[\d,]+ \(", l)]
    return "\n".join(lines[:top])


def annotate_self(path: Path, top: int) -> str:
    res = subprocess.run(["callgrind_annotate", "--inclusive=no", f"--threshold=100", str(path)],
                         capture_output=True, text=True)
    lines = [l for l in res.stdout.splitlines() if re.match(r"^\s*[\d,]+ \(", l)]
    return "\n".join(lines[:top])


# --- main ---------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--duplicates", type=float, default=0.10)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--destinations", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--bin-dir", default=str(ROOT / "target/release"))
    ap.add_argument("--callgrind", action="store_true", help="also count instructions under callgrind")
    ap.add_argument("--profile-bin-dir", help="binaries with symbols for the callgrind runs (and a profile)")
    ap.add_argument("--top", type=int, default=25, help="profile lines to print per function")
    ap.add_argument("--json", help="write the figures to this file too")
    args = ap.parse_args()

    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        sys.exit("AWS_ENDPOINT_URL is not set: run through bench/run.sh cpu (starts moto)")
    if args.callgrind and not shutil.which("valgrind"):
        sys.exit("--callgrind needs valgrind")
    bin_dir = Path(args.bin_dir)
    cg_dir = Path(args.profile_bin_dir) if args.profile_bin_dir else bin_dir
    for b in ("receiver", "consumer", "dispatcher", "empty-handler"):
        for d in {bin_dir, cg_dir} if args.callgrind else {bin_dir}:
            if not (d / b).exists():
                sys.exit(f"{d / b} missing: cargo build --release --bins && cargo build --release -p empty-handler (or --profile profiling for {cg_dir})")

    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION)
    jwks = Jwks()
    webhooks, distinct = stream(args.sessions, args.duplicates, args.seed)
    log(f"stream: {len(webhooks)} webhooks ({distinct} distinct, {len(webhooks) - distinct} provider retries) "
        f"from {args.sessions} sessions; batches of {args.batch}")
    base = lambda_env("x") | LOCAL | {"AWS_ENDPOINT_URL": endpoint, "IDNOW_JWKS_URL": jwks.url}
    figures: dict[str, dict] = {}
    profiles: dict[str, Path] = {}

    def record(key: str, m: Measured, per: str, floor: Measured | None, ir: tuple[int, int] | None = None,
               floor_ir: tuple[int, int] | None = None):
        one = {"requests": "request", "events": "event", "deliveries": "delivery"}[per]
        per_item_us = m.run_ms * 1000 / m.items
        f = {"invocations": m.events, per: m.items, "init_cpu_ms": round(m.init_ms, 2),
             "cpu_us_per_" + one: round(per_item_us, 1),
             "cpu_ms_per_invocation": round(m.run_ms / m.events, 3), "wall_s": round(m.wall_s, 2)}
        if floor:
            f["floor_cpu_us_per_" + one] = round(floor.run_ms * 1000 / m.items, 1)
            f["floor_init_cpu_ms"] = round(floor.init_ms, 2)
        if ir:
            f["init_instructions"] = ir[0]
            f["instructions_per_" + one] = round(ir[1] / m.items)
            f["instructions_per_invocation"] = round(ir[1] / m.events)
        if floor_ir:
            f["floor_instructions_per_" + one] = round(floor_ir[1] / m.items)
            f["floor_init_instructions"] = floor_ir[0]
        figures[key] = f
        log(f"{key}: {json.dumps(f)}")

    try:
        # Receiver: every webhook; its ingest messages feed both consumer runs.
        stack = create_stack(endpoint, f"cpu{random.getrandbits(24):06x}")
        env = base | lambda_env("receiver") | stack
        env.pop("AWS_SESSION_TOKEN", None)
        rec = run_function("receiver", bin_dir / "receiver", env, webhooks, len(webhooks))
        bad = [r for r in rec.responses if r.get("statusCode") != 200]
        if bad:
            sys.exit(f"receiver refused {len(bad)} webhooks, e.g. {bad[0]}")
        floor = run_function("empty-handler", bin_dir / "empty-handler", lambda_env("empty-handler"), webhooks,
                             len(webhooks), tag=".receiver")
        ir = fir = None
        if args.callgrind:
            # The callgrind run sends the webhooks again (into this stack's queue: drained below first).
            ingest = drain(sqs, stack["INGEST_QUEUE_URL"])
            ir = callgrind("receiver", cg_dir / "receiver", env, webhooks, ".receiver")[:2]
            fir = callgrind("empty-handler", cg_dir / "empty-handler", lambda_env("empty-handler"), webhooks,
                            ".receiver")[:2]
            drain(sqs, stack["INGEST_QUEUE_URL"])
        else:
            ingest = drain(sqs, stack["INGEST_QUEUE_URL"])
        record("receiver", rec, "requests", floor, ir, fir)
        if len(ingest) != len(webhooks):
            sys.exit(f"{len(ingest)} ingest messages for {len(webhooks)} webhooks")

        for n in args.destinations:
            dests = Destinations(n)
            stack = create_stack(endpoint, f"cpu{random.getrandbits(24):06x}")
            common = base | stack | {"DESTINATIONS_CONFIG": dests.document}
            common.pop("AWS_SESSION_TOKEN", None)
            batches = sqs_events(ingest, stack["INGEST_QUEUE_URL"], args.batch)
            con = run_function("consumer", bin_dir / "consumer", common | lambda_env("consumer"), batches,
                               len(ingest), tag=f".d{n}")
            failed = sum(len(r.get("batchItemFailures") or []) for r in con.responses)
            if failed:
                sys.exit(f"consumer reported {failed} batch item failures (see {OUT}/consumer.d{n}.log)")
            floor = run_function("empty-handler", bin_dir / "empty-handler", lambda_env("empty-handler"), batches,
                                 len(ingest), tag=f".consumer.d{n}")
            jobs = drain(sqs, stack["DELIVERY_QUEUE_URL"])
            if len(jobs) != distinct * n:
                sys.exit(f"{len(jobs)} delivery jobs for {distinct} events x {n} destinations")
            ir = fir = None
            if args.callgrind:
                # Again on a fresh stack: the claims must be new for the same work to happen.
                cg_stack = create_stack(endpoint, f"cpu{random.getrandbits(24):06x}")
                cg_env = common | cg_stack | lambda_env("consumer")
                cg_batches = sqs_events(ingest, cg_stack["INGEST_QUEUE_URL"], args.batch)
                *ir, profiles[f"consumer.d{n}"] = callgrind("consumer", cg_dir / "consumer", cg_env, cg_batches, f".d{n}")
                fir = callgrind("empty-handler", cg_dir / "empty-handler", lambda_env("empty-handler"), cg_batches,
                                f".consumer.d{n}")[:2]
            record(f"consumer, {n} destination{'s' if n > 1 else ''}", con, "events", floor, ir, fir)

            # Dispatcher: the jobs as the fast lane's event source mapping hands them out.
            job_batches = sqs_events(jobs, stack["DELIVERY_QUEUE_URL"], args.batch)
            denv = common | lambda_env("dispatcher")
            dis = run_function("dispatcher", bin_dir / "dispatcher", denv, job_batches, len(jobs), tag=f".d{n}")
            failed = sum(len(r.get("batchItemFailures") or []) for r in dis.responses)
            if failed or dests.count != len(jobs):
                sys.exit(f"dispatcher: {failed} batch item failures, {dests.count} POSTs for {len(jobs)} jobs "
                         f"(see {OUT}/dispatcher.d{n}.log)")
            floor = run_function("empty-handler", bin_dir / "empty-handler", lambda_env("empty-handler"),
                                 job_batches, len(jobs), tag=f".dispatcher.d{n}")
            ir = fir = None
            if args.callgrind:
                # The records of the callgrind consumer run are still PENDING: its jobs are delivered.
                cg_jobs = drain(sqs, cg_stack["DELIVERY_QUEUE_URL"])
                cg_job_batches = sqs_events(cg_jobs, cg_stack["DELIVERY_QUEUE_URL"], args.batch)
                *ir, profiles[f"dispatcher.d{n}"] = callgrind("dispatcher", cg_dir / "dispatcher",
                                                              common | cg_stack | lambda_env("dispatcher"),
                                                              cg_job_batches, f".d{n}")
                fir = callgrind("empty-handler", cg_dir / "empty-handler", lambda_env("empty-handler"),
                                cg_job_batches, f".dispatcher.d{n}")[:2]
            record(f"dispatcher, {n} destination{'s' if n > 1 else ''}", dis, "deliveries", floor, ir, fir)
            dests.close()
    finally:
        jwks.server.shutdown()

    print(f"\nfunction CPU: {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"binaries {bin_dir}" + (f", callgrind on {cg_dir}" if args.callgrind else ""))
    hdr = f"{'run':<28} {'items':>6} {'init ms':>8} {'CPU us/item':>12} {'floor':>7}"
    if args.callgrind:
        hdr += f" {'Ir/item':>10} {'floor Ir':>9} {'init Ir':>11}"
    print(hdr)
    for key, f in figures.items():
        per = next(k for k in f if k.startswith("cpu_us_per_"))
        unit = per.removeprefix("cpu_us_per_")
        line = (f"{key:<28} {f[next(k for k in f if k in ('requests', 'events', 'deliveries'))]:>6} "
                f"{f['init_cpu_ms']:>8.2f} {f[per]:>12.1f} {f.get('floor_cpu_us_per_' + unit, 0):>7.1f}")
        if args.callgrind:
            line += (f" {f.get('instructions_per_' + unit, 0):>10,} {f.get('floor_instructions_per_' + unit, 0):>9,}"
                     f" {f.get('init_instructions', 0):>11,}")
        print(line)
    if args.profile_bin_dir:
        for key, path in profiles.items():
            print(f"\n{key}: callgrind_annotate --inclusive=yes {path} (top {args.top}; init included)")
            print(annotate(path, args.top))
            print(f"\n{key}: self cost (top {args.top})")
            print(annotate_self(path, args.top))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
