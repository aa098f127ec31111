#!/usr/bin/env python3
"""Generates the sample events under events/ (run with .venv/bin/python; outputs are committed).

Tokens are signed here with PyJWT, independently of the Rust `jsonwebtoken` crate the receiver
verifies with, using the TEST keys in events/keys/ (published: never use them in a deployment).
Expiry claims lie far in the future (2100) so the files stay valid; hostile files are built to fail
one check each. events/receiver/manifest.json lists each file with the status the receiver must
answer; the test suite runs every file through the handler and checks it.
"""
import base64
import json
import pathlib

import jwt  # PyJWT
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = pathlib.Path(__file__).resolve().parent
KEYS = ROOT / "keys"
OUT = ROOT / "receiver"
ENV = dict(
    line.split("=", 1)
    for line in (ROOT.parent / "config" / "local.env").read_text().splitlines()
    if line and not line.startswith("#")
)

INCODE_IP = "54.86.34.156"  # Incode US production
IDNOW_IP = "198.51.100.10"  # inside IDNOW_ALLOWED_IPS of config/local.env
IAT = 1795000000  # 2026-11-18
FAR = 4102444800  # 2100-01-01
KID = "test-key-1"


def rsa_key(name):
    path = KEYS / f"{name}.pem"
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


signing_key = rsa_key("test-rsa-private")
other_key = rsa_key("other-rsa-private")  # not in the JWKS
public_pem = signing_key.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
(KEYS / "test-rsa-public.pem").write_bytes(public_pem)
jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
jwk.update({"kid": KID, "alg": "RS256", "use": "sig"})
(KEYS / "jwks.json").write_text(json.dumps({"keys": [jwk]}, indent=2) + "\n")
# The set after a key rotation: test-key-2 (other-rsa-private) published beside test-key-1.
jwk2 = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(other_key.public_key()))
jwk2.update({"kid": "test-key-2", "alg": "RS256", "use": "sig"})
(KEYS / "rotated-jwks.json").write_text(json.dumps({"keys": [jwk, jwk2]}, indent=2) + "\n")


def apigw(path, body, headers, source_ip, method="POST", b64=False, route=None):
    headers = {k.lower(): v for k, v in headers.items()}
    headers.setdefault("user-agent", "sample-provider/1.0")
    if isinstance(body, bytes):
        body, b64 = base64.b64encode(body).decode(), True
    headers["content-length"] = str(len(base64.b64decode(body)) if b64 else len(body.encode()))
    event = {
        "version": "2.0",
        "routeKey": route or f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abcdef1234",
            "domainName": "abcdef1234.execute-api.eu-central-1.amazonaws.com",
            "domainPrefix": "abcdef1234",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers["user-agent"],
            },
            "requestId": "sample-request-id",
            "routeKey": route or f"{method} {path}",
            "stage": "$default",
            "time": "18/Nov/2026:08:53:20 +0000",
            "timeEpoch": IAT * 1000,
        },
        "body": body,
        "isBase64Encoded": b64,
    }
    if path.startswith("/webhooks/incode/"):
        event["pathParameters"] = {"type": path.rsplit("/", 1)[1]}
        event["routeKey"] = event["requestContext"]["routeKey"] = "POST /webhooks/incode/{type}"
    return event


manifest = {}


def write(name, event, status, note):
    (OUT / f"{name}.json").write_text(json.dumps(event, indent=2) + "\n")
    manifest[f"{name}.json"] = {"status": status, "note": note}


# ---------- Incode ----------
def bearer(aud=ENV["OAUTH_AUDIENCE"], key=ENV["OAUTH_TOKEN_SIGNING_KEY"], **extra):
    claims = {"iss": ENV["OAUTH_ISSUER"], "aud": aud, "sub": ENV["OAUTH_CLIENT_ID"],
              "iat": IAT, "exp": FAR, "jti": "sample"}
    claims.update(extra)
    return "Bearer " + jwt.encode(claims, key, algorithm="HS256")


def incode_headers(**over):
    h = {
        "content-type": "application/json",
        ENV["INCODE_SHARED_HEADER_NAME"]: ENV["INCODE_SHARED_HEADER_VALUE"],
        "authorization": bearer(),
    }
    h.update(over)
    return h


