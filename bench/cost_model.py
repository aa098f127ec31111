#!/usr/bin/env python3
"""Cost per million webhooks at AWS list prices (us-east-1), from measured per-webhook counts.

Standard library only: `python3 bench/cost_model.py [--receiver-ms 20 --consumer-batch-ms 60 ...]`.
Prints the total without the event archive and with it (ArchiveBucket on, the template's default).

Counts per webhook, one destination (measured and asserted by tests/tests/cost.rs:
`scripts/with-local-aws.sh cargo test -p integration-tests --test cost -- --nocapture`):
  2.0 DynamoDB write units (the claim and the delivery's outcome, items < 1 KB, no transactions),
  1.1 strongly consistent read units (the dispatcher's Query, <= 4 KB; 0.1 a consumer's re-read),
  1.5 SQS requests (1.1 own: the receiver's SendMessage and the consumer's SendMessageBatch per 10;
      0.4 by the event source mappings: ReceiveMessage + DeleteMessageBatch per batch of 10, 2 queues),
  0.1 S3 PUT with the archive (one JSON Lines object per consumer batch of 10).
Lambda: one receiver invocation per webhook, one consumer and one dispatcher invocation per batch;
durations and memory sizes are inputs (BENCHMARKS.md says which were measured and which assumed).

Every other figure is an assumption, listed in ASSUMPTIONS and printed with the result.
"""

from __future__ import annotations

import argparse
import math

# us-east-1 list prices as assumed on the date in BENCHMARKS.md: first pricing tier, no free tier,
# no Savings Plans. Check the AWS pricing pages before relying on them.
PRICES = {
    "apigw_http_per_million": 1.00,  # HTTP API, first 300 M requests/month
    "lambda_requests_per_million": 0.20,
    "lambda_arm64_gb_second": 0.0000133334,  # first pricing tier
    "ddb_ondemand_wru_per_million": 0.625,
    "ddb_ondemand_rru_per_million": 0.125,
    "sqs_standard_per_million": 0.40,  # after the first 1 M/month
    "s3_put_per_thousand": 0.005,  # S3 Standard PUT/COPY/POST/LIST
    "s3_standard_gb_month": 0.023,  # first 50 TB/month
    # AWS-native destinations: the target's own request charge per delivery (per 64 KB chunk).
    "sqs_fifo_per_million": 0.50,
    "sns_publish_per_million": 0.50,
    "eventbridge_custom_event_per_million": 1.00,
}

# What one delivery costs at the target besides the relay's own calls (which are the same for every
# kind: the attempt is one Lambda share, one Query and one UpdateItem), per 64 KB of body.
DESTINATION_KINDS = {
    "https": 0.0,
    "sqs (standard)": PRICES["sqs_standard_per_million"],
    "sqs (FIFO)": PRICES["sqs_fifo_per_million"],
    "sns": PRICES["sns_publish_per_million"],
    "eventbridge": PRICES["eventbridge_custom_event_per_million"],
}

# Measured by tests/tests/cost.rs (asserted there as upper bounds).
COUNTS = {"wru": 2.0, "rru": 1.1, "sqs": 1.5, "s3_put": 0.1}

ASSUMPTIONS = [
    "list prices above (us-east-1, first tier, no free tier, no Savings Plans)",
    "one destination; a webhook is new (a provider retry costs one more conditional PutItem: 1 WRU, "
    "plus its receiver and API Gateway request)",
    "event source mappings deliver full batches of 10 (at low traffic batches are smaller: more "
    "invocations and SQS requests per webhook; empty long polls are a monthly fixed cost, not modelled)",
    "Lambda durations are billed per invocation rounded up to 1 ms; in AWS the receiver's and the "
    "consumer's durations are mostly waiting on SQS/DynamoDB, not CPU (defaults: see --help)",
    "items under 1 KB (one WRU per write), reads under 4 KB (one RRU per strongly consistent read)",
    "archive: SSE-S3 (no KMS request charges), one object per batch, stored for --archive-days "
    "(the template's ArchiveRetentionDays, 30 by default) then expired by the lifecycle rule (free)",
    "not included: CloudWatch Logs ingestion and storage, KMS, data transfer, alarms, X-Ray",
]


