"""Cold start, first and warm invocations, CPU and memory of a Lambda binary, measured under a
Lambda Runtime API played by this script.

For each of RUNS cold starts, the binary is started fresh with AWS_LAMBDA_RUNTIME_API pointing
here and an API Gateway event already waiting, as when a request triggers a cold start:
- init: from exec to the function's first `GET /runtime/invocation/next`;
- first: from that request to the function's response (the first invocation);
- cold: init + first, the cold start as a caller sees it.
Then WARM invocations, one after another: the median and p99 latency (event handed over to
response received), the process CPU time per event (utime + stime from /proc), and the peak
resident memory (VmHWM).

With --dynamodb URL it also times the DynamoDB round trips, which the floor adds to its cold start:
a hello-world binary does no I/O, clerk-sync's first invocation must write. They are the
function's own first writes (the table's record of the Clerk instance, once per cold start, then
a conditional PutItem of the user item), captured through a forwarding endpoint in one untimed
cold start and each replayed over a new connection, as on a cold start, three times after each
timed cold start of the function. The init warm-up (DescribeTable) is
captured and replayed the same way, and reported apart.

Usage:
  coldstart.py --binary PATH [--floor PATH] [--dynamodb URL] [--runs N] [--warm N] [--env K=V ...]
Prints a JSON object; `scripts/bench` formats it into BENCHMARKS.md's tables.
"""

import argparse
import http.client
import http.server
import json
import os
import pathlib
import queue
import statistics
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from sign_events import sign  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


