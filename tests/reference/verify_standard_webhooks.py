#!/usr/bin/env python3
"""Verifies a Standard Webhooks signature with the reference library (standardwebhooks on PyPI),
independently of the relay's Rust signer.

stdin: {"secret": "whsec_...", "headers": {"webhook-id": ..., "webhook-timestamp": ...,
        "webhook-signature": ...}, "body": "<request body>"}
Exit 0 and print "valid" when the signature verifies; exit 1 with the library's error otherwise.
"""
import json
import sys

from standardwebhooks.webhooks import Webhook

request = json.load(sys.stdin)
try:
    Webhook(request["secret"]).verify(request["body"], request["headers"])
except Exception as e:  # the library raises WebhookVerificationError
    print(f"invalid: {e}")
    sys.exit(1)
print("valid")
