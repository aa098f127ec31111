#!/usr/bin/env python3
"""Checks envelopes and delivered bodies against the published event schemas (schemas/v1), with the
reference JSON Schema implementation (jsonschema, draft 2020-12), not with the relay's own code.

  scripts/check_schemas.py                      the schemas are valid, and every envelope in the sample
                                                events (events/consumer, events/dispatcher) validates
  scripts/check_schemas.py --envelopes FILE|-   a JSON array of envelopes (the Rust tests pipe theirs)
  scripts/check_schemas.py --received FILE      a demo destination log (JSON lines, scripts/
                                                demo_destination.py --log): envelope bodies against the
                                                envelope schema, raw IDnow bodies against the IDnow
                                                event schema (a compact JWT by its data claim)

Prints one line per invalid document (where and why) and exits 1 if any is invalid, 2 on bad input.
"""
from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas" / "v1"


def registry() -> tuple[Registry, dict]:
    """Every schema of schemas/v1 by its $id (relative $refs resolve against it)."""
    resources, by_name = [], {}
    for path in sorted(SCHEMAS.rglob("*.schema.json")):
        doc = json.loads(path.read_text())
        Draft202012Validator.check_schema(doc)
        resources.append((doc["$id"], Resource.from_contents(doc)))
        by_name[str(path.relative_to(SCHEMAS))] = doc
    return Registry().with_resources(resources), by_name


REGISTRY, SCHEMA = registry()
# The published envelope schema admits fields added within v1 (the compatibility promise); the
# relay's own output is checked strictly, so that a field the code writes but the schema does not
# publish fails here instead of surprising a consumer.
ENVELOPE = Draft202012Validator({**SCHEMA["envelope.schema.json"], "additionalProperties": False},
                                registry=REGISTRY)
IDNOW_EVENT = Draft202012Validator(SCHEMA["idnow/event.schema.json"], registry=REGISTRY)


def errors(validator: Draft202012Validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]


def check_envelope(doc, where: str) -> list[str]:
    return [f"{where}: {m}" for m in errors(ENVELOPE, doc)]


def sample_envelopes() -> list[tuple[str, dict]]:
    """Envelopes in the sample SQS events (consumer: the record body; dispatcher: the job's
    envelope), except the records the manifests list as malformed."""
    out = []
    for folder in ("consumer", "dispatcher"):
        manifest = json.loads((ROOT / "events" / folder / "manifest.json").read_text())
        for name, spec in manifest.items():
            event = json.loads((ROOT / "events" / folder / name).read_text())
            for record in event["Records"]:
                if record["messageId"] in spec.get("failures", []):
                    continue
                body = json.loads(record["body"])
                out.append((f"events/{folder}/{name} {record['messageId']}",
                            body if folder == "consumer" else body["envelope"]))
    return out


def asyncapi_refs() -> list[str]:
    """Every schema file schemas/asyncapi.yaml references exists and is one of the checked ones."""
    import re

    text = (ROOT / "schemas" / "asyncapi.yaml").read_text()
    refs = re.findall(r'\$ref: "\./v1/([^"]+)"', text)
    missing = [r for r in refs if r not in SCHEMA]
    return [f"schemas/asyncapi.yaml: $ref ./v1/{r} is not a schema of schemas/v1" for r in missing] + (
        [] if refs else ["schemas/asyncapi.yaml: references no schema"])


def jwt_data(token: str):
    part = token.strip().split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))["data"]


def check_received(path: Path) -> tuple[int, list[str]]:
    """Bodies a demo destination logged: JSON with `v` and `envelope` keys is an envelope; any other
    body is the provider's raw request: an IDnow one (a path naming idnow, as the local destinations'
    /raw-idnow) is checked against the IDnow event schema; other raw bodies are skipped (an Incode
    body's schema depends on its type, which a raw delivery does not carry)."""
    problems, n = [], 0
    for i, line in enumerate(path.read_text().splitlines(), 1):
        record = json.loads(line)
        body, where = record.get("body"), f"{path.name}:{i} {record.get('path')}"
        if body is None:
            continue
        content_type = (record.get("headers") or {}).get("content-type", "")
        if content_type.startswith("application/json"):
            doc = json.loads(body)
            if isinstance(doc, dict) and "v" in doc and "raw_body" in doc:
                n += 1
                problems += check_envelope(doc, where)
                continue
        provider = "idnow" if "idnow" in (record.get("path") or "") else None
        if provider is None:
            continue
        n += 1
        event = jwt_data(body) if content_type.startswith("application/jwt") else json.loads(body)
        problems += [f"{where}: {m}" for m in errors(IDNOW_EVENT, event)]
    return n, problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--envelopes", metavar="FILE", help="a JSON array of envelopes ('-' for stdin)")
    p.add_argument("--received", metavar="FILE", type=Path, help="a demo destination's --log file")
    args = p.parse_args()
    problems: list[str] = []
    if args.envelopes:
        text = sys.stdin.read() if args.envelopes == "-" else Path(args.envelopes).read_text()
        try:
            docs = json.loads(text)
        except json.JSONDecodeError as e:
            print(f"check_schemas: --envelopes is not JSON: {e}", file=sys.stderr)
            return 2
        for i, doc in enumerate(docs):
            problems += check_envelope(doc, f"envelope {i}")
        what = f"{len(docs)} envelope(s)"
    elif args.received:
        n, problems = check_received(args.received)
        what = f"{n} delivered bod(ies) in {args.received}"
    else:
        samples = sample_envelopes()
        for where, doc in samples:
            problems += check_envelope(doc, where)
        problems += asyncapi_refs()
        what = f"{len(SCHEMA)} schemas valid; {len(samples)} sample envelope(s); asyncapi.yaml refs"
    for line in problems:
        print(f"check_schemas: INVALID {line}")
    print(f"check_schemas: {what}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
