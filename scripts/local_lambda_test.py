#!/usr/bin/env python3
"""Tests of the local Lambda emulation itself (scripts/local_lambda.py and scripts/esm_runner.py), with
fake functions instead of the relay's (no cargo build; about 40 s). Each check is a Lambda behaviour
the relay's exactly-once reasoning relies on:

  deadline        an event arrives with Lambda-Runtime-Deadline-Ms = invocation start + Timeout
  timeout         at the deadline the invocation fails with Sandbox.Timedout and the process is killed
  exit            a process that dies mid-invocation fails it with Runtime.ExitError; the next
                  invocation gets a new process
  concurrency     invocations run in parallel instances up to the limit; one more is throttled (429)
  kill hook       POST /_local/functions/<fn>/kill?state=busy kills the instance mid-invocation
  http api        a template route gets an API Gateway 2.0 event (routeKey, pathParameters, sourceIp);
                  no route is 404 {"message":"Not Found"}
  esm concurrency the SQS trigger runs min(MaximumConcurrency, cap) batches at once
  esm partial     ReportBatchItemFailures: only the named record comes back; an invalid
                  itemIdentifier fails the whole batch (AWS rules), and the records reach the DLQ
  esm timing      a function Timeout above the queue's visibility timeout is refused, as AWS refuses
                  such an event source mapping

Uses ports chosen free on 127.0.0.1 (not 9000/9102/9103). Prints PASS/FAIL lines and "N passed, M
failed"; exit status 0 only when nothing failed. Run: .venv/bin/python scripts/local_lambda_test.py
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  BatchConcurrency: {Type: Number, Default: 3}
Globals:
  Function:
    Runtime: provided.al2023
    Handler: bootstrap
    Timeout: 3
    MemorySize: 128
    Environment:
      Variables:
        FROM_TEMPLATE: "yes"
Resources:
  EchoFunction:
    Type: AWS::Serverless::Function
    Metadata: {BuildProperties: {Binary: echo}}
    Properties:
      Events:
        Hook: {Type: HttpApi, Properties: {Method: POST, Path: "/hooks/{name}"}}
        Exact: {Type: HttpApi, Properties: {Method: ANY, Path: /hooks/fixed}}
  SleeperFunction:
    Type: AWS::Serverless::Function
    Metadata: {BuildProperties: {Binary: sleeper}}
    Properties:
      Timeout: 2
  BatchFunction:
    Type: AWS::Serverless::Function
    Metadata: {BuildProperties: {Binary: batch}}
    Properties:
      Events:
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt WorkQueue.Arn
            BatchSize: 1
            FunctionResponseTypes: [ReportBatchItemFailures]
            ScalingConfig: {MaximumConcurrency: !Ref BatchConcurrency}
  LateFunction:
    Type: AWS::Serverless::Function
    Metadata: {BuildProperties: {Binary: late}}
    Properties:
      Timeout: 5
      Events:
        Short: {Type: SQS, Properties: {Queue: !GetAtt ShortQueue.Arn}}
  WorkQueue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub ${AWS::StackName}-work
      VisibilityTimeout: 20
      RedrivePolicy: {deadLetterTargetArn: !GetAtt WorkDLQ.Arn, maxReceiveCount: 2}
  WorkDLQ:
    Type: AWS::SQS::Queue
    Properties: {QueueName: !Sub "${AWS::StackName}-work-dlq"}
  ShortQueue:
    Type: AWS::SQS::Queue
    Properties: {QueueName: !Sub "${AWS::StackName}-short", VisibilityTimeout: 4}
"""

