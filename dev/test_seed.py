#!/usr/bin/env python3
"""dev/seed.py creates "Demo case" from the shared case-room contract
(proto/contract/case-room.json): its room-version rule is checked against the contract's cases."""

import json
import os
import sys
import tempfile
import unittest
from pathlib import Path

DEV_SRC = Path(__file__).resolve().parent
CONTRACT = json.loads((DEV_SRC.parent / "proto/contract/case-room.json").read_text())


def import_seed():
    # seed.py reads its secrets at import, as the supervisor starts it: give it throwaway ones.
    scratch = tempfile.mkdtemp()
    for var in ("KOINOS_REGISTRATION_SECRET_FILE", "KOINOS_SERVICE_PASSWORD_FILE"):
        path = Path(scratch) / var
        path.write_text("not-a-secret\n")
        os.environ[var] = str(path)
    os.environ["KOINOS_STATE_DIR"] = scratch
    sys.path.insert(0, str(DEV_SRC))
    import seed

    return seed


class SeedContractTest(unittest.TestCase):
    def test_the_creator_rule_follows_the_contract(self):
        seed = import_seed()
        for case in CONTRACT["room_versions"]:
            with self.subTest(version=case["version"]):
                self.assertEqual(seed.creators_are_privileged(case["version"]), case["creators_privileged"])
        self.assertEqual(seed.CASE_TYPE, CONTRACT["type"])


if __name__ == "__main__":
    unittest.main()
