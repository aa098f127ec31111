#!/usr/bin/env python3
"""moto's server with two fidelity fixes the relay's guarantees depend on:

1. DynamoDB writes are atomic. DynamoDB evaluates a write's condition and applies the write as one
   atomic step per item. moto's server is threaded and its DynamoDB backend takes no lock, so two
   concurrent conditional writes to one item can both pass their condition (seen here: an
   out-of-order session update overtaking a newer one). This wrapper serialises moto's DynamoDB write
   operations with one lock.
2. An SQS message goes to one receiver at a time. moto's ReceiveMessage checks a message's visibility
   and marks it received without a lock, so two concurrent receives (the local SQS trigger runs
   several pollers per queue, as Lambda does) can both get the same message: a duplicate real SQS
   produces only rarely. Each receive pass now runs under one lock; long polling waits outside it, so
   other pollers and senders are not held up.

Everything else is moto's own server unchanged (same flags as `moto_server`).
"""
import functools
import sys
import threading
import time

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main
from moto.sqs.models import SQSBackend

_write_lock = threading.RLock()

for _name in ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item"):
    _original = getattr(DynamoDBBackend, _name)

    def _locked(*args, __original=_original, **kwargs):
        with _write_lock:
            return __original(*args, **kwargs)

    setattr(DynamoDBBackend, _name, functools.wraps(_original)(_locked))


_receive_lock = threading.Lock()
_receive = SQSBackend.receive_message


@functools.wraps(_receive)
def _receive_one_at_a_time(self, queue_name, count, wait_seconds_timeout, visibility_timeout,
                           message_attribute_names=None, *args, **kwargs):
    deadline = time.monotonic() + (wait_seconds_timeout or 0)
    while True:
        with _receive_lock:  # one pass (no waiting) at a time: a message is marked received once
            result = _receive(self, queue_name, count, 0, visibility_timeout, message_attribute_names, *args, **kwargs)
        left = deadline - time.monotonic()
        if result or left <= 0:
            return result
        self.get_queue(queue_name).wait_for_messages(min(1.0, left))


SQSBackend.receive_message = _receive_one_at_a_time

if __name__ == "__main__":
    sys.exit(main())