# One fake runtime for every function: a Lambda Runtime API client loop whose behaviour the event
# chooses. It records each invocation's start and end (for the concurrency checks).
FAKE = textwrap.dedent('''\
    #!{py}
    import json, os, sys, time, urllib.request
    api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
    trace = os.environ.get("TRACE_FILE")
    while True:
        with urllib.request.urlopen(api + "/invocation/next", timeout=3600) as r:
            rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
            deadline = int(r.headers["Lambda-Runtime-Deadline-Ms"])
            event = json.loads(r.read() or b"null")
        started = time.time()
        out = {{"pid": os.getpid(), "deadline_ms": deadline, "now_ms": int(started * 1000),
               "function": os.environ["AWS_LAMBDA_FUNCTION_NAME"], "from_template": os.environ.get("FROM_TEMPLATE"),
               "memory": os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")}}
        if isinstance(event, dict) and "Records" in event:
            failures = []
            for rec in event["Records"]:
                body = rec["body"]
                if body.startswith("slow"):
                    time.sleep(1.0)
                if body.startswith("fail"):
                    failures.append({{"itemIdentifier": rec["messageId"]}})
                if body.startswith("bad-id"):
                    failures.append({{"itemIdentifier": ""}})
            out = {{"batchItemFailures": failures}}
        elif isinstance(event, dict) and "routeKey" in event:
            out = {{"statusCode": 201, "headers": {{"x-route": event["routeKey"]}},
                   "body": json.dumps({{"pathParameters": event.get("pathParameters"), "rawPath": event["rawPath"],
                                       "sourceIp": event["requestContext"]["http"]["sourceIp"],
                                       "xff": event["headers"].get("x-forwarded-for"), "body": event.get("body")}})}}
        else:
            if event.get("exit"):
                os._exit(3)
            time.sleep(event.get("sleep", 0))
        if trace:
            with open(trace, "a") as f:
                f.write(json.dumps({{"start": started, "end": time.time(), "pid": os.getpid()}}) + "\\n")
        req = urllib.request.Request(api + "/invocation/" + rid + "/response", data=json.dumps(out).encode(), method="POST")
        urllib.request.urlopen(req, timeout=10).read()
''')

passed = failed = 0


