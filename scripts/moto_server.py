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

3. Request counts, for the cost figures of the fault-injection run: every request is counted by who
   made it (the user agent: `functions` = the AWS SDK for Rust, `esm` = the local SQS trigger runner,
   standing in for Lambda's pollers, `driver` = a test driver, else `other`) and by operation
   (`dynamodb.PutItem`, `sqs.SendMessageBatch`, `s3.PutObject`, ...). `GET /_local/counts` returns
   them as JSON; `DELETE /_local/counts` resets them.

4. Receiving from a deep queue stays cheap. moto's `Queue.messages` builds the list of every visible
   message (two clock reads per message) on each receive pass and on each wake-up of every long
   poll, and every send wakes every poll: with thousands of messages and a dozen pollers the emulator
   spends its CPU rebuilding that list (a 10 000-event fault run stalled at a few events per second).
   Here it is a lazy view with one clock read: a receive pass stops at its tenth message and a wake-up
   at the first visible one; `len` still counts them all. Same messages, same order.
5. A table `Query` reads one partition. moto's `Table.query` sorts every item of the table and then
   keeps the partition's (O(n log n) per query): the dispatcher's per-delivery `Query` made a run of
   thousands of events quadratic. Here a query on the table (not an index) by its hash key sorts
   only that partition's items; filtering, paging and projection are moto's own.
6. A received message's retention check reads the queue's retention period. moto computes every
   queue attribute for it, counting delayed and in-flight messages over the whole queue, once per
   message received: with thousands of messages queued every receive timed out (the fault run's
   consumer and dispatcher stopped receiving at 7 000 queued messages).
7. Deleting a message holds the queue's lock. moto's `Queue.delete_message` rebuilds the message
   list without it while `SendMessage` appends under it: a message sent during a delete was
   acknowledged and then dropped with the old list (the 10 000-event fault run lost 7 delivery jobs
   that way: sent, acknowledged, never received). A receive pass holds the same lock, so moving a
   message to the DLQ cannot race a delete either.

Everything else is moto's own server unchanged (same flags as `moto_server`).
"""
import functools
import sys
import threading
import time

import json
from collections import Counter

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.server import DomainDispatcherApplication, main
from moto.core.utils import unix_time, unix_time_millis
from moto.sqs.models import Queue, SQSBackend

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
        # One pass (no waiting) at a time, so a message is marked received once; under the queue's
        # own lock, so no send or delete changes the list meanwhile (fix 7).
        with _receive_lock, self.get_queue(queue_name)._messages_lock:
            result = _receive(self, queue_name, count, 0, visibility_timeout, message_attribute_names, *args, **kwargs)
        left = deadline - time.monotonic()
        if result or left <= 0:
            return result
        self.get_queue(queue_name).wait_for_messages(min(1.0, left))


SQSBackend.receive_message = _receive_one_at_a_time


def _within_retention(self, queue_name, message):
    # moto's own test, reading one attribute instead of computing them all.
    retention = int(self.get_queue(queue_name).message_retention_period)
    return retention + message.sent_timestamp / 1000 > unix_time()


SQSBackend.is_message_valid_based_on_retention_period = _within_retention


_delete = Queue.delete_message


@functools.wraps(_delete)
def _delete_under_lock(self, receipt_handle):
    with self._messages_lock:
        return _delete(self, receipt_handle)


Queue.delete_message = _delete_under_lock


class _VisibleMessages:
    """moto's `Queue.messages` (visible and not delayed, in queue order), evaluated lazily."""

    __slots__ = ("_all", "_now")

    def __init__(self, messages):
        self._all = messages
        self._now = unix_time_millis()

    def __iter__(self):
        now = self._now
        # A copy of the list, not of the messages: other threads append and delete meanwhile.
        return (m for m in list(self._all) if now > m.visible_at and now >= m.delayed_until)

    def __len__(self):
        return sum(1 for _ in self)

    def __bool__(self):
        return any(True for _ in self)


Queue.messages = property(lambda self: _VisibleMessages(self._messages))


_partition = threading.local()
_query = Table.query
_all_items = Table.all_items


@functools.wraps(_query)
def _query_one_partition(self, hash_key, *args, **kwargs):
    # moto's backend passes index_name positionally (the 7th argument after hash_key).
    index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
    if index_name is not None or hash_key is None or not self.range_key_attr:
        return _query(self, hash_key, *args, **kwargs)
    _partition.current = (self, hash_key)
    try:
        return _query(self, hash_key, *args, **kwargs)
    finally:
        _partition.current = None


@functools.wraps(_all_items)
def _all_items_or_partition(self):
    current = getattr(_partition, "current", None)
    if current is not None and current[0] is self:
        # .get: self.items is a defaultdict, and a read must not create the partition.
        return sorted(self.items.get(current[1], {}).values(), key=lambda item: item.range_key)
    return _all_items(self)


Table.query = _query_one_partition
Table.all_items = _all_items_or_partition


_counts: Counter = Counter()
_counts_lock = threading.Lock()


def _client(environ) -> str:
    agent = environ.get("HTTP_USER_AGENT", "")
    if "aws-sdk-rust" in agent:
        return "functions"
    if "esm-runner" in agent:
        return "esm"
    if "fault-driver" in agent:
        return "driver"
    return "other"


def _operation(environ) -> str:
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target.startswith("DynamoDB_"):
        return "dynamodb." + target.split(".", 1)[-1]
    if target.startswith("AmazonSQS."):
        return "sqs." + target.split(".", 1)[-1]
    method = environ.get("REQUEST_METHOD", "")
    path = environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING", "")
    if "Action=" in query:
        return "query." + query.split("Action=", 1)[1].split("&", 1)[0]
    # S3 (path style): /bucket or /bucket/key.
    has_key = path.strip("/").count("/") >= 1
    op = {("PUT", True): "PutObject", ("GET", True): "GetObject", ("DELETE", True): "DeleteObject",
          ("HEAD", True): "HeadObject", ("GET", False): "ListObjects", ("PUT", False): "PutBucket"}
    return "s3." + op.get((method, has_key), f"{method}")


_dispatch = DomainDispatcherApplication.__call__


def _counting_call(self, environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/_local/counts":
        with _counts_lock:
            if environ.get("REQUEST_METHOD") == "DELETE":
                _counts.clear()
            body = json.dumps(dict(_counts), sort_keys=True).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    if not path.startswith("/moto-api"):
        with _counts_lock:
            _counts[f"{_client(environ)}:{_operation(environ)}"] += 1
    return _dispatch(self, environ, start_response)


DomainDispatcherApplication.__call__ = _counting_call

if __name__ == "__main__":
    sys.exit(main())
