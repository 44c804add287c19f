#!/usr/bin/env python3
"""A local stand-in for Clerk, for the local loop's POST /sync (scripts/local): the Backend API
calls the function makes, and a way to get a session token, with an RSA key made at start.

    fake_clerk.py PORT     serves http://127.0.0.1:PORT until killed

Backend API (`Authorization: Bearer sk_test_local` required, as Clerk requires the secret key):
    GET /v1/jwks                                   the key set (kid = the sample instance id)
    GET /v1/users/{id}                             the sample user (events/user-updated.json)
    GET /v1/sessions/{id}                          the sample session (events/session-created.json)
    GET /v1/users/{id}/organization_memberships    the sample membership, as a {data, total_count} page
Not Clerk's, for the loop and the benchmark only:
    GET /local/token[?sub=user_...&sid=sess_...]   a fresh RS256 session token (the sample user and
                                                   session by default); another user and session is
                                                   served as a copy of the samples under those ids
    GET /local/requests                            how many Backend API requests were answered

Any other id answers Clerk's 404 (`resource_not_found`). Needs `cryptography` (moto brings it).
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

EVENTS = Path(__file__).resolve().parent.parent / "events"
SECRET_KEY = "sk_test_local"


def sample(name):
    """The `data` and `instance_id` of a sample event's body."""
    body = json.loads(json.loads((EVENTS / f"{name}.json").read_text())["body"])
    return body["data"], body.get("instance_id")


USER, INSTANCE_ID = sample("user-updated")
SESSION, _ = sample("session-created")
MEMBERSHIP, _ = sample("organization-membership-created")
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
# Sessions minted by /local/token for other users: session id -> user id.
SESSIONS = {SESSION["id"]: USER["id"]}
REQUESTS = {"count": 0}
LOCK = threading.Lock()


def user(user_id):
    return USER if user_id == USER["id"] else dict(USER, id=user_id)


def session(session_id):
    return dict(SESSION, id=session_id, user_id=SESSIONS[session_id], status="active")


def membership(user_id):
    public_user_data = dict(MEMBERSHIP["public_user_data"], user_id=user_id)
    return MEMBERSHIP if user_id == USER["id"] else dict(MEMBERSHIP, public_user_data=public_user_data)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def jwks():
    numbers = KEY.public_key().public_numbers()
    key = {"kid": INSTANCE_ID, "kty": "RSA", "alg": "RS256", "use": "sig", "n": uint(numbers.n), "e": uint(numbers.e)}
    return {"keys": [key]}


def token(user_id: str, session_id: str) -> str:
    """A session token as Clerk's frontend SDKs get it: 60 s of life, nbf 10 s before iat."""
    now = int(time.time())
    header = {"alg": "RS256", "kid": INSTANCE_ID, "typ": "JWT", "cat": "cl_B7d4PD111AAA"}
    claims = {
        "sub": user_id,
        "sid": session_id,
        "iss": "https://clerk.local.example",
        "azp": "http://localhost:3000",
        "iat": now,
        "nbf": now - 10,
        "exp": now + 60,
        "v": 2,
        "sts": "active",
    }
    signed = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = KEY.sign(signed.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signed}.{b64url(signature)}"


class Handler(BaseHTTPRequestHandler):
    # Keep-alive, as Clerk's API, and each answer written in one piece: headers and body sent
    # apart meet the client's delayed ACK and wait 40 ms, which would dwarf what is measured.
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16

    def do_GET(self):  # noqa: N802 (http.server's name)
        url = urllib.parse.urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        if parts == ["local", "token"]:
            query = urllib.parse.parse_qs(url.query)
            user_id, session_id = query.get("sub", [USER["id"]])[0], query.get("sid", [SESSION["id"]])[0]
            with LOCK:
                SESSIONS[session_id] = user_id
            return self.answer(200, {"token": token(user_id, session_id)})
        if parts == ["local", "requests"]:
            return self.answer(200, REQUESTS)
        with LOCK:
            REQUESTS["count"] += 1
            users = set(SESSIONS.values())
        if self.headers.get("Authorization") != f"Bearer {SECRET_KEY}":
            return self.answer(401, {"errors": [{"code": "authentication_invalid"}]})
        if parts == ["v1", "jwks"]:
            return self.answer(200, jwks())
        if len(parts) == 3 and parts[:2] == ["v1", "users"] and parts[2] in users:
            return self.answer(200, user(parts[2]))
        if len(parts) == 3 and parts[:2] == ["v1", "sessions"] and parts[2] in SESSIONS:
            return self.answer(200, session(parts[2]))
        if len(parts) == 4 and parts[:2] == ["v1", "users"] and parts[2] in users and parts[3] == "organization_memberships":
            return self.answer(200, {"data": [membership(parts[2])], "total_count": 1})
        return self.answer(404, {"errors": [{"code": "resource_not_found"}]})

    def answer(self, status, body):
        # Compact and in Clerk's member order, as Clerk answers: the same text a webhook carries.
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *_):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