def result(ok: bool, name: str, detail: str = "") -> None:
    global passed, failed
    if ok:
        passed += 1
        print(f"PASS  {name}", flush=True)
    else:
        failed += 1
        print(f"FAIL  {name}" + (f"\n      {detail}" if detail else ""), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, doc=None, headers=None, timeout=30):
    data = json.dumps(doc).encode() if doc is not None else b""
    req = urllib.request.Request(url, data=data, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def wait_for(fn, timeout: float, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        return state != "Z"
    except OSError:
        return False


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="kyc-relay-lambda-test."))
    procs: list[subprocess.Popen] = []
    (work / "template.yaml").write_text(TEMPLATE)
    bins = work / "bin"
    bins.mkdir()
    for name in ("echo", "sleeper", "batch", "late"):
        f = bins / name
        f.write_text(FAKE.format(py=PY))
        f.chmod(0o755)
    trace = work / "trace.jsonl"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        # moto with the template's queues
        env_file = work / "aws.env"
        up = subprocess.run([PY, str(ROOT / "scripts/local_aws.py"), "up", "--detach", "--template", str(work / "template.yaml"),
                             "--stack-name", "llt", "--env-file", str(env_file), "--pid-file", str(work / "moto.pid"),
                             "--log-file", str(work / "moto.log")], capture_output=True, text=True, timeout=60)
        if up.returncode != 0:
            result(False, "moto starts with the test template's queues", up.stderr[-800:])
            return 1
        (work / "functions.env").write_text(env_file.read_text().replace("export ", "") + f"TRACE_FILE={trace}\n")
        lam = subprocess.Popen(
            [PY, "-u", str(ROOT / "scripts/local_lambda.py"), "--port", str(port), "--template", str(work / "template.yaml"),
             "--env-file", str(work / "functions.env"), "--no-build", "--bin-dir", str(bins), "--concurrency", "3",
             "--state-dir", str(work / "lambda"), "--state-file", str(work / "instances.json"),
             "--function-log", str(work / "functions.log"), "--build-log", str(work / "build.log")],
            stdout=open(work / "lambda.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(lam)

        def status():
            try:
                return json.load(urllib.request.urlopen(f"{base}/_local/status", timeout=2))
            except OSError:
                return None

        if not wait_for(lambda: (status() or {}).get("ready"), 20):
            result(False, "the Lambda service starts", (work / "lambda.log").read_text()[-800:])
            return 1
        invoke = lambda fn, doc, **kw: post(f"{base}/2015-03-31/functions/{fn}/invocations", doc, **kw)  # noqa: E731

        # deadline
        t0 = int(time.time() * 1000)
        code, headers, body = invoke("echo", {})
        doc = json.loads(body)
        delta = doc.get("deadline_ms", 0) - doc.get("now_ms", 0)
        result(code == 200 and 2800 <= delta <= 3000 and doc["deadline_ms"] - t0 <= 3000 + 2000,
               f"deadline: Lambda-Runtime-Deadline-Ms = invocation start + Timeout 3 s ({delta} ms left at the handler)", body[:300].decode())
        result(doc.get("from_template") == "yes" and doc.get("memory") == "128",
               "environment: the template's literal variables and AWS_LAMBDA_FUNCTION_MEMORY_SIZE", body[:300].decode())
        first_pid = doc.get("pid")
        time.sleep(0.3)
        code, headers, body = invoke("echo", {})
        result(json.loads(body).get("pid") == first_pid and alive(first_pid),
               "warm start: the next invocation reuses the idle instance (same process)",
               f"first pid {first_pid}, then {body[:200]}")

        # timeout
        holder: list = []
        t = time.monotonic()
        th = threading.Thread(target=lambda: holder.append(invoke("sleeper", {"sleep": 30})))
        th.start()
        busy = wait_for(lambda: [i for i in (status() or {})["functions"]["sleeper"]["instances"] if i["state"] == "busy"], 2)
        th.join(10)
        took = time.monotonic() - t
        code, headers, body = holder[0] if holder else (0, {}, b"")
        doc = json.loads(body or b"{}")
        result(code == 200 and headers.get("X-Amz-Function-Error") == "Unhandled" and doc.get("errorType") == "Sandbox.Timedout"
               and 1.9 <= took <= 3.5,
               f"timeout: the invocation ends at the 2 s deadline with Sandbox.Timedout ({took:.1f} s)", f"{code} {headers} {body[:200]}")
        pid = busy[0]["pid"] if busy else None
        result(pid is not None and wait_for(lambda: not alive(pid), 2),
               f"timeout: the timed-out process (pid {pid}) is killed", f"busy instances seen: {busy}")

        # exit
        code, headers, body = invoke("echo", {"exit": True})
        doc = json.loads(body or b"{}")
        result(headers.get("X-Amz-Function-Error") == "Unhandled" and doc.get("errorType") == "Runtime.ExitError",
               "exit: a process that dies mid-invocation fails it with Runtime.ExitError", body[:300].decode())
        code, headers, body = invoke("echo", {})
        result(code == 200 and "X-Amz-Function-Error" not in headers, "exit: the next invocation runs in a new process",
               f"{code} {body[:200]}")

        # concurrency + throttle
        results: list = []

        def call(delay):
            results.append(invoke("echo", {"sleep": delay}))

        threads = [threading.Thread(target=call, args=(1.5,)) for _ in range(3)]
        t = time.monotonic()
        for th in threads:
            th.start()
        time.sleep(0.5)
        code4, _, body4 = invoke("echo", {})
        for th in threads:
            th.join(10)
        took = time.monotonic() - t
        pids = {json.loads(b)["pid"] for c, h, b in results if c == 200 and "X-Amz-Function-Error" not in h}
        result(len(pids) == 3 and took < 2.9, f"concurrency: 3 invocations in 3 instances at once ({took:.1f} s for 3 x 1.5 s)",
               f"{results}")
        result(code4 == 429,
               "concurrency: a 4th concurrent invocation is throttled (429) at the limit of 3", f"{code4} {body4[:200]}")

        # kill hook
        holder: list = []
        th = threading.Thread(target=lambda: holder.append(invoke("echo", {"sleep": 2.5})))
        th.start()
        busy = wait_for(lambda: [i for i in (status() or {})["functions"]["echo"]["instances"] if i["state"] == "busy"], 2)
        code, _, body = post(f"{base}/_local/functions/echo/kill?state=busy&signal=KILL")
        killed = json.loads(body).get("killed", [])
        th.join(10)
        c, h, b = holder[0] if holder else (0, {}, b"")
        result(bool(busy) and len(killed) == 1 and json.loads(b or b"{}").get("errorType") == "Runtime.ExitError"
               and not alive(killed[0]["pid"]),
               "kill hook: POST /_local/functions/echo/kill?state=busy kills the instance mid-invocation",
               f"busy {busy}, killed {killed}, invocation {c} {b[:200]}")

        # HTTP API
        req = urllib.request.Request(f"{base}/hooks/abc?x=1", data=b'{"a":1}', method="POST",
                                     headers={"Content-Type": "application/json", "X-Forwarded-For": "203.0.113.7"})
        with urllib.request.urlopen(req, timeout=10) as r:
            doc, route = json.loads(r.read()), r.headers.get("x-route")
            code = r.status
        result(code == 201 and route == "POST /hooks/{name}" and doc["pathParameters"] == {"name": "abc"}
               and doc["sourceIp"] == "127.0.0.1" and doc["xff"] == "203.0.113.7, 127.0.0.1" and doc["body"] == '{"a":1}',
               "http api: route key, path parameters, sourceIp = TCP peer, X-Forwarded-For appended", f"{code} {route} {doc}")
        req = urllib.request.Request(f"{base}/hooks/fixed", data=b"", method="GET")
        with urllib.request.urlopen(req, timeout=10) as r:
            route = r.headers.get("x-route")
        result(route == "ANY /hooks/fixed", "http api: the more specific route wins", str(route))
        code, _, body = post(f"{base}/nowhere", {})
        result(code == 404 and json.loads(body) == {"message": "Not Found"}, "http api: no route is 404 {\"message\":\"Not Found\"}",
               f"{code} {body[:100]}")

        # ESM: concurrency and partial batch responses
        env = dict(l.split("=", 1) for l in (work / "functions.env").read_text().splitlines() if "=" in l)
        session = boto3.session.Session(region_name="eu-central-1", aws_access_key_id="test", aws_secret_access_key="test")
        sqs = session.client("sqs", endpoint_url=env["AWS_ENDPOINT_URL"])
        trace.write_text("")
        for n in range(9):
            sqs.send_message(QueueUrl=env["WORK_QUEUE_URL"], MessageBody=f"slow {n}")
        esm = subprocess.Popen(
            [PY, "-u", str(ROOT / "scripts/esm_runner.py"), "--env-file", str(work / "functions.env"), "--endpoint", base,
             "--template", str(work / "template.yaml"), "--stack-name", "llt", "--map", "WORK_QUEUE_URL=batch",
             "--max-concurrency", "5", "--failure-visibility", "1", "--poll-seconds", "1"],
            stdout=open(work / "esm.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(esm)

        def spans():
            return [json.loads(l) for l in trace.read_text().splitlines() if l.strip()]

        wait_for(lambda: len(spans()) >= 9, 20)
        sp = spans()
        peak = max((sum(1 for o in sp if o["start"] <= s["start"] < o["end"]) for s in sp), default=0)
        result(len(sp) == 9 and peak == 3,
               f"esm concurrency: 9 one-record batches, at most MaximumConcurrency = 3 at once (peak {peak}; cap 5)",
               f"{len(sp)} batches; {(work / 'esm.log').read_text()[-600:]}")

        sqs.send_message(QueueUrl=env["WORK_QUEUE_URL"], MessageBody="fail once")
        sqs.send_message(QueueUrl=env["WORK_QUEUE_URL"], MessageBody="bad-id item")

        def in_dlq():
            got = sqs.receive_message(QueueUrl=env["WORK_DLQ_URL"], MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                      VisibilityTimeout=0).get("Messages", [])
            bodies = sorted(m["Body"] for m in got)
            return bodies if bodies == ["bad-id item", "fail once"] else None

        got = wait_for(in_dlq, 25, 0.5)
        log = (work / "esm.log").read_text()
        result(bool(got) and "invalid itemIdentifier ''" in log,
               "esm partial: a reported failure and an invalid itemIdentifier (whole batch failed) come back, then reach the DLQ",
               f"dlq: {got}; esm.log: {log[-800:]}")

        # ESM timing rule: LateFunction (Timeout 5) on ShortQueue (VisibilityTimeout 4)
        bad = subprocess.run(
            [PY, str(ROOT / "scripts/esm_runner.py"), "--env-file", str(work / "functions.env"), "--endpoint", base,
             "--template", str(work / "template.yaml"), "--stack-name", "llt", "--map", "SHORT_QUEUE_URL=late"],
            capture_output=True, text=True, timeout=30)
        result(bad.returncode != 0 and "AWS refuses this mapping" in bad.stderr,
               "esm timing: a function Timeout above the queue's visibility timeout is refused", bad.stderr[-300:])
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        subprocess.run([PY, str(ROOT / "scripts/local_aws.py"), "down", "--pid-file", str(work / "moto.pid")],
                       capture_output=True, timeout=30)
        left = [l for l in subprocess.run(["pgrep", "-f", f"{work}/lambda/code/"], capture_output=True, text=True).stdout.split()]
        result(not left, "nothing left running", f"pids {left}")
        if failed:
            print(f"      logs kept in {work}")
        else:
            subprocess.run(["rm", "-rf", str(work)])
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