INCODE_BODIES = {
    "onboarding-status": {"interviewId": "6571d4f2e0a1b2c3d4e5f601", "externalId": "customer-42",
                          "onboardingStatus": "ONBOARDING_FINISHED"},
    "video-selfie-uploaded": {"clientId": "acme", "flowId": "flow-1", "interviewId": "6571d4f2e0a1b2c3d4e5f601"},
    "watchlist-updated": {"interviewId": "6571d4f2e0a1b2c3d4e5f601", "ref": "wl-ref-1", "search_id": "search-1"},
    "face-authentication": {"interviewId": "6571d4f2e0a1b2c3d4e5f601", "result": "PASS"},
    "session-started": {"eventType": "SESSION_STARTED", "interviewId": "6571d4f2e0a1b2c3d4e5f601"},
    "session-progress": {"eventType": "SESSION_PROGRESS", "interviewId": "6571d4f2e0a1b2c3d4e5f601"},
    "session-failed": {"eventType": "SESSION_FAILED", "interviewId": "6571d4f2e0a1b2c3d4e5f601"},
    "session-succeeded": {"eventType": "SESSION_SUCCEEDED", "interviewId": "6571d4f2e0a1b2c3d4e5f601",
                          "identityId": "id-1", "loginHint": "hint"},
    "session-pending-review": {"event_type": "SESSION_PENDING_REVIEW", "interviewId": "6571d4f2e0a1b2c3d4e5f601"},
    "session-identity-enrolled": {"eventType": "SESSION_IDENTITY_ENROLLED", "interviewId": "6571d4f2e0a1b2c3d4e5f601",
                                  "identityId": "id-1"},
    "work-history": {"interviewId": "6571d4f2e0a1b2c3d4e5f601", "status": "COMPLETED"},
    "proof-of-payment": {"interviewId": "6571d4f2e0a1b2c3d4e5f601", "status": "COMPLETED"},
    "third-party-async-retries": {"interviewId": "6571d4f2e0a1b2c3d4e5f601", "service": "government-validation"},
}
for slug, body in INCODE_BODIES.items():
    write(f"incode-{slug}", apigw(f"/webhooks/incode/{slug}", json.dumps(body), incode_headers(), INCODE_IP),
          200, f"Incode {slug} webhook on its own URL")
write("incode-generic-url-onboarding-status",
      apigw("/webhooks/incode", json.dumps({"interviewId": "6571d4f2e0a1b2c3d4e5f602",
                                            "onboardingStatus": "ID_VALIDATION_FINISHED"}),
            incode_headers(), INCODE_IP),
      200, "type recognised from the body on the generic URL")
write("incode-unknown-type",
      apigw("/webhooks/incode/brand-new-type", json.dumps({"interviewId": "x", "foo": "bar"}),
            incode_headers(), INCODE_IP),
      200, "unknown type: accepted and marked unknown")
write("incode-ipv6-mapped-source",
      apigw("/webhooks/incode/onboarding-status", json.dumps(INCODE_BODIES["onboarding-status"]),
            incode_headers(), "::ffff:54.86.34.156"),
      200, "IPv4-mapped IPv6 source of an allowed address")

# ---------- IDnow ----------
IDNOW_EVENT = {
    "eventId": "5b0f1c8e-6d2a-4f3e-9a51-0c1d2e3f4a5b",
    "eventDeliverId": "d-1",
    "eventVersion": "1.0",
    "eventName": "session.completed",
    "eventSequence": 4,
    "createdAt": "2026-11-18T08:53:20Z",
    "environment": "test",
    "payload": {"flowId": "flow-1", "sessionId": "sess-7f3a", "sessionStatus": "COMPLETED"},
}


def idnow_claims(event=IDNOW_EVENT, **over):
    c = {"iss": ENV["IDNOW_JWT_ISSUER"], "aud": ENV["IDNOW_JWT_AUDIENCE"], "iat": IAT, "exp": FAR,
         "sub": event["eventId"], "data": event}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def rs256(claims, key=signing_key, kid=KID):
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def idnow_jwt_body(token, ip=IDNOW_IP, ctype="application/jwt"):
    return apigw("/webhooks/idnow", token, {"content-type": ctype}, ip)


write("idnow-jwt-body-rs256", idnow_jwt_body(rs256(idnow_claims())), 200,
      "current IDnow style: body is an RS256 JWT, key from the JWKS")