class RuntimeApi(http.server.ThreadingHTTPServer):
    """The part of the Lambda Runtime API a function uses: next, response, error, init error."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.events = queue.Queue()
        self.responses = queue.Queue()
        self.first_next = None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle(self):
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the process was killed at the end of its run

    def do_GET(self):
        if not self.path.endswith("/runtime/invocation/next"):
            return self.reply(404, b"{}")
        api = self.server
        if api.first_next is None:
            api.first_next = time.perf_counter()
        payload = api.events.get()
        request_id = str(uuid.uuid4())
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int((time.time() + 10) * 1000)))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:bench")
        self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        at = time.perf_counter()
        if "/runtime/invocation/" in self.path:
            kind = "response" if self.path.endswith("/response") else "error"
        else:
            kind = "init-error"
        self.server.responses.put((at, kind, body))
        self.reply(202, b"{}")

    def reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def cpu_seconds(pid):
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_kb(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def api_gateway_event(secret, n):
    """An HTTP API user.updated delivery with version n, signed now."""
    event = json.loads((ROOT / "events" / "user-updated.json").read_text())
    body = json.loads(event["body"])
    body["data"]["updated_at"] = body["data"]["updated_at"] + n
    raw = json.dumps(body, separators=(",", ":")).encode()
    msg_id, now = f"msg_bench_{n}", int(time.time())
    event["body"] = raw.decode()
    event["headers"].update({"svix-id": msg_id, "svix-timestamp": str(now), "svix-signature": sign(secret, msg_id, now, raw)})
    event["headers"].pop("content-length", None)
    return json.dumps(event).encode()


def wait_response(api, timeout=30):
    at, kind, body = api.responses.get(timeout=timeout)
    if kind != "response":
        raise SystemExit(f"the function reported {kind}: {body[:500]!r}")
    return at, json.loads(body)


def measure(binary, env, runs, warm, secret, first_version=0, between=None):
    """RUNS cold starts of `binary`, each followed by WARM invocations. Events carry versions
    from `first_version` + 1 up; `between`, if given, is called after each run."""
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_FUNCTION_NAME": "bench",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        **env,
    }
    sequence = first_version
    inits, firsts, colds, warm_latencies, cpu_per_event, rss = [], [], [], [], [], []
    for _ in range(runs):
        # A Runtime API of its own for each process: a killed process's last `next` must not
        # take the following run's event.
        api = RuntimeApi()
        threading.Thread(target=api.serve_forever, daemon=True).start()
        environment["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{api.server_address[1]}"
        sequence += 1
        api.events.put(api_gateway_event(secret, sequence))
        started = time.perf_counter()
        process = subprocess.Popen([binary], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            answered, response = wait_response(api)
            if response.get("statusCode") != 200:
                raise SystemExit(f"first invocation answered {response}")
            inits.append(api.first_next - started)
            firsts.append(answered - api.first_next)
            colds.append(answered - started)
            cpu_before = cpu_seconds(process.pid)
            for _ in range(warm):
                sequence += 1
                event = api_gateway_event(secret, sequence)
                handed = time.perf_counter()
                api.events.put(event)
                answered, response = wait_response(api)
                if response.get("statusCode") != 200:
                    raise SystemExit(f"warm invocation answered {response}")
                warm_latencies.append(answered - handed)
            if warm:
                cpu_per_event.append((cpu_seconds(process.pid) - cpu_before) / warm)
            rss.append(peak_rss_kb(process.pid))
        finally:
            process.kill()
            process.wait()
            api.shutdown()
            api.server_close()
        if between:
            between()
    ms = lambda seconds: round(seconds * 1000, 3)  # noqa: E731
    result = {
        "runs": runs,
        "init_ms": ms(statistics.median(inits)),
        "first_invocation_ms": ms(statistics.median(firsts)),
        "cold_ms": ms(statistics.median(colds)),
        "peak_rss_kb": max(rss),
    }
    if warm_latencies:
        ordered = sorted(warm_latencies)
        result |= {
            "warm_invocations": len(ordered),
            "warm_median_ms": ms(statistics.median(ordered)),
            "warm_p99_ms": ms(ordered[int(len(ordered) * 0.99) - 1]),
            "cpu_per_warm_event_ms": ms(statistics.median(cpu_per_event)),
        }
    return result


class Recorder(http.server.ThreadingHTTPServer):
    """A DynamoDB endpoint that forwards every request to the real one and keeps a copy: how the
    requests the function sends are captured, to be replayed by `round_trip`."""

    daemon_threads = True

    def __init__(self, upstream):
        super().__init__(("127.0.0.1", 0), Forward)
        self.upstream = upstream.removeprefix("http://")
        self.requests = []


class Forward(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        self.server.requests.append((self.headers.get("X-Amz-Target", ""), body))
        connection = http.client.HTTPConnection(self.server.upstream, timeout=10)
        connection.request("POST", "/", body, headers)
        response = connection.getresponse()
        answer = response.read()
        connection.close()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


def capture(binary, env, dynamodb, secret):
    """The function's DynamoDB requests over one cold start and its first invocation (untimed):
    the init warm-up, then the write of the first event. Its event is older than every timed
    one, so the timed runs still write newer versions."""
    recorder = Recorder(dynamodb)
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    try:
        endpoint = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{recorder.server_address[1]}"}
        measure(binary, {**env, **endpoint}, 1, 0, secret, first_version=-1000)
    finally:
        recorder.shutdown()
        recorder.server_close()
    return recorder.requests


def round_trip(url, target, body, samples):
    """Times of `samples` requests exactly as the function sent them (`target`, `body`), each
    over a new connection as on a cold start. A written item gets a key of its own per sample,
    so each replay writes as the first invocation did and leaves the function's items alone."""
    host = url.removeprefix("http://")
    times = []
    for _ in range(samples):
        request = json.loads(body)
        if "Item" in request:
            request["Item"]["pk"]["S"] += f"#ROUND_TRIP#{uuid.uuid4()}"
        headers = {
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": target,
            "Authorization": "AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/dynamodb/aws4_request, "
            "SignedHeaders=host, Signature=0",
        }
        payload = json.dumps(request)
        started = time.perf_counter()
        connection = http.client.HTTPConnection(host, timeout=10)
        connection.request("POST", "/", payload, headers)
        response = connection.getresponse()
        response.read()
        times.append(time.perf_counter() - started)
        connection.close()
        if response.status != 200:
            raise SystemExit(f"DynamoDB round trip ({target}) answered {response.status}")
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--floor")
    parser.add_argument("--dynamodb")
    parser.add_argument("--table")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--env", action="append", default=[])
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    secret = env.get("CLERK_WEBHOOK_SIGNING_SECRET", "")
    report, between, trips = {}, None, {"write": [], "warm_up": []}
    if args.dynamodb:
        requests = capture(args.binary, env, args.dynamodb, secret)
        targets = [target.rsplit(".", 1)[-1] for target, _ in requests]
        # The warm-up, then the first invocation's writes: the table's record of the Clerk instance
        # (once per cold start) and the event's own item.
        if targets[:1] != ["DescribeTable"] or not 2 <= len(requests) <= 3:
            raise SystemExit(f"expected the warm-up and one or two writes, the function sent {targets}")
        (warm_up_target, warm_up), writes = requests[0], requests[1:]
        report["dynamodb_write"] = " + ".join(targets[1:])

        def between():
            # Interleaved with the cold starts, so the local server's speed, which drifts over a
            # run, weighs on the floor's round trips as on the function's. One sample is the sum
            # of the first invocation's writes, each replayed as it was sent.
            for _ in range(3):
                trips["write"].append(sum(round_trip(args.dynamodb, target, body, 1)[0] for target, body in writes))
            trips["warm_up"] += round_trip(args.dynamodb, warm_up_target, warm_up, 3)

    report["clerk_sync"] = measure(args.binary, env, args.runs, args.warm, secret, between=between)
    if args.floor:
        report["floor"] = measure(args.floor, {}, args.runs, args.warm, secret)
    if args.dynamodb:
        report["dynamodb_round_trip_ms"] = round(statistics.median(trips["write"]) * 1000, 3)
        report["dynamodb_warm_up_round_trip_ms"] = round(statistics.median(trips["warm_up"]) * 1000, 3)
        report["dynamodb_round_trip_samples"] = len(trips["write"])
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
