#!/usr/bin/env python3
"""The checks of k8s/check that need more than kustomize, kubernetes-validate and promtool.

    k8scheck.py sync-rules [--write]       PrometheusRule == alerts.rules.yml (--write regenerates it)
    k8scheck.py crds FILE...               monitoring.coreos.com objects against the operator's schemas
    k8scheck.py alert-coverage RULES TESTS every alert fires in a promtool test, and is quiet in one
    k8scheck.py policy RENDERED            secrets, security contexts, probes, NetworkPolicies, wiring
    k8scheck.py configs RENDERED           every embedded config accepted by its real program
    k8scheck.py dashboard-promql DASHBOARD every dashboard query parses (promtool check rules)

Runs in the venv k8s/check prepares (PyYAML, pydantic models of prometheus-operator's CRDs).
Each check prints what it verified and exits 1 naming what is wrong.
"""

from __future__ import annotations

import sys

from k8scommon import CheckError
from k8sconfigs import configs
from k8smonitoring import alert_coverage, crds, dashboard_promql, livekit_names, sync_rules
from k8spolicy import policy

COMMANDS = {
    "sync-rules": sync_rules,
    "crds": crds,
    "alert-coverage": alert_coverage,
    "dashboard-promql": dashboard_promql,
    "policy": policy,
    "configs": configs,
    "livekit-metrics": livekit_names,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__)
        sys.exit(2)
    try:
        COMMANDS[sys.argv[1]](sys.argv[2:])
    except CheckError as e:
        print(f"  FAIL {sys.argv[1]}: {e}", file=sys.stderr)
        sys.exit(1)