write("idnow-jwt-body-hs256",
      idnow_jwt_body(jwt.encode(idnow_claims(), ENV["IDNOW_JWT_SECRET"], algorithm="HS256")), 200,
      "body is an HS256 JWT with the shared secret")
created = dict(IDNOW_EVENT, eventId="9c4e2a10-0000-4000-8000-000000000001", eventName="session.created",
               eventSequence=1, payload={"flowId": "flow-1", "sessionId": "sess-7f3a", "sessionStatus": "CREATED"})
write("idnow-json-signature-header",
      apigw("/webhooks/idnow", json.dumps(created),
            {"content-type": "application/json", "x-idnow-signature": rs256(idnow_claims(created))}, IDNOW_IP),
      200, "older IDnow style: JSON body, JWT in X-Idnow-Signature")
write("idnow-ipv6-source", idnow_jwt_body(rs256(idnow_claims()), ip="2001:db8:1d::10"), 200,
      "IPv6 source inside the allowlist")

# ---------- OAuth token endpoint ----------
basic = base64.b64encode(f"{ENV['OAUTH_CLIENT_ID']}:{ENV['OAUTH_CLIENT_SECRET']}".encode()).decode()
form_headers = {"content-type": "application/x-www-form-urlencoded"}
write("oauth-token-basic",
      apigw("/oauth/token", "grant_type=client_credentials", dict(form_headers, authorization=f"Basic {basic}"),
            INCODE_IP), 200, "client credentials with HTTP Basic")
write("oauth-token-form",
      apigw("/oauth/token",
            f"grant_type=client_credentials&client_id={ENV['OAUTH_CLIENT_ID']}&client_secret={ENV['OAUTH_CLIENT_SECRET']}&scope=webhooks",
            form_headers, INCODE_IP), 200, "client credentials in the form body")

# ---------- hostile ----------
def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


none_token = f"{b64url(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{b64url(json.dumps(idnow_claims()).encode())}."
write("hostile-idnow-alg-none", idnow_jwt_body(none_token), 401, "alg: none")
# Algorithm confusion: an HS256 token whose HMAC key is the RSA public key (PEM) the JWKS publishes.
# PyJWT refuses to do this on purpose, so the token is assembled by hand.
import hashlib, hmac  # noqa: E402
header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": KID}).encode())
payload = b64url(json.dumps(idnow_claims()).encode())
sig = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
write("hostile-idnow-alg-confusion", idnow_jwt_body(f"{header}.{payload}.{b64url(sig)}"), 401,
      "HS256 token signed with the RS256 public key")
write("hostile-idnow-expired", idnow_jwt_body(rs256(idnow_claims(exp=IAT + 60))), 401, "expired")
write("hostile-idnow-not-yet-valid", idnow_jwt_body(rs256(idnow_claims(nbf=FAR - 10))), 401, "nbf in 2100")
write("hostile-idnow-issued-in-future", idnow_jwt_body(rs256(idnow_claims(iat=FAR - 10))), 401, "iat in 2100")
write("hostile-idnow-wrong-iss", idnow_jwt_body(rs256(idnow_claims(iss="https://evil.example"))), 401, "wrong iss")
write("hostile-idnow-wrong-aud", idnow_jwt_body(rs256(idnow_claims(aud="someone-else"))), 401, "wrong aud")
write("hostile-idnow-missing-exp", idnow_jwt_body(rs256(idnow_claims(exp=None))), 401, "no exp claim")
write("hostile-idnow-unknown-kid", idnow_jwt_body(rs256(idnow_claims(), key=other_key, kid="test-key-2")), 401,
      "kid not (yet) in the JWKS")
write("hostile-idnow-wrong-key-known-kid", idnow_jwt_body(rs256(idnow_claims(), key=other_key)), 401,
      "signed with another key under the published kid")
good = rs256(idnow_claims())
h, p, s = good.split(".")
tampered = dict(idnow_claims())
tampered["data"] = dict(IDNOW_EVENT, payload=dict(IDNOW_EVENT["payload"], sessionStatus="ERROR"))
write("hostile-idnow-tampered-payload", idnow_jwt_body(f"{h}.{b64url(json.dumps(tampered).encode())}.{s}"), 401,
      "payload changed after signing")
