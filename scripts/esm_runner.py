#!/usr/bin/env python3
"""Local stand-in for Lambda's SQS event source mapping (the "SQS trigger"), which does not exist
outside AWS.

For each (queue, function) pair it does what Lambda's pollers do, with several pollers per pair (one
batch in flight each), as Lambda runs several concurrent batches per queue:
  1. long-poll the queue (ReceiveMessage with every system and message attribute);
  2. gather up to BatchSize records (within MaximumBatchingWindowInSeconds, if the template sets one);
  3. build the Lambda SQS event (Records: messageId, receiptHandle, body, attributes incl.
     ApproximateReceiveCount, messageAttributes, md5OfBody, eventSource aws:sqs, eventSourceARN,
     awsRegion) and invoke the function through the local Lambda Invoke API
     (POST {endpoint}/2015-03-31/functions/<function>/invocations: scripts/local_lambda.py, which
     ends every invocation at the function's deadline as Lambda does);
  4. with ReportBatchItemFailures: delete the records not named in the response's
     {"batchItemFailures": [{"itemIdentifier": <messageId>}]}; without it: delete all;
     if the invocation fails (non-200, X-Amz-Function-Error, an error payload, a timeout) or the
     response is malformed (AWS rules: a null/empty/unknown itemIdentifier, invalid JSON): delete
     nothing.
Records left on the queue come back after the queue's visibility timeout, and after maxReceiveCount
receives SQS moves them to the dead-letter queue (redrive policy from template.yaml, created by
scripts/local_aws.py) -- exactly as in AWS. `--failure-visibility SECONDS` shortens that wait for
local runs (ChangeMessageVisibility on the records left on the queue); by default they are left as
they are.

Batch size, batching window, response types, ScalingConfig.MaximumConcurrency and the function
timeout come from template.yaml: the SQS event of the AWS::Serverless::Function whose
BuildProperties.Binary (or logical ID without "Function", lower-cased) is the function name. Queue
URLs come from an env file written by local_aws.py (variables named after the queues' logical IDs:
IngestQueue -> INGEST_QUEUE_URL).

Concurrency: min(MaximumConcurrency, --max-concurrency) pollers per pair (default cap 5: Lambda starts
with five concurrent batches per SQS queue and scales up from there; two cores do not). Timing checks
made at start, as AWS makes them when the event source mapping is created: a function Timeout above the
queue's VisibilityTimeout is refused; the invocation's HTTP timeout (Timeout + --invoke-grace for a cold
start's init) is kept below the visibility timeout, so a batch still running is never handed out
again. A throttled invocation (429) is retried with backoff while the batch is still invisible, then
left to come back, as Lambda's poller does.

  .venv/bin/python scripts/esm_runner.py --env-file .local/functions.env \\
      --map INGEST_QUEUE_URL=consumer --map DELIVERY_QUEUE_URL=dispatcher --map RETRY_QUEUE_URL=dispatcher
  .venv/bin/python scripts/esm_runner.py --env-file .local/aws.env     # every SQS event in the template

One log line per batch (function, poller, records, failures, ms; the ids of messages received
again). SIGINT/SIGTERM stop it: each poller finishes the receive or invocation it is in (at most
--poll-seconds for a receive) and releases messages it received but did not hand over; a second
signal exits at once. SIGKILL (a fault test) leaves the batches in flight invisible until their
visibility timeout, as a poller lost in AWS does.
Differences from AWS: a fixed number of pollers (no scaling with the backlog), no FilterCriteria, no
backoff when the function keeps failing.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shlex
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_aws import ROOT, Template, snake  # noqa: E402  (same folder, same venv)

DEFAULT_BATCH_SIZE = 10  # SQS event source default
DEFAULT_TIMEOUT = 3  # Lambda's default function timeout (s)


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} esm: {msg}", file=sys.stderr, flush=True)


# --- configuration ---------------------------------------------------------------------------------


def read_env_file(path: str | None) -> dict[str, str]:
    """KEY=VALUE lines, optionally prefixed with `export ` and shell-quoted; # comments."""
    env: dict[str, str] = {}
    if not path:
        return env
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        try:
            parts = shlex.split(value) if value.strip() else [""]
        except ValueError:
            parts = []
        env[key.strip()] = parts[0] if len(parts) == 1 else value.strip()
    return env


