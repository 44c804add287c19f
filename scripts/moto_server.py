"""A local DynamoDB API (moto) that serves one request at a time.

moto's own threaded server handles requests in parallel without isolation: a cancelled
TransactWriteItems restores a copy of the whole table taken when it started, silently undoing
writes other requests committed meanwhile. Real DynamoDB applies each request atomically, so this
wrapper holds a lock around every request. Connections are still accepted concurrently.

Usage: moto_server.py PORT   (listens on 127.0.0.1; Ctrl-C or SIGTERM stops it)
"""

import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, run_simple


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