write("hostile-idnow-signature-for-another-body",
      apigw("/webhooks/idnow", json.dumps(dict(created, eventName="session.aborted")),
            {"content-type": "application/json", "x-idnow-signature": rs256(idnow_claims(created))}, IDNOW_IP),
      401, "valid signature header beside a different body")
write("hostile-idnow-signature-binds-only-event-id",
      apigw("/webhooks/idnow", json.dumps(dict(created, eventName="session.aborted")),
            {"content-type": "application/json", "x-idnow-signature": rs256(idnow_claims(created, data=None))},
            IDNOW_IP),
      401, "a signature header without the event as `data` (sub = eventId only) does not cover the body")
write("hostile-idnow-missing-signature",
      apigw("/webhooks/idnow", json.dumps(created), {"content-type": "application/json"}, IDNOW_IP),
      401, "JSON body without X-Idnow-Signature")
write("hostile-idnow-ipv6-source", idnow_jwt_body(good, ip="2001:db8:bad::1"), 403, "IPv6 outside the allowlist")
write("hostile-idnow-wrong-media-type", idnow_jwt_body(good, ctype="text/plain"), 415, "text/plain body")
write("hostile-spoofed-x-forwarded-for",
      apigw("/webhooks/incode/onboarding-status", json.dumps(INCODE_BODIES["onboarding-status"]),
            incode_headers(**{"x-forwarded-for": INCODE_IP, "x-real-ip": INCODE_IP}), "203.0.113.9"),
      403, "disallowed source claiming an Incode address in X-Forwarded-For")
write("hostile-incode-wrong-shared-header",
      apigw("/webhooks/incode/onboarding-status", json.dumps(INCODE_BODIES["onboarding-status"]),
            incode_headers(**{ENV["INCODE_SHARED_HEADER_NAME"]: "test-only-incode-shared-header-XXXXXXXXXX"}),
            INCODE_IP), 401, "wrong shared header value")
write("hostile-incode-bearer-other-audience",
      apigw("/webhooks/incode/onboarding-status", json.dumps(INCODE_BODIES["onboarding-status"]),
            incode_headers(authorization=bearer(aud="another-service")), INCODE_IP), 401,
      "token issued for another audience")
write("hostile-incode-bearer-forged",
      apigw("/webhooks/incode/onboarding-status", json.dumps(INCODE_BODIES["onboarding-status"]),
            incode_headers(authorization=bearer(key="not-our-signing-key-0123456789abcdef")), INCODE_IP), 401,
      "token not signed by this service")
write("hostile-incode-missing-field",
      apigw("/webhooks/incode/onboarding-status", json.dumps({"onboardingStatus": "ONBOARDING_FINISHED"}),
            incode_headers(), INCODE_IP), 400, "interviewId missing")
write("hostile-incode-malformed-json",
      apigw("/webhooks/incode/onboarding-status", '{"interviewId": "x", ', incode_headers(), INCODE_IP),
      400, "truncated JSON")
write("hostile-incode-invalid-utf8",
      apigw("/webhooks/incode/onboarding-status", b'{"interviewId": "\xff\xfe", "onboardingStatus": "UNKNOWN"}',
            incode_headers(), INCODE_IP), 400, "invalid UTF-8 (base64-encoded event)")
write("hostile-incode-deeply-nested",
      apigw("/webhooks/incode/onboarding-status", "[" * 5000 + "]" * 5000, incode_headers(), INCODE_IP),
      400, "5000 levels of nesting")
write("hostile-incode-oversize-body",
      apigw("/webhooks/incode/onboarding-status",
            json.dumps(dict(INCODE_BODIES["onboarding-status"], padding="x" * 70000)), incode_headers(), INCODE_IP),
      413, "body over 64 KiB")
write("hostile-incode-wrong-media-type",
      apigw("/webhooks/incode/onboarding-status", "interviewId=x", incode_headers(**{"content-type": "application/x-www-form-urlencoded"}),
            INCODE_IP), 415, "form body on a webhook URL")
# Requests that crashed or rerouted the lambda_http-based receiver, and bodies that two parsers
# could read differently or that would be acknowledged and then fail downstream.
write("hostile-path-dot-segments",
      apigw("/webhooks/incode/%2e%2e/idnow", rs256(idnow_claims()), {"content-type": "application/jwt"}, IDNOW_IP),
      404, "percent-encoded dot segments are not resolved: no route")
