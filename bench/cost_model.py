#!/usr/bin/env python3
"""Cost per million webhooks at AWS list prices (us-east-1), from measured per-webhook counts.

Standard library only: `python3 bench/cost_model.py [--receiver-ms 20 --consumer-batch-ms 60 ...]`.

Counts per webhook (measured by tests/tests/cost.rs, `scripts/test.sh -p integration-tests --test cost
-- --nocapture`): 3.0 DynamoDB write units, 1.0 strongly consistent read unit, 1.5 SQS requests (1.1
own + 0.4 event source mapping, modelled at batch 10 on two queues).
Lambda: one receiver invocation per webhook, one consumer and one dispatcher invocation per batch of
10; durations are inputs (see BENCHMARKS.md for what was measured and what is assumed).

PRICES are list prices as assumed on the date in BENCHMARKS.md (first pricing tier, no free tier,
no Savings Plans); check https://aws.amazon.com/pricing before relying on them.
"""

from __future__ import annotations

import argparse
import math

PRICES = {
    "apigw_http_per_million": 1.00,  # HTTP API, first 300 M requests/month
    "lambda_requests_per_million": 0.20,
    "lambda_arm64_gb_second": 0.0000133334,  # first pricing tier
    "ddb_ondemand_wru_per_million": 0.625,
    "ddb_ondemand_rru_per_million": 0.125,
    "sqs_standard_per_million": 0.40,  # after the first 1 M/month
}

COUNTS = {"wru": 3.0, "rru": 1.0, "sqs": 1.5}


def lambda_cost(invocations: float, billed_ms: float, memory_mb: int) -> tuple[float, float]:
    requests = invocations * PRICES["lambda_requests_per_million"]
    gb_s = invocations * 1e6 * math.ceil(billed_ms) / 1000 * memory_mb / 1024
    return requests, gb_s * PRICES["lambda_arm64_gb_second"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memory-mb", type=int, default=256)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--receiver-ms", type=float, default=20.0, help="billed duration per receiver invocation")
    ap.add_argument("--consumer-batch-ms", type=float, default=60.0, help="billed duration per consumer batch")
    ap.add_argument("--dispatcher-batch-ms", type=float, default=150.0, help="billed duration per dispatcher batch")
    args = ap.parse_args()

    lines = [("API Gateway HTTP API", 1.0 * PRICES["apigw_http_per_million"])]
    total_req = total_dur = 0.0
    for name, inv, ms in [
        ("receiver", 1.0, args.receiver_ms),
        ("consumer", 1.0 / args.batch, args.consumer_batch_ms),
        ("dispatcher", 1.0 / args.batch, args.dispatcher_batch_ms),
    ]:
        req, dur = lambda_cost(inv, ms, args.memory_mb)
        total_req += req
        total_dur += dur
        lines.append((f"Lambda {name}: {inv:g} invocations x {math.ceil(ms):.0f} ms at {args.memory_mb} MB", req + dur))
    lines.append((f"DynamoDB on-demand: {COUNTS['wru']:g} WRU", COUNTS["wru"] * PRICES["ddb_ondemand_wru_per_million"]))
    lines.append((f"DynamoDB on-demand: {COUNTS['rru']:g} RRU (strongly consistent, <= 4 KB)",
                  COUNTS["rru"] * PRICES["ddb_ondemand_rru_per_million"]))
    lines.append((f"SQS standard: {COUNTS['sqs']:g} requests", COUNTS["sqs"] * PRICES["sqs_standard_per_million"]))

    print("prices (USD, us-east-1, assumed list prices):")
    for k, v in PRICES.items():
        print(f"  {k} = {v}")
    print(f"per million webhooks (Lambda requests ${total_req:.3f}, duration ${total_dur:.3f}):")
    for name, usd in lines:
        print(f"  {name:<62} ${usd:7.3f}")
    print(f"  {'total':<62} ${sum(u for _, u in lines):7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
