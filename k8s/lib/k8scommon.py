"""What every check of k8scheck.py shares: the repository's paths, failing with a reason, saying what was verified."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "k8s" / "monitoring"
CACHE = Path(os.environ.get("KOINOS_CACHE", Path.home() / ".cache" / "koinos-rtc"))


class CheckError(Exception):
    pass


def fail(message: str) -> None:
    raise CheckError(message)


def docs(path: Path | str) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def say(message: str) -> None:
    print(f"  ok  {message}", flush=True)