@dataclass
class Source:
    """One event source mapping: a queue and the function it triggers."""

    function: str
    queue_var: str
    queue_url: str = ""
    queue_arn: str = ""
    batch_size: int = DEFAULT_BATCH_SIZE
    window_s: float = 0.0
    report_failures: bool = False
    timeout_s: int = DEFAULT_TIMEOUT
    max_concurrency: int | None = None  # ScalingConfig.MaximumConcurrency
    visibility_s: int = 30
    enabled: bool = True
    notes: list[str] = field(default_factory=list)


def _function_resources(tpl: Template) -> dict[str, dict]:
    """Function name (binary) -> resource, for every AWS::Serverless::Function."""
    out = {}
    for lid, res in tpl.resources.items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        binary = ((res.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary")
        name = binary or (lid[: -len("Function")] if lid.endswith("Function") else lid).lower()
        out[name] = res
    return out


def _mappings_of(tpl: Template, functions: dict[str, dict], fn: str) -> list[dict]:
    """The AWS::Lambda::EventSourceMapping resources that trigger function `fn`, as SAM SQS event
    properties (`EventSourceArn` read as `Queue`). The template declares its SQS triggers this way, so
    that no managed policy with Resource "*" is attached."""
    res = functions.get(fn)
    lid = next((k for k, v in tpl.resources.items() if v is res), None)
    out = []
    for m in tpl.resources.values():
        if m.get("Type") != "AWS::Lambda::EventSourceMapping":
            continue
        props = dict(m.get("Properties") or {})
        if _queue_logical_id(props.get("FunctionName")) != lid:
            continue
        props["Queue"] = props.pop("EventSourceArn", None)
        out.append(props)
    return out


def _queue_logical_id(queue_ref) -> str | None:
    """`!GetAtt IngestQueue.Arn` (as loaded by local_aws's loader) -> IngestQueue."""
    if isinstance(queue_ref, dict) and "Fn::GetAtt" in queue_ref:
        return queue_ref["Fn::GetAtt"][0]
    if isinstance(queue_ref, dict) and "Ref" in queue_ref:
        return queue_ref["Ref"]
    return None


def _int(tpl: Template, value, default):
    if value is None:
        return default
    try:
        return int(tpl.resolve(value))
    except (KeyError, TypeError, ValueError):
        return default


def sources_from_template(tpl: Template, wanted: list[tuple[str | None, str]]) -> list[Source]:
    """wanted: (queue env var or None, function). None = every SQS event of that function; an empty
    list = every SQS event in the template."""
    functions = _function_resources(tpl)
    global_timeout = ((tpl.doc.get("Globals") or {}).get("Function") or {}).get("Timeout")
    if not wanted:
        wanted = [(None, name) for name in functions]
    result = []
    for queue_var, fn in wanted:
        res = functions.get(fn)
        props = (res or {}).get("Properties") or {}
        timeout = _int(tpl, props.get("Timeout", global_timeout), DEFAULT_TIMEOUT)
        sqs_events = [
            e.get("Properties") or {} for e in (props.get("Events") or {}).values() if e.get("Type") == "SQS"
        ] + _mappings_of(tpl, functions, fn)
        matched = []
        for ev in sqs_events:
            lid = _queue_logical_id(ev.get("Queue"))
            var = f"{snake(lid)}_URL" if lid else None
            if queue_var is None or var == queue_var:
                matched.append((var, ev))
        if queue_var is not None and not matched:
            # An explicit mapping the template does not declare: AWS defaults, and say so.
            note = f"no SQS event for {queue_var} on function {fn!r} in the template: AWS defaults"
            result.append(Source(function=fn, queue_var=queue_var, timeout_s=timeout, notes=[note]))
            continue
        for var, ev in matched:
            if var is None:
                continue
            s = Source(function=fn, queue_var=var, timeout_s=timeout)
            s.batch_size = _int(tpl, ev.get("BatchSize"), DEFAULT_BATCH_SIZE)
            s.window_s = float(_int(tpl, ev.get("MaximumBatchingWindowInSeconds"), 0))
            types = tpl.resolve(ev.get("FunctionResponseTypes") or [])
            s.report_failures = "ReportBatchItemFailures" in types
            s.enabled = tpl.resolve(ev.get("Enabled", True)) not in (False, "false", "False")
            s.max_concurrency = _int(tpl, (ev.get("ScalingConfig") or {}).get("MaximumConcurrency"), None)
            if ev.get("FilterCriteria"):
                s.notes.append("FilterCriteria is not emulated: every record is delivered")
            result.append(s)
    return result


# --- the event -------------------------------------------------------------------------------------


def _message_attributes(attrs: dict) -> dict:
    """SQS API shape -> Lambda event shape."""
    out = {}
    for name, a in (attrs or {}).items():
        out[name] = {
            "stringValue": a.get("StringValue"),
            "binaryValue": base64.b64encode(a["BinaryValue"]).decode() if "BinaryValue" in a else None,
            "stringListValues": a.get("StringListValues", []),
            "binaryListValues": [base64.b64encode(b).decode() for b in a.get("BinaryListValues", [])],
            "dataType": a.get("DataType", "String"),
        }
    return out


def build_event(messages: list[dict], source: Source, region: str) -> dict:
    records = []
    for m in messages:
        a = m.get("Attributes", {})
        attributes = {
            k: a[k]
            for k in (
                "ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp",
                "AWSTraceHeader", "SequenceNumber", "MessageGroupId", "MessageDeduplicationId",
                "DeadLetterQueueSourceArn",
            )
            if k in a
        }
        records.append({
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m.get("Body", ""),
            "attributes": attributes,
            "messageAttributes": _message_attributes(m.get("MessageAttributes")),
            "md5OfBody": m.get("MD5OfBody"),
            **({"md5OfMessageAttributes": m["MD5OfMessageAttributes"]} if "MD5OfMessageAttributes" in m else {}),
            "eventSource": "aws:sqs",
            "eventSourceARN": source.queue_arn,
            "awsRegion": region,
        })
    return {"Records": records}


def failed_ids(payload: bytes, ids: set[str], report_failures: bool) -> tuple[set[str], str | None]:
    """Record ids to leave on the queue, by AWS's partial batch response rules; plus why the whole
    batch counts as failed, if it does."""
    if not report_failures:
        return set(), None
    text = payload.decode("utf-8", "replace").strip()
    if not text or text == "null":
        return set(), None
    try:
        response = json.loads(text)
    except ValueError:
        return set(ids), "invalid JSON response"
    if not isinstance(response, dict):
        return set(), None  # not an event response: nothing reported
    failures = response.get("batchItemFailures")
    if failures is None:
        return set(), None
    if not isinstance(failures, list):
        return set(ids), "batchItemFailures is not a list"
    out = set()
    for f in failures:
        item = f.get("itemIdentifier") if isinstance(f, dict) else None
        if not isinstance(item, str) or not item or item not in ids:
            return set(ids), f"invalid itemIdentifier {item!r}"
        out.add(item)
    return out, None


# --- the poller ------------------------------------------------------------------------------------


class Throttled(Exception):
    pass


class Poller(threading.Thread):
    def __init__(self, source: Source, sqs, args, region: str, stop: threading.Event, index: int = 1):
        super().__init__(name=f"esm-{source.function}-{index}", daemon=True)
        self.s = source
        self.sqs = sqs
        self.args = args
        self.region = region
        self.stop_event = stop
        self.tag = f"{source.function}#{index}"
        self.invoke_url = f"{args.endpoint.rstrip('/')}/2015-03-31/functions/{source.function}/invocations"
        self.invoke_timeout = invoke_timeout(source, args)

    def receive(self, max_count: int, wait: int) -> list[dict]:
        return self.sqs.receive_message(
            QueueUrl=self.s.queue_url,
            MaxNumberOfMessages=max(1, min(10, max_count)),
            WaitTimeSeconds=wait,
            AttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])

    def gather(self) -> list[dict]:
        """One batch: the first receive long-polls; then, within the batching window, more receives
        until BatchSize records are gathered."""
        batch = self.receive(self.s.batch_size, self.args.poll_seconds)
        if not batch or self.s.window_s <= 0:
            return batch
        deadline = time.monotonic() + self.s.window_s
        while len(batch) < self.s.batch_size and not self.stop_event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            batch += self.receive(self.s.batch_size - len(batch), min(int(left), self.args.poll_seconds))
        return batch

    def set_visibility(self, messages: list[dict], seconds: int) -> None:
        for i in range(0, len(messages), 10):
            chunk = messages[i:i + 10]
            out = self.sqs.change_message_visibility_batch(
                QueueUrl=self.s.queue_url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": seconds}
                    for n, m in enumerate(chunk)
                ],
            )
            for f in out.get("Failed", []):
                log(f"{self.s.function}: ChangeMessageVisibility failed: {f.get('Code')} {f.get('Message')}")

    def delete(self, messages: list[dict]) -> None:
        for i in range(0, len(messages), 10):
            chunk = messages[i:i + 10]
            out = self.sqs.delete_message_batch(
                QueueUrl=self.s.queue_url,
                Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(chunk)],
            )
            for f in out.get("Failed", []):
                log(f"{self.s.function}: DeleteMessage failed: {f.get('Code')} {f.get('Message')}")

    def invoke(self, event: dict) -> tuple[bytes | None, str | None]:
        """(payload, None) on success; (payload or None, error) when the invocation failed."""
        request = urllib.request.Request(
            self.invoke_url,
            data=json.dumps(event).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "X-Amz-Invocation-Type": "RequestResponse"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.invoke_timeout) as response:
                payload = response.read()
                function_error = response.headers.get("X-Amz-Function-Error")
        except urllib.error.HTTPError as e:
            body = e.read()
            if e.code == 429:
                raise Throttled(body[:200].decode("utf-8", "replace")) from None
            return body, f"HTTP {e.code}: {body[:300].decode('utf-8', 'replace')}"
        except (urllib.error.URLError, OSError) as e:
            return None, f"invoke failed: {getattr(e, 'reason', e)}"
        if function_error:
            return payload, f"function error ({function_error}): {payload[:300].decode('utf-8', 'replace')}"
        try:
            doc = json.loads(payload or b"null")
        except ValueError:
            doc = None
        if isinstance(doc, dict) and "errorType" in doc and "batchItemFailures" not in doc:
            return payload, f"function error: {doc.get('errorType')}: {str(doc.get('errorMessage'))[:300]}"
        return payload, None

    def invoke_unthrottled(self, event: dict, received: float) -> tuple[bytes | None, str | None]:
        """Lambda's poller retries a throttled invocation while the batch is still its own (invisible);
        after that the records come back to the queue on their own."""
        delay = 0.2
        while True:
            try:
                return self.invoke(event)
            except Throttled as e:
                budget = received + self.s.visibility_s - self.invoke_timeout - time.monotonic()
                if budget <= delay or self.stop_event.is_set():
                    return None, f"throttled (429) until the batch's visibility timeout: {e}"
                self.stop_event.wait(delay)
                delay = min(delay * 2, 5.0)

    def handle(self, messages: list[dict], received: float) -> None:
        started = time.monotonic()
        ids = {m["MessageId"] for m in messages}
        payload, error = self.invoke_unthrottled(build_event(messages, self.s, self.region), received)
        if error is None:
            failed, whole = failed_ids(payload or b"", ids, self.s.report_failures)
            if whole:
                error = f"batch response rejected ({whole})"
        if error is not None:
            failed = ids
        done = [m for m in messages if m["MessageId"] not in failed]
        left = [m for m in messages if m["MessageId"] in failed]
        if done:
            self.delete(done)
        if left and self.args.failure_visibility is not None:
            self.set_visibility(left, self.args.failure_visibility)
        ms = int((time.monotonic() - started) * 1000)
        count = {m["MessageId"]: m.get("Attributes", {}).get("ApproximateReceiveCount", "?") for m in messages}
        receives = ",".join(sorted(set(count.values())))
        line = (f"{self.s.function}: {len(messages)} records, {len(left)} failed, {ms} ms, poller {self.tag}"
                f" (queue {self.s.queue_url.rsplit('/', 1)[-1]}, receive count {receives})")
        if error:
            line += f"; invocation failed, nothing deleted: {error}"
        again = [i for i, n in count.items() if n not in ("1", "?")]
        if again:
            # Messages received before (a failed invocation, a poller that died holding them): their
            # ids let a repeat at a destination be traced to the copy that caused it.
            line += f"; received again: {' '.join(again)}"
        log(line)

    def run(self) -> None:
        backoff = 1.0
        while not self.stop_event.is_set():
            try:
                received = time.monotonic()
                messages = self.gather()
                backoff = 1.0
            except Exception as e:  # emulator down or restarting: keep trying, quietly bounded
                log(f"{self.s.function}: receive failed: {e}")
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 10)
                continue
            if not messages:
                continue
            if self.stop_event.is_set():
                # Stopping: hand the messages back at once instead of stranding them for the
                # visibility timeout.
                try:
                    self.set_visibility(messages, 0)
                except Exception as e:
                    log(f"{self.s.function}: could not release {len(messages)} messages: {e}")
                break
            try:
                self.handle(messages, received)
            except Exception as e:
                log(f"{self.s.function}: batch handling failed ({e}); the records stay on the queue")


