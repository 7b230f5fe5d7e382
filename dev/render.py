#!/usr/bin/env python3
"""Renders the dev stack's configs from dev/config/ into the dev data directory, in one step.

    render.py --root ROOT --dev DEV --venv VENV --bin BIN --target TARGET [--mode NAME=VALUE ...]

Every template of dev/config/ is filled from one table of values: the paths given, the secrets
(generated once per dev data directory, mode 0600, never printed), and the variables of the
chosen modes (dev/config/modes.toml). A mode not given keeps the value recorded by the last
render in DEV/modes.json, or its default; `--reset-modes` starts from the defaults. Each file
is written whole and renamed into place, so a component (re)starting meanwhile reads either the
old config or the new one, never a mix. A placeholder without a value, an unknown mode or value,
is an error naming it, and nothing is written.
"""

import argparse
import json
import os
import secrets
import string
import sys
import tomllib
from pathlib import Path

CONFIG = Path(__file__).resolve().parent / "config"

# Secrets the components share, by file name under DEV/secrets.
SECRETS = {
    "LIVEKIT_API_SECRET_FILE": "livekit_api_secret",
    "TURN_SECRET_FILE": "turn_secret",
    "REGISTRATION_SECRET_FILE": "registration_shared_secret",
    "SERVICE_PASSWORD_FILE": "service_password",
    # The gateways' credential for control's gRPC: they hold no LiveKit key.
    "GATEWAY_CREDENTIAL_FILE": "gateway_credential",
}

REDIS_ADDRESS = "127.0.0.1:6380"

# (template, output under DEV, values of this output only, mode bits). Node A always runs; node
# B and Redis only in the multi-node mode. The second gateway is what a clinic scaling out runs:
# the gateways share no state (web/e2e/scale-out.spec.ts moves a session between them).
OUTPUTS = [
    ("homeserver.yaml", "synapse/homeserver.yaml", {}, 0o600),
    ("livekit.yaml", "livekit.yaml",
     {"NODE": "A", "PORT": "7881", "UDP_PORT": "7882", "TCP_PORT": "7883",
      "PROMETHEUS_PORT": "7894", "REDIS": "${LIVEKIT_A_REDIS}"}, 0o600),
    ("livekit.yaml", "livekit-b.yaml",
     {"NODE": "B", "PORT": "7891", "UDP_PORT": "7892", "TCP_PORT": "7893",
      "PROMETHEUS_PORT": "7895", "REDIS": 'redis: {address: "${REDIS_ADDRESS}"}'}, 0o600),
    ("turnserver.conf", "turnserver.conf", {}, 0o600),
    ("control.toml", "control.toml", {}, 0o644),
    ("gateway.toml", "gateway.toml",
     {"INSTANCE": "gateway", "LISTEN": "127.0.0.1:7880", "UPSTREAM": "ws://127.0.0.1:7881"}, 0o644),
    ("gateway.toml", "gateway-b.toml",
     {"INSTANCE": "gateway-b", "LISTEN": "127.0.0.1:7884", "UPSTREAM": "${GATEWAY_B_UPSTREAM}"}, 0o644),
    ("supervisord.conf", "supervisord.conf", {}, 0o644),
]


class RenderError(Exception):
    pass


def fill(text: str, values: dict[str, str], what: str) -> str:
    try:
        return string.Template(text).substitute(values)
    except KeyError as missing:
        raise RenderError(f"{what}: no value for ${{{missing.args[0]}}}") from None
    except ValueError as bad:
        raise RenderError(f"{what}: {bad}") from None


def secret(dev: Path, name: str) -> Path:
    path = dev / "secrets" / name
    if not path.is_file() or path.stat().st_size == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
    return path


def choose_modes(dev: Path, given: list[str], reset: bool) -> dict[str, str]:
    table = tomllib.loads((CONFIG / "modes.toml").read_text())
    recorded = {}
    if not reset and (dev / "modes.json").is_file():
        recorded = json.loads((dev / "modes.json").read_text())
    chosen = {name: recorded.get(name, mode["default"]) for name, mode in table.items()}
    for item in given:
        name, _, value = item.partition("=")
        if name not in table:
            raise RenderError(f"unknown mode {name!r} (modes: {', '.join(table)})")
        if value not in table[name]["values"]:
            raise RenderError(f"mode {name} has no value {value!r} (values: {', '.join(table[name]['values'])})")
        chosen[name] = value
    return chosen


def mode_values(chosen: dict[str, str]) -> dict[str, str]:
    table = tomllib.loads((CONFIG / "modes.toml").read_text())
    values: dict[str, str] = {}
    for name, value in chosen.items():
        if value not in table[name]["values"]:
            raise RenderError(f"DEV/modes.json records {name}={value!r}, which modes.toml no longer has")
        values.update(table[name]["values"][value])
    return values


def write_atomically(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.rendering")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def render(args: argparse.Namespace) -> dict[str, str]:
    dev = Path(args.dev)
    chosen = choose_modes(dev, args.mode, args.reset_modes)
    base = {
        "ROOT": args.root, "DEV": str(dev), "VENV": args.venv, "BIN": args.bin,
        "TARGET": args.target, "STATE": str(dev / "state"), "LOGS": str(dev / "logs"),
        "RUN": str(dev / "run"), "REDIS_ADDRESS": REDIS_ADDRESS,
        "WAIT": f"{args.root}/dev/wait_ready.py --timeout 600",
    }
    for var, name in SECRETS.items():
        base[var] = str(secret(dev, name))
    base["LIVEKIT_API_SECRET"] = Path(base["LIVEKIT_API_SECRET_FILE"]).read_text().strip()
    base["TURN_SECRET"] = Path(base["TURN_SECRET_FILE"]).read_text().strip()
    for var, value in mode_values(chosen).items():
        base[var] = fill(value, base, f"modes.toml {var}")
    # Everything is rendered before anything is written: an error leaves the old configs whole.
    rendered = []
    for template, output, own, mode in OUTPUTS:
        values = dict(base)
        for var, value in own.items():
            values[var] = fill(value, base, f"{output} {var}")
        text = fill((CONFIG / template).read_text(), values, f"dev/config/{template} (for {output})")
        rendered.append((dev / output, text, mode))
    for directory in ("state", "logs", "run", "synapse"):
        (dev / directory).mkdir(parents=True, exist_ok=True)
    for path, text, mode in rendered:
        write_atomically(path, text, mode)
    write_atomically(dev / "modes.json", json.dumps(chosen, indent=2, sort_keys=True) + "\n", 0o644)
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("--root", "--dev", "--venv", "--bin", "--target"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--mode", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--reset-modes", action="store_true")
    args = parser.parse_args()
    try:
        chosen = render(args)
    except RenderError as error:
        print(f"[stack] cannot render the dev configs: {error}", file=sys.stderr)
        return 1
    print(" ".join(f"{name}={value}" for name, value in sorted(chosen.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
