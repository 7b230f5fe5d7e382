#!/usr/bin/env python3
"""Seed the dev homeserver with the demo practitioners, the "Demo case" (design.md) and the
end-to-end encrypted "Encrypted case".

Idempotent: existing accounts and the existing cases are reused, so it runs on every `make up`.
Users are registered with Synapse's shared-secret admin API (open registration stays off).
Writes STATE_DIR/demo.json (the cases' room ids, for tests) and STATE_DIR/seeded when done.
Standard library only.
"""
import hashlib
import hmac
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

HS = os.environ.get("KOINOS_HS_URL", "http://127.0.0.1:8008")
SERVER_NAME = os.environ.get("KOINOS_SERVER_NAME", "localhost")
SHARED_SECRET = open(os.environ["KOINOS_REGISTRATION_SECRET_FILE"]).read().strip()
SERVICE_PASSWORD = open(os.environ["KOINOS_SERVICE_PASSWORD_FILE"]).read().strip()
STATE_DIR = os.environ["KOINOS_STATE_DIR"]

PASSWORD = "koinos-dev"
PRACTITIONERS = ["alice", "bob", "carol", "dave", "erin", "frank"]
SERVICE_ACCOUNT = "koinos-rtc"
CASE_NAME = "Demo case"
# An end-to-end encrypted case: its calls encrypt their media with Element Call's key scheme.
ENCRYPTED_CASE_NAME = "Encrypted case"
# How a case room is created: the contract the page and the load tester are checked against too.
CASE_ROOM = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto", "contract", "case-room.json")))
CASE_TYPE = CASE_ROOM["type"]


class MatrixError(Exception):
    def __init__(self, status: int, body: dict):
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


def call(method: str, path: str, body=None, token=None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(HS + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            payload = json.loads(e.read() or b"{}")
        except ValueError:
            payload = {}
        raise MatrixError(e.code, payload) from None


def user_id(localpart: str) -> str:
    return f"@{localpart}:{SERVER_NAME}"


def register(localpart: str, password: str) -> None:
    nonce = call("GET", "/_synapse/admin/v1/register")["nonce"]
    mac = hmac.new(SHARED_SECRET.encode(), digestmod=hashlib.sha1)
    for part in (nonce, localpart, password, "notadmin"):
        mac.update(part.encode())
        if part != "notadmin":
            mac.update(b"\x00")
    try:
        call(
            "POST",
            "/_synapse/admin/v1/register",
            {"nonce": nonce, "username": localpart, "password": password, "admin": False, "mac": mac.hexdigest()},
        )
        print(f"seed: registered {user_id(localpart)}")
    except MatrixError as e:
        if e.body.get("errcode") != "M_USER_IN_USE":
            raise


def login(localpart: str, password: str) -> str:
    resp = call(
        "POST",
        "/_matrix/client/v3/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": password,
            "device_id": "KOINOSSEED",
            "initial_device_display_name": "koinos-rtc dev seeding",
        },
    )
    return resp["access_token"]


def creators_are_privileged(room_version: str) -> bool:
    """Room versions where creators hold their power implicitly (MSC4289): they must not be
    listed in `users` of the power levels."""
    rule = CASE_ROOM["privileged_creators"]
    if any(room_version.startswith(prefix) for prefix in rule["room_version_prefixes"]):
        return True
    return room_version.isdigit() and int(room_version) >= rule["from_numeric_room_version"]


def case_users(token: str) -> dict:
    """Power levels of the case's users: the service account at the admin level, and the
    creator too unless the room version makes creators privileged."""
    admin = CASE_ROOM["admin_power_level"]
    users = {user_id(SERVICE_ACCOUNT): admin}
    version = call("GET", "/_matrix/client/v3/capabilities", token=token)
    default = version.get("capabilities", {}).get("m.room_versions", {}).get("default", "")
    if not creators_are_privileged(default):
        users[user_id("alice")] = admin
    return users


def find_case(token: str, case_name: str) -> str | None:
    for room_id in call("GET", "/_matrix/client/v3/joined_rooms", token=token)["joined_rooms"]:
        quoted = urllib.parse.quote(room_id)
        try:
            create = call("GET", f"/_matrix/client/v3/rooms/{quoted}/state/m.room.create", token=token)
            name = call("GET", f"/_matrix/client/v3/rooms/{quoted}/state/m.room.name", token=token)
        except MatrixError:
            continue
        if create.get("type") == CASE_TYPE and name.get("name") == case_name:
            return room_id
    return None


def ensure_case(tokens: dict, case_name: str, topic: str, encrypted: bool) -> str:
    """The case named `case_name`, created by alice if it does not exist; every practitioner and
    the service account joined."""
    room_id = find_case(tokens["alice"], case_name)
    if room_id is None:
        room_id = call(
            "POST",
            "/_matrix/client/v3/createRoom",
            {
                "name": case_name,
                "topic": topic,
                "preset": CASE_ROOM["preset"],
                "creation_content": {"type": CASE_TYPE},
                "power_level_content_override": {
                    "events": CASE_ROOM["event_power_levels"],
                    "users": case_users(tokens["alice"]),
                },
                # A new case is encrypted (the contract); "Demo case" stays as an unencrypted
                # room made before that would be, which must keep working.
                "initial_state": CASE_ROOM["initial_state"] if encrypted else [],
                "invite": [user_id(u) for u in PRACTITIONERS[1:] + [SERVICE_ACCOUNT]],
            },
            token=tokens["alice"],
        )["room_id"]
        print(f"seed: created {case_name!r} {room_id}")
    quoted = urllib.parse.quote(room_id)
    for localpart in PRACTITIONERS[1:] + [SERVICE_ACCOUNT]:
        call("POST", f"/_matrix/client/v3/join/{quoted}", {}, token=tokens[localpart])
    return room_id


def main() -> int:
    for localpart in PRACTITIONERS + ["mallory"]:
        register(localpart, PASSWORD)
    register(SERVICE_ACCOUNT, SERVICE_PASSWORD)

    tokens = {p: login(p, PASSWORD) for p in PRACTITIONERS}
    tokens[SERVICE_ACCOUNT] = login(SERVICE_ACCOUNT, SERVICE_PASSWORD)

    room_id = ensure_case(tokens, CASE_NAME, "Demonstration case for koinos-rtc", encrypted=False)
    encrypted_room_id = ensure_case(tokens, ENCRYPTED_CASE_NAME, "End-to-end encrypted demonstration case", encrypted=True)

    os.makedirs(STATE_DIR, exist_ok=True)
    with open(os.path.join(STATE_DIR, "demo.json"), "w") as f:
        json.dump({"room_id": room_id, "encrypted_room_id": encrypted_room_id, "server_name": SERVER_NAME}, f)
    open(os.path.join(STATE_DIR, "seeded"), "w").close()
    print(f"seed: {CASE_NAME!r} is {room_id}; practitioners {', '.join(PRACTITIONERS)} joined; mallory in no case")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MatrixError as e:
        print(f"seed: homeserver refused: {e}", file=sys.stderr)
        sys.exit(1)
