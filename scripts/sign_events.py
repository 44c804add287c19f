#!/usr/bin/env python3
"""Re-sign the sample API Gateway events in events/ so the function accepts them now.

Clerk's webhooks are signed by Svix (Standard Webhooks): the function only accepts a delivery
whose `svix-signature` is an HMAC-SHA256 of `{svix-id}.{svix-timestamp}.{raw body}` made with the
endpoint's secret, and whose `svix-timestamp` is within 300 s of its clock. Signed sample events
therefore go stale five minutes after signing; this script gives them a fresh timestamp and
signature with the local test secret (the one in events/env.json), leaving the body bytes as
they are. Standard library only.

    python3 scripts/sign_events.py                 # every events/*.json -> events/signed/
    python3 scripts/sign_events.py events/user-created.json --out /tmp/ev
    python3 scripts/sign_events.py --in-place      # rewrite events/*.json (the committed copies)
    python3 scripts/sign_events.py --now 1795720000 --secret whsec_...
    python3 scripts/sign_events.py --self-test     # check the HMAC against the official vectors

Then, within five minutes:

    sam local invoke SyncFunction -e events/signed/user-created.json --env-vars events/env.json
    cargo lambda invoke clerk-sync --data-file events/signed/user-created.json

On purpose, two files stay invalid: `refused-bad-signature*` is signed with another secret, and
`refused-stale-timestamp*` carries a timestamp 600 s old; the function answers both 401.
The other events are versioned along one story (user created, updated; session pending,
created, ended; two other sessions removed and revoked; an organization created, the user made
its admin; user deleted; organization deleted): replayed in that order each one is applied, and
an older one replayed after a newer one is answered `stale`. `ignored-*` is a type clerk-sync
does not store.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import sys
import time
from pathlib import Path

EVENTS = Path(__file__).resolve().parent.parent / "events"
ENV_FILE = EVENTS / "env.json"
FUNCTION = "SyncFunction"
# Test-only secret, never configured anywhere: refused-bad-signature* is signed with it so that
# the function, holding the local secret, refuses it.
OTHER_SECRET = "whsec_BR8NEvFoDlkthmWEYw1nsvXFja6W9O1VqFNFSCkyako="
STALE_BY_SECS = 600  # twice the 300 s the function tolerates
HANDLED_PREFIXES = ("user.", "session.", "organization.", "organizationMembership.")

# Official Standard Webhooks / Svix vectors: (secret, id, timestamp, payload, signature).
VECTORS = [
    ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
     b'{"test": 2432232314}', "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
    ("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553,
     b'{"email":"test@example.com","username":"test_user"}',
     "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="),
    ("whsec_plJ3nmyCDGBKInavdOK15jsl", "msg_loFOjxBNrRLzqYUf", 1731705121,
     b'{"event_type":"ping","data":{"success":true}}',
     "v1,rAvfW3dJ/X/qxhsaXPOyyCGmRKsaKWcsNccKXlIktD0="),
]


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `svix-signature` value for one delivery: `v1,` + base64(HMAC-SHA256)."""
    encoded = secret.strip().removeprefix("whsec_")
    key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    tag = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(tag).decode()


def self_test() -> int:
    failures = 0
    for secret, msg_id, timestamp, payload, expected in VECTORS:
        got = sign(secret, msg_id, timestamp, payload)
        ok = hmac.compare_digest(got, expected)
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {msg_id}: {got}")
    return 1 if failures else 0


def set_header(event: dict, name: str, value: str) -> None:
    """Sets a header in `headers` and, for REST API events, `multiValueHeaders`, whatever its case."""
    for field, wrap in (("headers", lambda v: v), ("multiValueHeaders", lambda v: [v])):
        headers = event.get(field)
        if headers is None:
            continue
        key = next((k for k in headers if k.lower() == name), name)
        headers[key] = wrap(value)


def header(event: dict, name: str) -> str:
    return next(v for k, v in event["headers"].items() if k.lower() == name)


def resign(event: dict, name: str, local_secret: str, now: int) -> tuple[str, str]:
    """Re-signs one event in place; returns its Clerk event type and the outcome to expect."""
    body = event["body"]
    raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode("utf-8")
    timestamp = now - STALE_BY_SECS if name.startswith("refused-stale-timestamp") else now
    secret = OTHER_SECRET if name.startswith("refused-bad-signature") else local_secret
    set_header(event, "svix-timestamp", str(timestamp))
    set_header(event, "svix-signature", sign(secret, header(event, "svix-id"), timestamp, raw))

    # The request itself arrives now, also for the stale one: only its signed timestamp is old.
    context = event["requestContext"]
    clock = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))
    if "timeEpoch" in context:  # HTTP API, payload 2.0
        context["timeEpoch"], context["time"] = now * 1000, clock
    if "requestTimeEpoch" in context:  # REST API, payload 1.0
        context["requestTimeEpoch"], context["requestTime"] = now * 1000, clock

    event_type = json.loads(raw).get("type", "?")
    if name.startswith("refused-"):
        outcome = "refused"
    elif event_type.startswith(HANDLED_PREFIXES):
        outcome = "applied"
    else:
        outcome = "ignored"
    return event_type, outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path,
                        help="events to sign (default: every events/*.json except env.json)")
    parser.add_argument("--secret", help=f"signing secret (default: {FUNCTION}'s in events/env.json)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--out", type=Path, default=EVENTS / "signed",
                        help="directory for the signed copies (default: events/signed/)")
    target.add_argument("--in-place", action="store_true", help="rewrite the input files")
    parser.add_argument("--now", type=int, default=None, help="unix seconds to sign at (default: now)")
    parser.add_argument("--self-test", action="store_true",
                        help="check the HMAC against the official test vectors and exit")
    args = parser.parse_args()

    if args.self_test:
        return self_test()

    secret = args.secret or json.loads(ENV_FILE.read_text())[FUNCTION]["CLERK_WEBHOOK_SIGNING_SECRET"]
    now = args.now if args.now is not None else int(time.time())
    files = args.files or sorted(p for p in EVENTS.glob("*.json") if p != ENV_FILE)
    if not args.in_place:
        args.out.mkdir(parents=True, exist_ok=True)

    for path in files:
        event = json.loads(path.read_text(encoding="utf-8"))
        event_type, outcome = resign(event, path.stem, secret, now)
        dest = path if args.in_place else args.out / path.name
        dest.write_text(json.dumps(event, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        shown = dest.resolve().relative_to(Path.cwd()) if dest.resolve().is_relative_to(Path.cwd()) else dest
        print(f"{shown}  {event_type}  -> {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
