#!/usr/bin/env python3
"""moto's server with one fidelity fix: DynamoDB writes are atomic.

DynamoDB evaluates a write's condition and applies the write as one atomic step per item. moto's
server is threaded and its DynamoDB backend takes no lock, so two concurrent conditional writes to
one item can both pass their condition (seen here: an out-of-order session update overtaking a newer
one). The relay's guarantees rest on that atomicity, so its tests need it: this wrapper serialises
moto's DynamoDB write operations with one lock, then runs moto's own server unchanged (same flags as
`moto_server`). SQS, including long polling, stays concurrent.
"""
import functools
import sys
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

_write_lock = threading.RLock()

for _name in ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item"):
    _original = getattr(DynamoDBBackend, _name)

    def _locked(*args, __original=_original, **kwargs):
        with _write_lock:
            return __original(*args, **kwargs)

    setattr(DynamoDBBackend, _name, functools.wraps(_original)(_locked))

if __name__ == "__main__":
    sys.exit(main())
