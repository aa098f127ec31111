#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets from the sample events under events/ (run from the
repository root: python3 fuzz/seeds.py). Each target reads its input in its own layout (see the
target's source); the seeds are real requests in that layout, so the fuzzer starts from inputs
that pass the checks and mutates from there."""
import base64
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "corpus"
SEP = b"\xff"


def write(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def body_of(event):
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body)
        except Exception:
            return body.encode()
    return body.encode()


for path in sorted((ROOT / "events" / "receiver").glob("*.json")):
    if path.name == "manifest.json":
        continue
    event = json.loads(path.read_text())
    headers = event.get("headers", {})
    picked = [(k, v) for k, v in headers.items() if k in
              ("content-type", "authorization", "x-incode-webhook-secret", "x-idnow-signature", "x-note")][:3]
    while len(picked) < 3:
        picked.append(("", ""))
    flags = (1 if event.get("isBase64Encoded") else 0) | (2 if event["requestContext"]["http"]["sourceIp"].startswith("54.") else 0)
    parts = [event["requestContext"]["http"]["method"].encode(), event["rawPath"].encode(), bytes([flags])]
    for k, v in picked:
        parts += [k.encode(), v.encode()]
    parts.append(event.get("body", "").encode())
    write("router_request", path.stem, SEP.join(parts))
    body = body_of(event)
    raw_path = event["rawPath"]
    if raw_path.startswith("/webhooks/incode"):
        write("incode_body", path.stem, bytes([len(raw_path) % 15]) + body)
    elif raw_path.startswith("/webhooks/idnow") or "idnow" in raw_path:
        kind = 1 if headers.get("content-type") == "application/jwt" else 0
        write("idnow_body", path.stem, bytes([kind]) + body)
    elif raw_path == "/oauth/token":
        write("token_request", path.stem, headers.get("authorization", "").encode() + SEP + body)
    if "authorization" in headers and headers["authorization"].startswith("Bearer "):
        write("token_request", path.stem + "-bearer", headers["authorization"].encode() + SEP)

env = dict(line.split("=", 1) for line in (ROOT / "config" / "local.env").read_text().splitlines()
           if line and not line.startswith("#") and "=" in line)
for i, spec in enumerate([env["INCODE_ALLOWED_IPS"], env["IDNOW_ALLOWED_IPS"], "any", "incode-eu, 203.0.113.0/24",
                          "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1"]):
    write("ip_policy", f"seed-{i}", spec.encode())

for folder in ("consumer", "dispatcher"):
    for path in sorted((ROOT / "events" / folder).glob("*.json")):
        if path.name == "manifest.json":
            continue
        for j, record in enumerate(json.loads(path.read_text())["Records"]):
            write("queue_messages", f"{folder}-{path.stem}-{j}", record["body"].encode())
print(f"seeds written to {OUT.relative_to(ROOT)}")
