"""POST /sync's own figures: latency of warm calls against a local fake Clerk, and the requests
each call makes to Clerk and to DynamoDB.

The release binary runs under the Runtime API of scripts/coldstart.py, with /sync on
(CLERK_SECRET_KEY, CLERK_API_URL pointing at scripts/fake_clerk.py, no CLERK_JWT_KEY: the key set
is fetched, as in the default configuration). Each call is a different user (one round of
fetches per user per 5 s), with a token minted just before it is sent. The timed calls reach the
local DynamoDB API directly; a short second run goes through coldstart.py's recording forwarder
to count DynamoDB's requests:
- first: the first /sync of a warm process (it builds the HTTPS client and fetches the key set);
- warm: the median and p99 of the following calls, event handed over to response received.

Usage:
  bench_sync.py --binary PATH --dynamodb URL --table NAME [--calls N] [--env K=V ...]
Prints a JSON object; scripts/bench_report.py formats it.
"""

import argparse
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from coldstart import Recorder, RuntimeApi, api_gateway_event, wait_response  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent


def sync_event(clerk, n):
    """The sample /sync request with a fresh token for user n."""
    query = urllib.parse.urlencode({"sub": f"user_bench{n}", "sid": f"sess_bench{n}"})
    token = json.load(urllib.request.urlopen(f"{clerk}/local/token?{query}"))["token"]
    event = json.loads((ROOT / "events" / "sync" / "request.json").read_text())
    event["headers"]["authorization"] = f"Bearer {token}"
    return json.dumps(event).encode()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clerk_requests(clerk):
    return json.load(urllib.request.urlopen(f"{clerk}/local/requests"))["count"]


def run(args, clerk, dynamodb, first_user, calls, recorder=None):
    """One process: a webhook delivery (it records the table's instance, as a function that has
    served webhooks has), then 1 + `calls` /sync calls of new users. Returns their latencies, the
    requests to Clerk of the first and per warm call, and how many DynamoDB requests the recorder,
    if any, had seen before the warm calls."""
    api = RuntimeApi()
    threading.Thread(target=api.serve_forever, daemon=True).start()
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_FUNCTION_NAME": "bench",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{api.server_address[1]}",
        **dict(pair.split("=", 1) for pair in args.env),
        "AWS_ENDPOINT_URL": dynamodb,
        "TABLE_NAME": args.table,
        "CLERK_SECRET_KEY": "sk_test_local",
        "CLERK_API_URL": f"{clerk}/v1",
    }
    process = subprocess.Popen([args.binary], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        api.events.put(api_gateway_event(environment["CLERK_WEBHOOK_SIGNING_SECRET"], 1 + first_user))
        wait_response(api)
        latencies, first_clerk, start = [], 0, 0
        before = clerk_requests(clerk)
        for n in range(first_user, first_user + calls + 1):
            event = sync_event(clerk, n)
            handed = time.perf_counter()
            api.events.put(event)
            answered, response = wait_response(api)
            if response.get("statusCode") != 200:
                raise SystemExit(f"/sync answered {response.get('statusCode')}: {response.get('body', '')[:300]}")
            latencies.append(answered - handed)
            if n == first_user:
                first_clerk = clerk_requests(clerk) - before
                before = clerk_requests(clerk)
                start = len(recorder.requests) if recorder else 0
        return latencies, first_clerk, (clerk_requests(clerk) - before) / calls, start
    finally:
        process.kill()
        process.wait()
        api.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--dynamodb", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--env", action="append", default=[])
    args = parser.parse_args()

    port = free_port()
    clerk = f"http://127.0.0.1:{port}"
    fake = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "fake_clerk.py"), str(port)])
    for _ in range(100):
        try:
            clerk_requests(clerk)
            break
        except OSError:
            time.sleep(0.05)
    try:
        # Timed: the function talks to the local DynamoDB API directly. Counted: a short second
        # run through the recording forwarder (an extra hop that would weigh on the times).
        latencies, first_clerk, warm_clerk, _ = run(args, clerk, args.dynamodb, 0, args.calls)
        recorder = Recorder(args.dynamodb)
        threading.Thread(target=recorder.serve_forever, daemon=True).start()
        endpoint = f"http://127.0.0.1:{recorder.server_address[1]}"
        counted = min(args.calls, 20)
        _, _, _, start = run(args, clerk, endpoint, args.calls + 1, counted, recorder)
        operations = [target.rsplit(".", 1)[-1] for target, _ in recorder.requests[start:]]
        dynamodb = {op: operations.count(op) / counted for op in sorted(set(operations))}
        recorder.shutdown()
    finally:
        fake.kill()
        fake.wait()
    warm = sorted(latencies[1:])
    ms = lambda seconds: round(seconds * 1000, 3)  # noqa: E731
    print(
        json.dumps(
            {
                "calls": args.calls,
                "first_ms": ms(latencies[0]),
                "first_clerk_requests": first_clerk,
                "warm_median_ms": ms(statistics.median(warm)),
                "warm_p99_ms": ms(warm[int(len(warm) * 0.99) - 1]),
                "clerk_requests_per_call": warm_clerk,
                "dynamodb_requests_per_call": dynamodb,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