write("hostile-path-double-slash",
      apigw("/webhooks//idnow", rs256(idnow_claims()), {"content-type": "application/jwt"}, IDNOW_IP),
      404, "an empty segment is not the route")
write("hostile-path-trailing-slash",
      apigw("/webhooks/idnow/", rs256(idnow_claims()), {"content-type": "application/jwt"}, IDNOW_IP),
      404, "a trailing slash is not the route")
write("hostile-x-forwarded-proto-with-space",
      apigw("/webhooks/incode/onboarding-status", json.dumps(INCODE_BODIES["onboarding-status"]),
            incode_headers(**{"x-forwarded-proto": "a b", "host": "x y"}), INCODE_IP),
      200, "X-Forwarded-Proto and Host that make no URI (panicked lambda_http): ignored, the webhook is accepted")
write("hostile-header-control-character",
      apigw("/webhooks/incode/onboarding-status", json.dumps(INCODE_BODIES["onboarding-status"]),
            incode_headers(**{"x-note": "a\u0001b"}), INCODE_IP),
      400, "a header value with a control character is not an HTTP header value")
write("hostile-invalid-base64-body",
      dict(apigw("/webhooks/incode/onboarding-status", "{}", incode_headers(), INCODE_IP), body="!!not base64!!",
           isBase64Encoded=True),
      400, "isBase64Encoded with a body that is not base64")
write("hostile-incode-duplicate-key",
      apigw("/webhooks/incode/onboarding-status",
            '{"interviewId": "6571d4f2e0a1b2c3d4e5f601", "onboardingStatus": "ONBOARDING_FINISHED", '
            '"onboardingStatus": "MANUAL_REVIEW_REJECTED"}', incode_headers(), INCODE_IP),
      400, "the same key twice: parsers disagree on which value wins")
write("hostile-incode-duplicate-key-nested",
      apigw("/webhooks/incode/face-authentication",
            '{"interviewId": "6571d4f2e0a1b2c3d4e5f601", "result": {"a": [{"score": 1, "score": 2}]}}',
            incode_headers(), INCODE_IP),
      400, "a duplicate key three levels down")
write("hostile-incode-too-deep",
      apigw("/webhooks/incode/face-authentication",
            '{"interviewId": "x", "a": ' + "[" * 64 + "]" * 64 + "}", incode_headers(), INCODE_IP),
      400, "65 levels of nesting (the limit is 64)")
write("hostile-incode-bidi-interview-id",
      apigw("/webhooks/incode/onboarding-status",
            json.dumps({"interviewId": "6571d4f2\u202ee0a1", "onboardingStatus": "ONBOARDING_FINISHED"}),
            incode_headers(), INCODE_IP),
      400, "a bidi override (U+202E) in the session key")
write("hostile-incode-long-interview-id",
      apigw("/webhooks/incode/onboarding-status",
            json.dumps({"interviewId": "i" * 129, "onboardingStatus": "ONBOARDING_FINISHED"}),
            incode_headers(), INCODE_IP),
      400, "a session key of 129 characters (the limit is 128)")
write("hostile-idnow-noncharacter-event-id",
      idnow_jwt_body(rs256(idnow_claims(dict(IDNOW_EVENT, eventId="evt\uffff")))),
      400, "a noncharacter in the event id, properly signed")
write("hostile-idnow-crit-header",
      idnow_jwt_body(jwt.encode(idnow_claims(), signing_key, algorithm="RS256",
                                headers={"kid": KID, "crit": ["exp"]})),
      401, "a crit header names an extension the receiver does not implement")
write("hostile-idnow-issuer-array",
      # PyJWT refuses a non-string iss in jwt.encode; its JWS layer signs any payload.
      idnow_jwt_body(jwt.api_jws.PyJWS().encode(
          json.dumps(idnow_claims(iss=[ENV["IDNOW_JWT_ISSUER"], "https://evil.example"])).encode(),
          signing_key, algorithm="RS256", headers={"kid": KID})),
      401, "iss is an array holding the configured issuer")
