#!/usr/bin/env python3
"""A stand-in internal service for local runs: receives the relay's deliveries and shows them.

  .venv/bin/python scripts/demo_destination.py [--port 9103] [--secret whsec_...] [--fail-first N]
                                               [--fail-status 503] [--log FILE]

Prints one line per request: time, method, path, webhook-id, the Standard Webhooks signature check
(valid / invalid: reason / unsigned / not checked: no --secret), a one-line summary of the body
(provider, event_type, event_id of an envelope; eventName / eventId of a raw IDnow event, also inside
a JWT body, decoded WITHOUT verification, only to show it) and the answer. Answers 200
`application/json` `{}`; the first N requests (--fail-first) get --fail-status instead, so the relay's
retries become visible. --log FILE appends each request as one JSON line (time, method, path,
headers, body, webhook_id, signature, summary, status): tests read it.

Signatures are checked with the `standardwebhooks` package (the reference implementation), not with
the relay's own code. Needs the project venv (.venv/bin/python) for that; without the package,
signatures are reported as not checked.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    from standardwebhooks.webhooks import Webhook
except ImportError:  # pragma: no cover - the project venv has it
    Webhook = None

MAX_BODY = 8 * 1024 * 1024


def summarize(body: bytes, content_type: str) -> dict:
    """provider / event_type / event_id (envelope), or the IDnow fields of a raw body."""
    text = body.decode("utf-8", "replace").strip()
    doc = None
    source = "json"
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            return {"kind": "invalid json", "bytes": len(body)}
    elif text.count(".") == 2 and "jwt" in content_type:
        source = "jwt (unverified)"
        try:
            part = text.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
            doc = claims.get("data", claims) if isinstance(claims, dict) else None
        except ValueError:
            return {"kind": "invalid jwt", "bytes": len(body)}
    if not isinstance(doc, dict):
        return {"kind": content_type or "unknown", "bytes": len(body)}
    if "provider" in doc and "event_id" in doc:
        out = {"kind": "envelope", "provider": doc.get("provider"), "event_type": doc.get("event_type"),
               "event_id": doc.get("event_id")}
        if doc.get("session_id"):
            out["session_id"] = doc["session_id"]
        if doc.get("status"):
            out["status"] = doc["status"]
        return out
    if "eventId" in doc or "eventName" in doc:
        return {"kind": f"raw idnow ({source})", "provider": "idnow", "event_type": doc.get("eventName"),
                "event_id": doc.get("eventId")}
    return {"kind": f"raw {source}", "fields": sorted(doc)[:6]}


def one_line(summary: dict) -> str:
    if "event_id" in summary:
        extra = "".join(f" {k}={summary[k]}" for k in ("session_id", "status") if k in summary)
        return f"{summary['kind']}: {summary.get('provider')} {summary.get('event_type')} {summary.get('event_id')}{extra}"
    return ", ".join(f"{k}={v}" for k, v in summary.items())


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.count = 0
        self.webhook = Webhook(args.secret) if args.secret and Webhook else None


def make_handler(state: State):
    class Handler(BaseHTTPRequestHandler):
        server_version = "demo-destination/1"
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):  # our own line per request instead
            pass

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._answer(413, b'{"error":"too large"}')
                return
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            with state.lock:
                state.count += 1
                n = state.count
            status = state.args.fail_status if n <= state.args.fail_first else 200

            if not headers.get("webhook-signature"):
                signature = "unsigned"
            elif state.webhook is None:
                signature = "not checked (no --secret)" if Webhook else "not checked (standardwebhooks missing)"
            else:
                try:
                    state.webhook.verify(body, headers, json_parse=False)
                    signature = "valid"
                except Exception as e:  # WebhookVerificationError, bad base64, non-UTF-8 body
                    signature = f"invalid: {e}"
            summary = summarize(body, headers.get("content-type", ""))
            self._answer(status, b"{}" if status < 400 else b'{"error":"demo failure (--fail-first)"}')

            stamp = time.strftime("%H:%M:%S")
            tag = "" if status == 200 else f"  (failing on purpose: request {n} of the first {state.args.fail_first})"
            line = (f"{stamp} demo-destination: {self.command} {self.path} webhook-id={headers.get('webhook-id', '-')} "
                    f"signature={signature} | {one_line(summary)} -> {status}{tag}\n")
            with state.lock:
                sys.stdout.write(line)
                sys.stdout.flush()
            if state.args.log:
                try:
                    text = body.decode("utf-8")
                    encoded = None
                except UnicodeDecodeError:
                    text, encoded = None, base64.b64encode(body).decode()
                record = {
                    "time": time.time(), "n": n, "method": self.command, "path": self.path,
                    "headers": headers, "body": text, "body_base64": encoded,
                    "webhook_id": headers.get("webhook-id"), "signature": signature,
                    "summary": summary, "status": status,
                }
                with state.lock, open(state.args.log, "a") as f:
                    f.write(json.dumps(record) + "\n")

        do_POST = do_PUT = do_PATCH = do_GET = do_DELETE = _handle

    return Handler


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9103)
    p.add_argument("--secret", help="Standard Webhooks secret (whsec_...) to verify signatures with")
    p.add_argument("--fail-first", type=int, default=0, metavar="N", help="answer --fail-status to the first N requests")
    p.add_argument("--fail-status", type=int, default=503)
    p.add_argument("--log", metavar="FILE", help="append each request as a JSON line to FILE")
    args = p.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("--host must be a loopback address (this is a local demo server)")
    if args.secret and Webhook is None:
        print("demo-destination: standardwebhooks is not installed: signatures will not be checked "
              "(run with .venv/bin/python)", file=sys.stderr)

    server = ThreadingHTTPServer((args.host, args.port), make_handler(State(args)))
    server.daemon_threads = True

    def stop(signum, _frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    checks = "verifying Standard Webhooks signatures" if args.secret else "not verifying signatures (no --secret)"
    fails = f", failing the first {args.fail_first} requests with {args.fail_status}" if args.fail_first else ""
    print(f"demo-destination: listening on http://{args.host}:{args.port}/ ({checks}{fails})", flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    print("demo-destination: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