# --- main ------------------------------------------------------------------------------------------


def invoke_timeout(source: Source, args) -> float:
    """The poller's HTTP timeout for one invocation: a backstop (the Lambda service ends an invocation
    at its deadline), kept below the visibility timeout so a batch still being processed is never
    handed out a second time."""
    wanted = args.invoke_timeout or source.timeout_s + args.invoke_grace
    return min(wanted, max(1.0, source.visibility_s - 1.0))


def check_timing(source: Source, args) -> str | None:
    """AWS's rules for an SQS event source, checked before polling (the reason, or None)."""
    if source.timeout_s > source.visibility_s:
        # CreateEventSourceMapping refuses this: a batch could still run when its records reappear.
        return (f"the function timeout ({source.timeout_s} s) exceeds the visibility timeout of "
                f"{source.queue_url.rsplit('/', 1)[-1]} ({source.visibility_s} s); AWS refuses this mapping")
    return None



def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-file", help="KEY=VALUE file with the queue URLs and AWS_ENDPOINT_URL "
                   "(e.g. .local/functions.env or .local/aws.env); the process environment fills gaps")
    p.add_argument("--map", action="append", default=[], metavar="QUEUE_URL_VAR=FUNCTION",
                   help="trigger FUNCTION from the queue whose URL is in QUEUE_URL_VAR (repeatable)")
    p.add_argument("--function", action="append", default=[], metavar="FUNCTION",
                   help="every SQS event of FUNCTION in the template (repeatable)")
    p.add_argument("--endpoint", default="http://127.0.0.1:9000", help="local Lambda Invoke API base URL")
    p.add_argument("--template", default=str(ROOT / "template.yaml"))
    p.add_argument("--stack-name", default="kyc-relay")
    p.add_argument("--poll-seconds", type=int, default=2,
                   help="WaitTimeSeconds of each long poll, 1-20 (default 2). Lambda uses 20; a short "
                        "poll keeps shutdown responsive and picks messages up just as fast")
    p.add_argument("--failure-visibility", type=int, default=None, metavar="SECONDS",
                   help="set the visibility timeout of records left on the queue (failed records, "
                        "failed invocations) to SECONDS, so redelivery and redrive to the DLQ happen "
                        "sooner than the queue's own timeout; default: leave them as they are")
    p.add_argument("--invoke-timeout", type=float, default=None, metavar="SECONDS",
                   help="HTTP timeout of an invocation (default: the function's Timeout + --invoke-grace); "
                        "a backstop: the Lambda service itself ends an invocation at its deadline")
    p.add_argument("--invoke-grace", type=float, default=15,
                   help="added to the function's Timeout for a cold start's init (at most 10 s in Lambda) "
                        "and the HTTP round trip (default 15)")
    p.add_argument("--max-concurrency", type=int, default=5,
                   help="pollers (concurrent batches) per queue: min(ScalingConfig.MaximumConcurrency, this); "
                        "default 5, Lambda's starting concurrency for an SQS queue")
    args = p.parse_args()
    if not 1 <= args.poll_seconds <= 20:
        p.error("--poll-seconds must be 1-20")
    if args.failure_visibility is not None and not 0 <= args.failure_visibility <= 43200:
        p.error("--failure-visibility must be 0-43200")
    if args.max_concurrency < 1:
        p.error("--max-concurrency must be at least 1")

    env = dict(os.environ) | read_env_file(args.env_file)
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "eu-central-1"
    endpoint = env.get("AWS_ENDPOINT_URL_SQS") or env.get("AWS_ENDPOINT_URL")
    if not endpoint:
        p.error("AWS_ENDPOINT_URL is not set (in --env-file or the environment): refusing to poll real AWS")

    wanted: list[tuple[str | None, str]] = []
    for m in args.map:
        var, sep, fn = m.partition("=")
        if not sep or not var or not fn:
            p.error(f"--map {m!r}: expected QUEUE_URL_VAR=FUNCTION")
        wanted.append((var, fn))
    wanted += [(None, fn) for fn in args.function]
    tpl = Template(Path(args.template), args.stack_name, region)
    sources = sources_from_template(tpl, wanted)
    if not sources:
        p.error("no SQS event source found (template has none, or --function names none)")

    session = boto3.session.Session(
        region_name=region,
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY", "test"),
    )
    stop = threading.Event()
    pollers = []
    for s in sources:
        if not s.enabled:
            log(f"{s.function}: event source for {s.queue_var} is disabled in the template; skipped")
            continue
        s.queue_url = env.get(s.queue_var, "")
        if not s.queue_url:
            p.error(f"{s.queue_var} is not set (in --env-file or the environment)")
        # One client per thread (boto3 clients are thread-safe, but separate pools keep one slow
        # long poll from holding another's connection).
        sqs = session.client("sqs", endpoint_url=endpoint,
                             config=Config(read_timeout=args.poll_seconds + 30, retries={"max_attempts": 3},
                                           user_agent_extra="esm-runner"))
        attrs = sqs.get_queue_attributes(QueueUrl=s.queue_url, AttributeNames=["QueueArn", "VisibilityTimeout"])["Attributes"]
        s.queue_arn = attrs["QueueArn"]
        s.visibility_s = int(attrs.get("VisibilityTimeout", 30))
        problem = check_timing(s, args)
        if problem:
            p.error(f"{s.function}: {problem}")
        if invoke_timeout(s, args) < s.timeout_s + min(args.invoke_grace, 10):
            log(f"{s.function}: the visibility timeout ({s.visibility_s} s) leaves less than a cold start's init "
                f"beyond the function timeout ({s.timeout_s} s): invoke timeout {invoke_timeout(s, args):g} s "
                "(AWS recommends 6 x the function timeout)")
        for note in s.notes:
            log(f"{s.function}: {note}")
        n = max(1, min(s.max_concurrency or args.max_concurrency, args.max_concurrency))
        log(f"{s.queue_url.rsplit('/', 1)[-1]} -> {s.function}: batch size {s.batch_size}, window "
            f"{s.window_s:g} s, {'ReportBatchItemFailures' if s.report_failures else 'whole-batch results'}, "
            f"{n} pollers (MaximumConcurrency {s.max_concurrency or 'unset'}, cap {args.max_concurrency}), "
            f"timeout {s.timeout_s} s, invoke timeout {invoke_timeout(s, args):g} s < visibility {s.visibility_s} s, "
            f"failure visibility {'queue default' if args.failure_visibility is None else f'{args.failure_visibility} s'}")
        for i in range(1, n + 1):
            # One client per poller: separate connection pools, so one long poll never waits for another.
            client = sqs if i == 1 else session.client(
                "sqs", endpoint_url=endpoint, config=Config(read_timeout=args.poll_seconds + 30, retries={"max_attempts": 3},
                                           user_agent_extra="esm-runner"))
            pollers.append(Poller(s, client, args, region, stop, i))

    signals = []

    def on_signal(signum, _frame):
        signals.append(signum)
        if len(signals) > 1:
            log("second signal: exiting now")
            os._exit(130)
        log(f"{signal.Signals(signum).name}: stopping (finishing batches in flight)")
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for t in pollers:
        t.start()
    log(f"running {len(pollers)} poller(s) against {args.endpoint} (pid {os.getpid()}); Ctrl-C stops")
    while not stop.is_set():
        stop.wait(0.5)
        if not any(t.is_alive() for t in pollers):
            break
    for t in pollers:
        t.join()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