# The largest body in its most expensive encoding: raw U+FFFF characters, each 3 bytes in the body
# and 6 (as an escape) in each of the envelope's raw_body and event: over 256 KiB of envelope.
_prefix = '{"interviewId": "6571d4f2e0a1b2c3d4e5f601", "onboardingStatus": "ONBOARDING_FINISHED", "padding": "'
_room = 65536 - len(_prefix.encode()) - 2
write("incode-largest-body-worst-encoding",
      apigw("/webhooks/incode/onboarding-status", _prefix + "\uffff" * (_room // 3) + "x" * (_room % 3) + '"}',
            incode_headers(), INCODE_IP),
      200, "64 KiB of escape-heavy JSON: the envelope (over 256 KiB) fits the queue")
write("hostile-unknown-path", apigw("/webhooks/onfido", "{}", {"content-type": "application/json"}, INCODE_IP),
      404, "no such provider")
write("hostile-wrong-method", apigw("/webhooks/idnow", "", {}, IDNOW_IP, method="GET"), 405, "GET on a webhook URL")
write("hostile-oauth-bad-secret",
      apigw("/oauth/token", "grant_type=client_credentials",
            dict(form_headers, authorization="Basic " + base64.b64encode(
                f"{ENV['OAUTH_CLIENT_ID']}:wrong-secret-0123456789abcdefghijk".encode()).decode()), INCODE_IP),
      401, "wrong client secret")
write("hostile-oauth-wrong-grant",
      apigw("/oauth/token", "grant_type=password&username=a&password=b",
            dict(form_headers, authorization=f"Basic {basic}"), INCODE_IP), 400, "unsupported grant type")
write("hostile-oauth-disallowed-ip",
      apigw("/oauth/token", "grant_type=client_credentials", dict(form_headers, authorization=f"Basic {basic}"),
            "203.0.113.9"), 403, "token request from outside Incode's addresses")


# ---------- consumer and dispatcher: SQS events ----------
# Envelopes are built here as the receiver builds them (same canonical JSON and hashes, checked by
# the test suite against the Rust implementation), then wrapped in Lambda SQS events.
import hashlib as _hashlib  # noqa: E402

INCODE_TYPES = {slug: slug.replace("-", "_") for slug in INCODE_BODIES}


def canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_parts(*parts):
    h = _hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


def incode_envelope(slug, body):
    event_type = INCODE_TYPES[slug]
    payload_hash = sha256_parts("incode", event_type, canonical(body))
    status = body.get("onboardingStatus") or (body.get("eventType") or body.get("event_type") or "").upper() or None
    env = {"v": 1, "provider": "incode", "event_type": event_type, "event_id": "inc_" + payload_hash[:32],
           "session_id": body.get("interviewId"), "payload_hash": payload_hash, "received_at_ms": IAT * 1000,
           "intake_id": sha256_parts("sample-intake", payload_hash)[:32],
           "verified_by": ["source_ip", "shared_header", "bearer_token"], "request_id": "sample-request-id",
           "content_type": "application/json", "raw_body": json.dumps(body), "event": body}
    if status:
        env["status"] = status
    return env


def idnow_envelope(event):
    stable = {k: v for k, v in event.items() if k != "eventDeliverId"}
    payload_hash = sha256_parts("idnow", canonical(stable))
    return {"v": 1, "provider": "idnow", "event_type": event["eventName"], "event_id": event["eventId"],
            "session_id": event["payload"]["sessionId"], "status": event["payload"]["sessionStatus"].upper(),
            "payload_hash": payload_hash, "received_at_ms": IAT * 1000,
            "intake_id": sha256_parts("sample-intake", payload_hash)[:32], "verified_by": ["source_ip", "jwt_rs256"],
            "request_id": "sample-request-id", "content_type": "application/json", "raw_body": json.dumps(event),
            "event": event}


def sqs_event(queue, bodies, seed):
    """seed: distinct per file, so message ids differ across samples as they do in SQS."""
    records = []
    for i, body in enumerate(bodies):
        text = body if isinstance(body, str) else json.dumps(body)
        records.append({
            "messageId": f"{seed:08x}-0000-4000-8000-{i:012d}",
            "receiptHandle": f"sample-receipt-handle-{i}",
            "body": text,
            "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(IAT * 1000),
                           "SenderId": "AIDAEXAMPLE", "ApproximateFirstReceiveTimestamp": str(IAT * 1000)},
            "messageAttributes": {},
            "md5OfBody": _hashlib.md5(text.encode()).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": f"arn:aws:sqs:eu-central-1:123456789012:kyc-relay-{queue}",
            "awsRegion": "eu-central-1",
        })
    return {"Records": records}


