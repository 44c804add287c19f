"""A local DynamoDB API (moto) that serves one request at a time.

moto's own threaded server handles requests in parallel without isolation: a cancelled
TransactWriteItems restores a copy of the whole table taken when it started, silently undoing
writes other requests committed meanwhile. Real DynamoDB applies each request atomically, so this
wrapper holds a lock around every request. Connections are still accepted concurrently.

It also makes moto's TransactWriteItems rollback snapshot cheap: moto deep-copies every table a
transaction names before running it (twice for a two-item transaction), so each transaction
costs time in proportion to the table, and a table of a few thousand items makes them time
out. For Put, Delete and ConditionCheck, which replace or remove item objects and never change
them in place, copying the table's item index (not the items) is an equivalent snapshot. The
function's transactions use only those.

Usage: moto_server.py PORT   (listens on 127.0.0.1; Ctrl-C or SIGTERM stops it)
"""

import copy
import sys
import threading
import types

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models.table import Table
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, run_simple


def snapshot(value, memo=None):
    if isinstance(value, Table):
        clone = copy.copy(value)
        clone.items = copy.copy(value.items)
        for hash_key, by_range in value.items.items():
            if isinstance(by_range, dict):
                clone.items[hash_key] = dict(by_range)
        return clone
    return copy.deepcopy(value, memo)


dynamodb_models.copy = types.SimpleNamespace(deepcopy=snapshot, copy=copy.copy)


def serialized(app):
    lock = threading.Lock()

    def handle(environ, start_response):
        with lock:
            response = app(environ, start_response)
            try:
                # Drain the response inside the lock: moto may build it lazily.
                return [b"".join(response)]
            finally:
                close = getattr(response, "close", None)
                if close is not None:
                    close()

    return handle


class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass


def main():
    port = int(sys.argv[1])
    app = serialized(DomainDispatcherApplication(create_backend_app))
    run_simple("127.0.0.1", port, app, threaded=True, request_handler=QuietHandler)


if __name__ == "__main__":
    main()
