#!/usr/bin/env python3
"""Creates control's service account on Tuwunel once (the koinos-rtc-service-account Job).

Uses the Synapse-compatible shared-secret registration Tuwunel serves when
registration_shared_secret_file is set, so open registration stays off and the account is never
made a server admin. Idempotent: an existing account is accepted when its password logs in.
With ADMIN=1 it creates a server admin instead (the clinic's first administrator, k8s/README.md).
Standard library only.
"""
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.request

HS = os.environ["HOMESERVER_URL"]
USER = os.environ["SERVICE_USER"]
SHARED_SECRET = open(os.environ["REGISTRATION_SECRET_FILE"]).read().strip()
PASSWORD = open(os.environ["SERVICE_PASSWORD_FILE"]).read().rstrip("\r\n")
ADMIN = os.environ.get("ADMIN") == "1"


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(HS + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"{}")
        except ValueError:
            return e.code, {}


def wait_for_homeserver():
    for _ in range(120):
        try:
            if call("GET", "/_matrix/client/versions")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(5)
    sys.exit(f"homeserver {HS} did not answer for 10 minutes")


def main():
    wait_for_homeserver()
    status, body = call("GET", "/_synapse/admin/v1/register")
    if status != 200:
        sys.exit(f"shared-secret registration unavailable ({status}): is registration_shared_secret_file set?")
    nonce = body["nonce"]
    mac = hmac.new(SHARED_SECRET.encode(), digestmod=hashlib.sha1)
    role = b"admin" if ADMIN else b"notadmin"
    mac.update(b"\x00".join([nonce.encode(), USER.encode(), PASSWORD.encode(), role]))
    status, body = call("POST", "/_synapse/admin/v1/register", {
        "nonce": nonce, "username": USER, "password": PASSWORD, "admin": ADMIN,
        "inhibit_login": True, "mac": mac.hexdigest(),
    })
    if status == 200:
        print(f"created {body.get('user_id', USER)}")
        return
    if body.get("errcode") != "M_USER_IN_USE":
        sys.exit(f"registration refused ({status}): {body.get('errcode')} {body.get('error')}")
    status, body = call("POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": USER},
        "password": PASSWORD, "initial_device_display_name": "koinos-rtc service account check",
    })
    if status != 200:
        sys.exit(f"{USER} exists but the password in the Secret does not log in ({body.get('errcode')})")
    call_logout(body["access_token"])
    print(f"{USER} already exists and its password works")


def call_logout(token):
    req = urllib.request.Request(HS + "/_matrix/client/v3/logout", data=b"{}", method="POST")
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    urllib.request.urlopen(req, timeout=30).close()


if __name__ == "__main__":
    main()
