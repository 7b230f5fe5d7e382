#!/usr/bin/env python3
"""Tests of dev/render.py: every mode combination renders, each mode changes what it says and
nothing else, the rendered configs pass the components' own --check-config, and a bad choice
or template is refused with nothing written. Run by `make unit` (python3 -m unittest)."""

import itertools
import os
import subprocess
import sys
import tempfile
import tomllib
import unittest
from pathlib import Path

DEV_SRC = Path(__file__).resolve().parent
ROOT = DEV_SRC.parent
sys.path.insert(0, str(DEV_SRC))
import render  # noqa: E402

CACHE = Path(os.environ.get("KOINOS_CACHE", Path.home() / ".cache/koinos-rtc"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
MODES = tomllib.loads((DEV_SRC / "config/modes.toml").read_text())


def run_render(dev: Path, *modes: str, reset: bool = False) -> subprocess.CompletedProcess:
    args = [sys.executable, str(DEV_SRC / "render.py"), "--root", str(ROOT), "--dev", str(dev),
            "--venv", str(CACHE / "venv"), "--bin", str(CACHE / "bin"), "--target", str(TARGET)]
    for mode in modes:
        args += ["--mode", mode]
    if reset:
        args.append("--reset-modes")
    return subprocess.run(args, capture_output=True, text=True)


def snapshot(dev: Path) -> dict[str, str]:
    return {output: (dev / output).read_text() for _, output, _, _ in render.OUTPUTS}


class RenderTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dev = Path(self.tmp.name) / "dev"

    def tearDown(self):
        self.tmp.cleanup()

    def render_ok(self, *modes: str, reset: bool = False) -> dict[str, str]:
        done = run_render(self.dev, *modes, reset=reset)
        self.assertEqual(done.returncode, 0, done.stderr)
        return snapshot(self.dev)

    def test_defaults_are_single_node_with_delayed_events(self):
        configs = self.render_ok()
        self.assertIn("\nmax_event_delay_duration: 24h\n", configs["synapse/homeserver.yaml"])
        self.assertNotIn("\nredis:", configs["livekit.yaml"])
        self.assertIn('\nredis: {address: "127.0.0.1:6380"}\n', configs["livekit-b.yaml"])
        self.assertIn('upstream_url = "ws://127.0.0.1:7881"', configs["gateway-b.toml"])
        self.assertIn('listen = "127.0.0.1:7884"', configs["gateway-b.toml"])

    def test_each_mode_changes_only_its_own_lines(self):
        base = self.render_ok()
        expected = {
            "delayed-events=off": {"synapse/homeserver.yaml"},
            "multi-node=on": {"livekit.yaml", "gateway-b.toml"},
        }
        for choice, files in expected.items():
            changed = self.render_ok(choice)
            self.assertEqual({f for f in base if base[f] != changed[f]}, files, choice)
            self.render_ok(reset=True)
        off = self.render_ok("delayed-events=off")["synapse/homeserver.yaml"]
        self.assertNotIn("\nmax_event_delay_duration:", off)
        on = self.render_ok("multi-node=on")
        self.assertIn('\nredis: {address: "127.0.0.1:6380"}\n', on["livekit.yaml"])
        self.assertIn('upstream_url = "ws://127.0.0.1:7891"', on["gateway-b.toml"])

    def test_a_mode_not_given_keeps_the_last_choice_until_reset(self):
        self.render_ok("multi-node=on")
        self.assertIn("\nredis:", self.render_ok("delayed-events=off")["livekit.yaml"])
        self.assertNotIn("\nredis:", self.render_ok(reset=True)["livekit.yaml"])

    def test_secrets_are_made_once_private_and_never_printed(self):
        first = run_render(self.dev)
        secret = (self.dev / "secrets/livekit_api_secret").read_text().strip()
        self.assertGreaterEqual(len(secret), 32)
        self.assertEqual((self.dev / "secrets/livekit_api_secret").stat().st_mode & 0o777, 0o600)
        self.assertEqual((self.dev / "livekit.yaml").stat().st_mode & 0o777, 0o600)
        second = run_render(self.dev)
        self.assertEqual(secret, (self.dev / "secrets/livekit_api_secret").read_text().strip())
        for done in (first, second):
            for name in render.SECRETS.values():
                value = (self.dev / "secrets" / name).read_text().strip()
                self.assertNotIn(value, done.stdout + done.stderr)

    def test_an_unknown_mode_or_value_is_refused_and_nothing_changes(self):
        before = self.render_ok()
        for bad, says in [("multi-node=maybe", "has no value 'maybe'"), ("turbo=on", "unknown mode 'turbo'")]:
            done = run_render(self.dev, bad)
            self.assertNotEqual(done.returncode, 0)
            self.assertIn(says, done.stderr)
            self.assertEqual(snapshot(self.dev), before)

    def test_a_placeholder_without_a_value_is_named(self):
        with self.assertRaisesRegex(render.RenderError, r"no value for \$\{NOPE\}"):
            render.fill("a: ${NOPE}\n", {}, "test")

    def test_every_mode_combination_passes_the_components_own_checks(self):
        binaries = {name: TARGET / "debug" / name for name in ("koinos-control", "koinos-gateway")}
        if not all(path.exists() for path in binaries.values()):
            self.skipTest("control and gateway are not built (make build)")
        python = CACHE / "venv/bin/python"
        names = list(MODES)
        for values in itertools.product(*(MODES[n]["values"] for n in names)):
            choice = [f"{n}={v}" for n, v in zip(names, values)]
            self.render_ok(*choice)
            if python.exists() and not (self.dev / "synapse/signing.key").exists():
                keys = [str(python), "-m", "synapse.app.homeserver", "-c",
                        str(self.dev / "synapse/homeserver.yaml"), "--generate-keys"]
                subprocess.run(keys, capture_output=True, check=True)
            checks = [[binaries["koinos-control"], "--check-config", "--config", self.dev / "control.toml"]]
            for gateway in ("gateway.toml", "gateway-b.toml"):
                checks.append([binaries["koinos-gateway"], "--check-config", "--config", self.dev / gateway])
            if python.exists():
                checks.append([python, "-m", "synapse.config", "-c", self.dev / "synapse/homeserver.yaml"])
            for check in checks:
                done = subprocess.run([str(a) for a in check], capture_output=True, text=True)
                self.assertEqual(done.returncode, 0, f"{choice} {check[-1]}: {done.stdout}{done.stderr}")


if __name__ == "__main__":
    unittest.main()
