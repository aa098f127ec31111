#!/usr/bin/env python3
"""Asks the receiver's /oauth/token for a token with a real OAuth 2.0 client, as Incode would.

  oauth_client.py TOKEN_URL CLIENT_ID CLIENT_SECRET CLIENT

CLIENT: authlib-basic (authlib's client_secret_basic), authlib-post (client_secret_post: the
credentials in the form body) or requests-basic (requests' HTTP Basic, what most hand-written
clients do). Prints one JSON line: {"status", "access_token" (or null), "authorization" (the
Authorization header the client sent, or null)}. Used by tests/tests/receiver.rs.
"""
import json
import sys

import requests
from authlib.integrations.requests_client import OAuth2Session

url, client_id, secret, client = sys.argv[1:5]
sent = []


def record(response, *args, **kwargs):
    sent.append((response.status_code, response.request.headers.get("Authorization")))


if client in ("authlib-basic", "authlib-post"):
    method = "client_secret_basic" if client == "authlib-basic" else "client_secret_post"
    session = OAuth2Session(client_id, secret, token_endpoint_auth_method=method)
    session.hooks["response"].append(record)
    try:
        token = session.fetch_token(url, grant_type="client_credentials")["access_token"]
    except Exception:  # authlib raises OAuthError on a 4xx token response
        token = None
elif client == "requests-basic":
    response = requests.post(url, auth=(client_id, secret), data={"grant_type": "client_credentials"},
                             hooks={"response": record})
    token = response.json().get("access_token") if response.ok else None
else:
    sys.exit(f"unknown client {client!r}")

status, authorization = sent[-1]
print(json.dumps({"status": status, "access_token": token, "authorization": authorization}))
