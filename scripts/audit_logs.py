"""Fails if the function's logs, captured across the integration suite, hold a secret or
personal data, or break the contract template.yaml's ItemsLeftOut metric filter relies on.

Looks for: the signing secrets of events/env.json and the test suites in any encoding (as
written, without the prefix, the raw key in hex, base64 and base64url); anything shaped like an
email address; and the names, usernames and metadata values of the sample payloads in events/
and of the payloads the Rust tests generate (tests/common).

A delivery whose item left something out (`stored_as` says "stored without") must carry
`left_out: true`, which the metric filter `{ $.fields.left_out IS TRUE }` counts, and no other line
may; the suite makes such deliveries (tests/storable.rs, tests/faults.rs), so at least one is seen.

Every delivery line (and every /sync line) written with JSON logs must also be a CloudWatch Embedded Metric Format document
(src/metrics.rs): each declared metric has a number and each dimension a string at the top level,
`Requests` is 1, `Outcome` agrees with the line's outcome (`failed` for every 5xx), and refusals
carry a `Reason`; the template's alarms and dashboard read these metrics.

Usage: audit_logs.py LOG_DIR
"""

import base64
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Secrets the integration tests configure or sign with (tests/http_answers.rs, tests/hostile.rs).
TEST_SECRETS = ["whsec_BR8NEvFoDlkthmWEYw1nsvXFja6W9O1VqFNFSCkyako="]
# Personal data in the payloads the Rust tests build (tests/common/mod.rs `clerk`, history.rs NAMES).
TEST_PERSONAL_DATA = ["Ada", "Grace", "Alan", "Edsger", "Tester", "Augusta", "Byron"]
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+\.[A-Za-z0-9.-]+")
# /sync's secrets: a session token (a JWT: base64url JSON header and payload, `eyJ...`), in whole or
# its signed part, and a Clerk secret key.
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}")
CLERK_SECRET_KEY = re.compile(r"sk_(?:test|live)_[A-Za-z0-9]{8,}")


def secret_forms(secret):
    forms = {secret}
    encoded = secret.removeprefix("whsec_")
    forms.add(encoded)
    key = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    forms |= {key.hex(), base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode().rstrip("=")}
    return forms


def leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from leaves(v)
    elif isinstance(value, str):
        yield value


def sample_personal_data():
    """Names, usernames and metadata values in the sample events' payloads."""
    found = set()
    for path in (ROOT / "events").glob("*.json"):
        event = json.loads(path.read_text())
        if "body" not in event:
            continue
        body = event["body"]
        if event.get("isBase64Encoded"):
            body = base64.b64decode(body).decode()
        data = json.loads(body).get("data", {})
        users = [data] + ([data["user"]] if isinstance(data.get("user"), dict) else [])
        for user in users:
            for field in ("first_name", "last_name", "username"):
                if isinstance(user.get(field), str) and user[field]:
                    found.add(user[field])
            for field in ("public_metadata", "private_metadata", "unsafe_metadata"):
                found |= {v for v in leaves(user.get(field, {})) if len(v) >= 3}
    return found


UNITS = {"Requests": "Count", "WriteUnits": "Count", "IndexWriteUnits": "Count", "ReadUnits": "Count",
         "InvalidWrites": "Count", "StoreLatency": "Milliseconds"}


def emf_problems(document):
    """What is wrong with a delivery line as a metric document (an empty list when nothing)."""
    fields = document.get("fields", {})
    aws = document.get("_aws")
    if not isinstance(aws, dict) or not isinstance(aws.get("Timestamp"), int):
        return ["no _aws.Timestamp: not a metric document"]
    problems = []
    for directive in aws.get("CloudWatchMetrics", []):
        if not directive.get("Namespace"):
            problems.append("a directive without Namespace")
        for dimensions in directive.get("Dimensions", []):
            problems += [f"dimension {d} has no string value" for d in dimensions if not isinstance(document.get(d), str)]
        for metric in directive.get("Metrics", []):
            name = metric.get("Name")
            if not isinstance(document.get(name), (int, float)):
                problems.append(f"metric {name} has no number")
            if UNITS.get(name) != metric.get("Unit"):
                problems.append(f"metric {name} has unit {metric.get('Unit')}")
    status = fields.get("status", 0)
    outcome = "failed" if status >= 500 else fields.get("outcome")
    if document.get("Requests") != 1 or document.get("Outcome") != outcome:
        problems.append(f"Requests/Outcome {document.get('Requests')}/{document.get('Outcome')} for {outcome}")
    if (status >= 400) != ("Reason" in document):
        problems.append(f"status {status} with Reason {document.get('Reason')}")
    return problems


def main():
    log_dir = pathlib.Path(sys.argv[1])
    env = json.loads((ROOT / "events" / "env.json").read_text())
    secrets = set()
    for secret in [env["SyncFunction"]["CLERK_WEBHOOK_SIGNING_SECRET"], *TEST_SECRETS]:
        secrets |= secret_forms(secret)
    words = sample_personal_data() | set(TEST_PERSONAL_DATA)
    word_patterns = [(w, re.compile(r"(?<![A-Za-z0-9])" + re.escape(w) + r"(?![A-Za-z0-9])")) for w in words]

    lines = deliveries = left_out = metric_documents = 0
    problems = []
    for path in sorted(log_dir.glob("*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            lines += 1
            deliveries += '"message":"delivery"' in line
            where = f"{path.name}:{number}"
            problems += [f"{where}: a signing secret" for s in secrets if s in line]
            problems += [f"{where}: an email address" for _ in EMAIL.findall(line)[:1]]
            problems += [f"{where}: a session token" for _ in JWT.findall(line)[:1]]
            problems += [f"{where}: a Clerk secret key" for _ in CLERK_SECRET_KEY.findall(line)[:1]]
            problems += [f"{where}: personal data {w!r}" for w, p in word_patterns if p.search(line)]
            document = json.loads(line) if line.startswith("{") else {}
            fields = document.get("fields", {})
            if fields.get("message") in ("delivery", "sync"):
                metric_documents += 1
                problems += [f"{where}: metrics: {p}" for p in emf_problems(document)]
            stored_without = "stored without" in str(fields.get("stored_as", ""))
            left_out += fields.get("left_out") is True
            if stored_without != (fields.get("left_out") is True):
                problems.append(f"{where}: stored_as and left_out disagree (the ItemsLeftOut metric would miscount)")
    if deliveries < 100:
        sys.exit(f"audit_logs: only {deliveries} delivery lines in {log_dir}: the logs were not captured")
    if left_out == 0:
        problems.append("no delivery logged left_out: true, though the suite stores items without data")
    if problems:
        print("\n".join(problems[:50]))
        sys.exit(f"audit_logs: {len(problems)} problem(s) in {lines} log lines")
    print(f"audit_logs: {lines} log lines ({deliveries} deliveries, {left_out} left_out) hold no secret and no personal data;"
          f" {metric_documents} delivery lines are valid metric documents")


if __name__ == "__main__":
    main()