def lambda_cost(invocations: float, billed_ms: float, memory_mb: int) -> tuple[float, float]:
    """(requests, duration) in USD per million webhooks for `invocations` per webhook."""
    requests = invocations * PRICES["lambda_requests_per_million"]
    gb_s = invocations * 1e6 * math.ceil(billed_ms) / 1000 * memory_mb / 1024
    return requests, gb_s * PRICES["lambda_arm64_gb_second"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--receiver-mb", type=int, default=512, help="template.yaml MemorySize of the receiver")
    ap.add_argument("--consumer-mb", type=int, default=256)
    ap.add_argument("--dispatcher-mb", type=int, default=256)
    ap.add_argument("--receiver-ms", type=float, default=20.0,
                    help="billed duration per receiver invocation (assumed: one SendMessage in region)")
    ap.add_argument("--consumer-batch-ms", type=float, default=60.0,
                    help="billed duration per consumer batch (assumed: 10 conditional puts in parallel, one "
                         "S3 PUT, one SendMessageBatch)")
    ap.add_argument("--dispatcher-batch-ms", type=float, default=150.0,
                    help="billed duration per dispatcher batch (assumed: dominated by the destination's latency)")
    ap.add_argument("--archive-bytes", type=int, default=1500,
                    help="archived bytes per webhook (one JSON line: envelope with the raw body; assumed)")
    ap.add_argument("--archive-days", type=float, default=30, help="ArchiveRetentionDays")
    args = ap.parse_args()

    lines = [("API Gateway HTTP API: 1 request", 1.0 * PRICES["apigw_http_per_million"])]
    total_req = total_dur = 0.0
    for name, inv, ms, mb in [
        ("receiver", 1.0, args.receiver_ms, args.receiver_mb),
        ("consumer", 1.0 / args.batch, args.consumer_batch_ms, args.consumer_mb),
        ("dispatcher", 1.0 / args.batch, args.dispatcher_batch_ms, args.dispatcher_mb),
    ]:
        req, dur = lambda_cost(inv, ms, mb)
        total_req += req
        total_dur += dur
        lines.append((f"Lambda {name}: {inv:g} invocations x {math.ceil(ms):.0f} ms at {mb} MB", req + dur))
    lines.append((f"DynamoDB on-demand: {COUNTS['wru']:g} WRU", COUNTS["wru"] * PRICES["ddb_ondemand_wru_per_million"]))
    lines.append((f"DynamoDB on-demand: {COUNTS['rru']:g} RRU (strongly consistent, <= 4 KB)",
                  COUNTS["rru"] * PRICES["ddb_ondemand_rru_per_million"]))
    lines.append((f"SQS standard: {COUNTS['sqs']:g} requests", COUNTS["sqs"] * PRICES["sqs_standard_per_million"]))
    base = sum(u for _, u in lines)

    puts = COUNTS["s3_put"] * 1e6 / 1000 * PRICES["s3_put_per_thousand"]
    gb_months = args.archive_bytes * 1e6 / 1e9 * args.archive_days / 30
    storage = gb_months * PRICES["s3_standard_gb_month"]
    archive = [(f"S3 PUT: {COUNTS['s3_put']:g} per webhook (objects of {args.batch} events)", puts),
               (f"S3 Standard storage: {args.archive_bytes} B x {args.archive_days:g} days", storage)]

    print("prices (USD, us-east-1, assumed list prices):")
    for k, v in PRICES.items():
        print(f"  {k} = {v}")
    print("assumptions:")
    for a in ASSUMPTIONS:
        print(f"  - {a}")
    print(f"per million webhooks (Lambda requests ${total_req:.3f}, duration ${total_dur:.3f}):")
    for name, usd in lines:
        print(f"  {name:<66} ${usd:7.3f}")
    print(f"  {'total without the archive':<66} ${base:7.3f}")
    for name, usd in archive:
        print(f"  {name:<66} ${usd:7.3f}")
    print(f"  {'total with the archive':<66} ${base + puts + storage:7.3f}")
    print("per million deliveries to each destination kind, added at the target (bodies under 64 KB;")
    print("  SNS and EventBridge delivery onwards to their subscribers and rules is billed there):")
    for kind, usd in DESTINATION_KINDS.items():
        print(f"  {kind:<66} ${usd:7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
