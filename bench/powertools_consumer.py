#!/usr/bin/env python3
"""The consumer's workload written the usual Python way, for a CPU and AWS-call comparison.

AWS Lambda Powertools for Python (pinned in bench/requirements.txt): `BatchProcessor` over the SQS
event, `@idempotent_function` keyed on the event id (`{provider}#{event_id}`, payload validated on
`payload_hash`) with `DynamoDBPersistenceLayer` on its own table, the same rank-conditional session
UpdateItem as `kyc_relay::aws::dynamodb::DynamoSessionStore::advance` (re-applied for a duplicate), and one `SendMessageBatch` of
delivery jobs (same JSON shape as `DeliveryJob::first`) per batch, as `Processor::process_batch` does.

Input: the records the Rust bench wrote (`target/bench/consumer-records.json`, written by
`cargo bench -p integration-tests --bench moto -- consumer`), so both process the same bytes.
Runs in-process against the emulator: `AWS_ENDPOINT_URL`, `SESSIONS_TABLE`, `DELIVERY_QUEUE_URL` from
the environment (bench/run.sh provides them); the idempotency table is created here.

Measures, after one warm-up batch: process CPU time (time.process_time, i.e. CLOCK_PROCESS_CPUTIME_ID:
the client only, moto is another process) per event, wall time, and AWS calls per event (botocore
`before-call` hook on both clients).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import boto3
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

ROOT = Path(__file__).resolve().parent.parent
RECORDS = Path(os.environ.get("BENCH_RECORDS", ROOT / "target/bench/consumer-records.json"))
ENDPOINT = os.environ["AWS_ENDPOINT_URL"]
REGION = os.environ.get("AWS_REGION", "eu-central-1")
SESSIONS_TABLE = os.environ["SESSIONS_TABLE"]
DELIVERY_QUEUE_URL = os.environ["DELIVERY_QUEUE_URL"]
IDEMPOTENCY_TABLE = os.environ.get("IDEMPOTENCY_TABLE", f"bench-powertools-idempotency-{uuid.uuid4().hex[:8]}")
DESTINATIONS = ["crm"]  # one destination, no filter (as the Rust bench)
IDEMPOTENCY_TTL_SECS = 7 * 86_400
SESSION_TTL_SECS = 90 * 86_400

# kyc_relay::provider::status (the ranks the workload uses; same table).
TERMINAL_RANK = 1000
RANKS = {
    "incode": {
        "UNKNOWN": 1, "SESSION_STARTED": 10, "SESSION_PROGRESS": 20, "ID_VALIDATION_FINISHED": 30,
        "ID_VALIDATION_FINISHED_SECOND_ID": 31, "POST_PROCESSING_FINISHED": 40,
        "FACE_VALIDATION_FINISHED": 50, "GOVERNMENT_VALIDATION_FINISHED": 60,
        "SESSION_IDENTITY_ENROLLED": 65, "ONBOARDING_FINISHED": 70, "SESSION_PENDING_REVIEW": 80,
        "MANUAL_REVIEW_APPROVED": TERMINAL_RANK, "MANUAL_REVIEW_REJECTED": TERMINAL_RANK,
        "SESSION_SUCCEEDED": TERMINAL_RANK, "SESSION_FAILED": TERMINAL_RANK,
    },
    "idnow": {
        "CREATED": 10, "STARTED": 20, "RUNNING": 20, "COMPLETED": TERMINAL_RANK,
        "ABORTED": TERMINAL_RANK, "EXPIRED": TERMINAL_RANK, "ERROR": TERMINAL_RANK, "FAILED": TERMINAL_RANK,
    },
}

calls: Counter[str] = Counter()


def count_call(event_name: str, **_kwargs) -> None:
    # event_name: before-call.<service>.<Operation>
    _, service, op = event_name.split(".", 2)
    calls[f"{service}.{op}"] += 1


session = boto3.session.Session(region_name=REGION)
ddb = session.client("dynamodb", endpoint_url=ENDPOINT)
sqs = session.client("sqs", endpoint_url=ENDPOINT)
for client in (ddb, sqs):
    client.meta.events.register("before-call", count_call)


def create_idempotency_table() -> None:
    admin = session.client("dynamodb", endpoint_url=ENDPOINT)  # not counted
    admin.create_table(
        TableName=IDEMPOTENCY_TABLE,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    admin.get_waiter("table_exists").wait(TableName=IDEMPOTENCY_TABLE)
    admin.update_time_to_live(
        TableName=IDEMPOTENCY_TABLE,
        TimeToLiveSpecification={"AttributeName": "expiration", "Enabled": True},
    )


class FakeContext:
    """The parts of LambdaContext Powertools reads (in-progress expiry = remaining time)."""

    function_name = "powertools-consumer-bench"
    aws_request_id = "bench"

    def __init__(self, timeout_ms: int = 60_000):
        self.deadline = time.monotonic() * 1000 + timeout_ms

    def get_remaining_time_in_millis(self) -> int:
        return int(self.deadline - time.monotonic() * 1000)


persistence = DynamoDBPersistenceLayer(table_name=IDEMPOTENCY_TABLE, boto3_client=ddb)
config = IdempotencyConfig(
    event_key_jmespath="join('#', [provider, event_id])",
    payload_validation_jmespath="payload_hash",
    raise_on_no_idempotency_key=True,
    expires_after_seconds=IDEMPOTENCY_TTL_SECS,
    # A stored (completed) result comes back through the hook: that is a duplicate, nothing to send.
    response_hook=lambda response, _record: {**response, "duplicate": True},
)


def sha256_hex(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
        h.update(b"\0")
    return h.hexdigest()


def delivery_id(event_key: str, destination: str) -> str:
    return "dlv_" + sha256_hex(event_key.encode(), destination.encode())[:32]


def advance_session(env: dict, now_ms: int) -> bool:
    """DynamoSessionStore::advance: forward only; the same event again fails the condition and
    changes nothing (so a duplicate may re-apply it); of two equal ranks the first recorded stays."""
    rank = RANKS[env["provider"]].get((env.get("status") or "").upper())
    if env.get("session_id") is None or rank is None:
        return True
    try:
        ddb.update_item(
            TableName=SESSIONS_TABLE,
            Key={"pk": {"S": f"{env['provider']}#{env['session_id']}"}},
            UpdateExpression="SET #status = :status, status_rank = :rank, event_id = :event, updated_at = :at, "
            "first_seen_at = if_not_exists(first_seen_at, :at), expires_at = :exp",
            ConditionExpression="attribute_not_exists(pk) OR status_rank < :rank",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":status": {"S": env["status"]},
                ":rank": {"N": str(rank)},
                ":event": {"S": env["event_id"]},
                ":at": {"N": str(now_ms)},
                ":exp": {"N": str(now_ms // 1000 + SESSION_TTL_SECS)},
            },
        )
        return True
    except ddb.exceptions.ConditionalCheckFailedException:
        return False  # session already further


@idempotent_function(data_keyword_argument="envelope", persistence_store=persistence, config=config)
def process_event(envelope: dict) -> dict:
    now_ms = int(time.time() * 1000)
    advance_session(envelope, now_ms)
    key = f"{envelope['provider']}#{envelope['event_id']}"
    return {"delivery_ids": [delivery_id(key, d) for d in DESTINATIONS], "at_ms": now_ms}


# Jobs of the current batch, with the message id that owns each.
pending_jobs: list[tuple[str, dict]] = []


def record_handler(record: SQSRecord) -> None:
    envelope = json.loads(record.body)
    result = process_event(envelope=envelope)
    if result.get("duplicate"):
        # As Processor::process_record: a duplicate re-applies the session update (a no-op unless a
        # crash lost it) and sends nothing.
        advance_session(envelope, int(time.time() * 1000))
        return
    key = f"{envelope['provider']}#{envelope['event_id']}"
    for dest, dlv in zip(DESTINATIONS, result["delivery_ids"]):
        pending_jobs.append((record.message_id, {
            "v": 1, "delivery_id": dlv, "destination_id": dest, "event_key": key, "attempt": 1,
            "cycle_start": 1, "due_at_ms": result["at_ms"], "history": [], "envelope": envelope,
        }))


def send_jobs() -> set[str]:
    """SendMessageBatch in chunks of 10; returns the message ids whose jobs were not accepted."""
    failed: set[str] = set()
    for start in range(0, len(pending_jobs), 10):
        chunk = pending_jobs[start:start + 10]
        entries = [
            {
                "Id": str(i),
                "MessageBody": json.dumps(job, separators=(",", ":")),
                "DelaySeconds": 0,
                "MessageAttributes": {
                    "delivery_id": {"DataType": "String", "StringValue": job["delivery_id"]},
                    "destination": {"DataType": "String", "StringValue": job["destination_id"]},
                    "attempt": {"DataType": "String", "StringValue": str(job["attempt"])},
                },
            }
            for i, (_, job) in enumerate(chunk)
        ]
        try:
            out = sqs.send_message_batch(QueueUrl=DELIVERY_QUEUE_URL, Entries=entries)
            failed.update(chunk[int(f["Id"])][0] for f in out.get("Failed", []))
        except Exception:  # noqa: BLE001 - the whole chunk comes back
            failed.update(owner for owner, _ in chunk)
    pending_jobs.clear()
    return failed


processor = BatchProcessor(event_type=EventType.SQS)


def handler(event: dict, context: FakeContext) -> PartialItemFailureResponse:
    config.register_lambda_context(context)
    pending_jobs.clear()
    with processor(records=event["Records"], handler=record_handler, lambda_context=context):
        processor.process()
    response = processor.response()
    already = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    for owner in sorted(send_jobs() - already):
        response["batchItemFailures"].append({"itemIdentifier": owner})
    return response


def sqs_event(records: list[dict]) -> dict:
    return {"Records": [
        {
            "messageId": r["messageId"],
            "receiptHandle": f"rh-{r['messageId']}",
            "body": r["body"],
            "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1795000000000",
                           "SenderId": "AIDAEXAMPLE", "ApproximateFirstReceiveTimestamp": "1795000000000"},
            "messageAttributes": {},
            "md5OfBody": hashlib.md5(r["body"].encode()).hexdigest(),  # noqa: S324 - SQS's checksum
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:eu-central-1:123456789012:ingest",
            "awsRegion": REGION,
        }
        for r in records
    ]}


def main() -> int:
    doc = json.loads(RECORDS.read_text())
    batch, warmup = doc["batch"], doc["warmup"]
    records = doc["records"]
    create_idempotency_table()
    events = [sqs_event(records[i:i + batch]) for i in range(0, len(records), batch)]
    warm_events, measured = events[: warmup // batch], events[warmup // batch:]
    n = sum(len(e["Records"]) for e in measured)

    for e in warm_events:
        assert handler(e, FakeContext())["batchItemFailures"] == []
    calls.clear()

    cpu0, ru0, t0 = time.process_time(), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for e in measured:
        response = handler(e, FakeContext())
        assert response["batchItemFailures"] == [], response
    wall = time.perf_counter() - t0
    cpu, ru1 = time.process_time() - cpu0, resource.getrusage(resource.RUSAGE_SELF)

    admin_sqs = session.client("sqs", endpoint_url=ENDPOINT)
    attrs = admin_sqs.get_queue_attributes(QueueUrl=DELIVERY_QUEUE_URL, AttributeNames=["All"])["Attributes"]
    depth = sum(int(attrs.get(k, 0)) for k in ("ApproximateNumberOfMessages",
                                               "ApproximateNumberOfMessagesNotVisible",
                                               "ApproximateNumberOfMessagesDelayed"))
    assert depth == len(records), f"one delivery job per event: {depth} != {len(records)}"

    total = sum(calls.values())
    print(f"consumer_cpu (Python {sys.version.split()[0]}, aws-lambda-powertools "
          f"{__import__('aws_lambda_powertools.shared.version', fromlist=['VERSION']).VERSION}, "
          f"boto3 {boto3.__version__}): {n} events in batches of {batch}")
    print(f"  CPU: {cpu * 1e6 / n:.1f} µs/event (user {(ru1.ru_utime - ru0.ru_utime) * 1e6 / n:.1f} + "
          f"sys {(ru1.ru_stime - ru0.ru_stime) * 1e6 / n:.1f}); wall {wall * 1e3 / n:.2f} ms/event "
          f"({wall * 1e3 / len(measured):.1f} ms/batch)")
    print(f"  AWS calls: {total / n:.2f}/event: {dict(sorted(calls.items()))}")
    for op, c in sorted(calls.items()):
        print(f"    {op}: {c / n:.2f}/event")
    return 0


if __name__ == "__main__":
    sys.exit(main())