def write_sqs(folder, name, event, failures, note, sink):
    (ROOT / folder).mkdir(exist_ok=True)
    (ROOT / folder / f"{name}.json").write_text(json.dumps(event, indent=2) + "\n")
    sink[f"{name}.json"] = {"failures": failures, "note": note}


consumer_manifest, dispatcher_manifest = {}, {}
onboarding = incode_envelope("onboarding-status", INCODE_BODIES["onboarding-status"])
completed_env = idnow_envelope(IDNOW_EVENT)
created_env = idnow_envelope(created)
write_sqs("consumer", "incode-onboarding-status", sqs_event("ingest", [onboarding], 1), [],
          "one new Incode event: claimed, archived, jobs sent", consumer_manifest)
write_sqs("consumer", "idnow-out-of-order", sqs_event("ingest", [completed_env, created_env], 2), [],
          "session.completed before session.created: the session ends COMPLETED", consumer_manifest)
write_sqs("consumer", "duplicate-in-batch", sqs_event("ingest", [onboarding, onboarding], 3), [],
          "the same event twice in one batch: processed once", consumer_manifest)
write_sqs("consumer", "malformed-envelope", sqs_event("ingest", ["not an envelope", onboarding], 4),
          ["00000004-0000-4000-8000-000000000000"],
          "a malformed record is reported as a batch item failure (it ends in the ingest DLQ)", consumer_manifest)


def record_key(envelope):
    """The records table's key of an event (shared/src/records/mod.rs)."""
    eid = envelope["event_id"]
    if envelope.get("session_id"):
        pk = f"s#{envelope['provider']}#{envelope['session_id']}"
    else:
        pk = f"e#{envelope['provider']}#{eid}"
    return pk, f"ev#{len(eid.encode())}#{eid}"


def job(envelope, attempt=1, due=IAT * 1000, history=(), dead_letter=None, destination="demo"):
    pk, sk = record_key(envelope)
    j = {"v": 2, "delivery_id": "dlv_" + sha256_parts(pk, sk, destination)[:32], "destination_id": destination,
         "attempt": attempt, "cycle_start": 1, "due_at_ms": due, "generation": 0,
         "expires_at_secs": FAR, "history": list(history), "envelope": envelope}
    if dead_letter:
        j["dead_letter"] = dead_letter
    return j


write_sqs("dispatcher", "first-attempt", sqs_event("delivery", [job(onboarding)], 5), [],
          "first attempt of a delivery to the demo destination", dispatcher_manifest)
write_sqs("dispatcher", "chained-delay", sqs_event("delivery", [job(completed_env, attempt=6, due=FAR * 1000)], 6), [],
          "a job due far in the future arrives early: re-enqueued (900 s), no attempt", dispatcher_manifest)
failed_history = [{"attempt": n, "at_ms": IAT * 1000 + n, "outcome": "http_503", "status_code": 503,
                   "latency_ms": 12, "cycle": 1} for n in range(1, 5)]
write_sqs("dispatcher", "redriven-from-dlq",
          sqs_event("delivery", [job(created_env, attempt=4, history=failed_history,
                                     dead_letter={"reason": "http_503 after 4 attempts: retries exhausted",
                                                  "at_ms": IAT * 1000 + 5, "attempts": 4})], 7), [],
          "a dead-lettered job moved back by an operator: a new retry cycle", dispatcher_manifest)
write_sqs("dispatcher", "malformed-job", sqs_event("delivery", ["{\"v\": 1}"], 8),
          ["00000008-0000-4000-8000-000000000000"], "a malformed job is reported (it ends in the delivery DLQ)",
          dispatcher_manifest)
(ROOT / "consumer" / "manifest.json").write_text(json.dumps(consumer_manifest, indent=2) + "\n")
(ROOT / "dispatcher" / "manifest.json").write_text(json.dumps(dispatcher_manifest, indent=2) + "\n")

(OUT / "manifest.json").write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
print(f"wrote {len(manifest)} events to {OUT}")
