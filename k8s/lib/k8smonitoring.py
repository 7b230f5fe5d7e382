"""The monitoring checks: the PrometheusRule against alerts.rules.yml, prometheus-operator objects against its schemas, alert coverage, dashboard queries, LiveKit's metric names."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

import yaml

from k8scommon import MONITORING, docs, fail, say


# --- PrometheusRule ↔ alerts.rules.yml ------------------------------------------------------------

class _Literal(yaml.SafeDumper):
    pass


def _str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Literal.add_representer(str, _str)

PROMETHEUSRULE_HEADER = """\
# The alert rules of alerts.rules.yml for prometheus-operator. Generated from that file
# (`python3 k8s/lib/k8scheck.py sync-rules --write`); k8s/check fails when the two differ.
"""


def prometheusrule_text() -> str:
    rules = yaml.safe_load((MONITORING / "alerts.rules.yml").read_text())
    obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "koinos-rtc",
            "labels": {"app.kubernetes.io/name": "koinos-rtc", "release": "prometheus"},
        },
        "spec": rules,
    }
    return PROMETHEUSRULE_HEADER + yaml.dump(obj, Dumper=_Literal, sort_keys=False, width=100)


def sync_rules(args: list[str]) -> None:
    path = MONITORING / "prometheusrule.yaml"
    want = prometheusrule_text()
    if args == ["--write"]:
        path.write_text(want)
        print(f"wrote {path}")
        return
    have = yaml.safe_load(path.read_text())
    if have["spec"] != yaml.safe_load((MONITORING / "alerts.rules.yml").read_text()):
        fail("k8s/monitoring/prometheusrule.yaml differs from alerts.rules.yml: "
             "run python3 k8s/lib/k8scheck.py sync-rules --write")
    say("PrometheusRule koinos-rtc carries exactly the groups of alerts.rules.yml")


# --- monitoring.coreos.com objects ---------------------------------------------------------------

def crds(files: list[str]) -> None:
    """ServiceMonitor and PrometheusRule are not in Kubernetes' own schemas. They are checked
    against pydantic models generated from prometheus-operator's CRD OpenAPI schemas (PyPI
    cloudcoil-models-prometheus-operator, pinned): types, enums, patterns and required fields as
    the CRD declares them, and unknown fields refused at any depth (the API server would prune
    them silently, so a misspelt field would otherwise just do nothing)."""
    import inspect

    import pydantic
    from cloudcoil import apimachinery
    from cloudcoil.models.prometheus_operator import v1

    classes = [
        obj
        for module in (v1, apimachinery)
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, pydantic.BaseModel) and obj.__module__ == module.__name__
    ]
    for cls in classes:
        cls.model_config["extra"] = "forbid"
    for cls in classes:
        cls.model_rebuild(force=True)
    version = __import__("importlib.metadata").metadata.version("cloudcoil.models.prometheus_operator")
    seen = 0
    errors = []
    for file in files:
        for doc in docs(file):
            if not doc.get("apiVersion", "").startswith("monitoring.coreos.com/"):
                continue
            if doc["apiVersion"] != "monitoring.coreos.com/v1":
                errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {doc['apiVersion']} is not checked")
                continue
            model = getattr(v1, doc["kind"], None)
            if model is None:
                errors.append(f"no model for {doc['kind']}")
                continue
            try:
                model.model_validate(doc)
                seen += 1
            except pydantic.ValidationError as e:
                errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {e}")
    if errors:
        fail("\n".join(errors))
    if seen == 0:
        fail("no monitoring.coreos.com objects found")
    say(f"{seen} prometheus-operator objects valid against the CRD schemas of prometheus-operator "
        f"{version.rsplit('.', 1)[0]} (unknown fields refused)")


# --- alert coverage ------------------------------------------------------------------------------

def alert_coverage(args: list[str]) -> None:
    rules_path, tests_path = args
    alerts = [r["alert"] for g in yaml.safe_load(Path(rules_path).read_text())["groups"]
              for r in g["rules"] if "alert" in r]
    fired, quiet = set(), set()
    for test in yaml.safe_load(Path(tests_path).read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    problems = [f"{a}: no promtool test in which it fires" for a in alerts if a not in fired]
    problems += [f"{a}: no promtool test in which it stays quiet" for a in alerts if a not in quiet]
    problems += [f"{a}: tested but not in the rules" for a in (fired | quiet) - set(alerts)]
    if problems:
        fail("\n".join(problems))
    say(f"each of the {len(alerts)} alerts fires in a promtool test and stays quiet in another")


# --- dashboard queries ---------------------------------------------------------------------------

def dashboard_promql(args: list[str]) -> None:
    dashboard = json.loads(Path(args[0]).read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"koinos:dashboard_{i}", "expr": re.sub(r"\$\{?\w+\}?", ".*", e)}
        for i, e in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        yaml.safe_dump(rules, f)
        f.flush()
        out = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"dashboard query does not parse:\n{out.stdout}{out.stderr}")
    say(f"all {len(exprs)} dashboard queries parse (promtool check rules)")


def livekit_named() -> set[str]:
    """The livekit_* metric families the dashboard's queries and the alert rules use."""
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    rules = yaml.safe_load((MONITORING / "alerts.rules.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    return {re.sub(r"_(bucket|sum|count)$", "", n)
            for e in exprs for n in re.findall(r"(?<![\w$])(livekit_\w+)", e)}


def exported_families(text: str) -> set[str]:
    return set(re.findall(r"^# TYPE (\w+) ", text, re.M))


def livekit_names(args: list[str]) -> None:
    """Every livekit_* metric the dashboard and the alert rules name is one LiveKit exported."""
    exported = exported_families(Path(args[0]).read_text())
    named = livekit_named()
    missing = named - exported
    if missing:
        fail(f"named in the dashboard or alerts but not exported by LiveKit: {sorted(missing)}")
    if not named:
        fail("the dashboard names no LiveKit metric")
    say(f"the {len(named)} LiveKit metrics the dashboard and alerts use are exported by LiveKit v1.13.5")
