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

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
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


# --- policy on the rendered objects --------------------------------------------------------------

# Which workloads may hold which Secret (the design: the gateway holds no LiveKit key).
SECRET_HOLDERS = {
    "livekit-api": {"livekit", "koinos-control"},
    "gateway-credential": {"koinos-control", "koinos-gateway"},
    # TURN credentials come from control only (one source, control's TTL): LiveKit mints none.
    "turn-secret": {"coturn", "koinos-control"},
    "homeserver-service-account": {"koinos-control", "koinos-rtc-service-account"},
    "tuwunel-registration": {"tuwunel", "koinos-rtc-service-account"},
    "turn-tls": {"coturn"},
    "redis-auth": {"redis", "livekit"},
}
# Pods allowed what Pod Security "restricted" forbids, and why (k8s/README.md, "Network").
MEDIA_PODS = {"livekit": "hostPort for ICE media", "coturn": "host network for TURN"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
SECRETISH = re.compile(r"SECRET|PASSWORD|TOKEN|CREDENTIAL|KEYS?$", re.I)
# Settings that would put a secret value into a ConfigMap.
INLINE_SECRET_SETTINGS = re.compile(
    r"^\s*(api_secret|secret|service_password|password|static-auth-secret|credential|"
    r"registration_shared_secret|registration_token|turn_secret|emergency_password|keys|"
    r"requirepass)\s*[=:]", re.M)


def served_paths(source: Path) -> set[str]:
    return set(re.findall(r'\.route\(\s*"([^"]+)"', source.read_text()))


# Health endpoints each program really serves: ours read from the routers' source, LiveKit's root
# handler (it answers "OK"; k8s/check's LiveKit start requests it), Tuwunel's from its docs.
def health_endpoints() -> dict[str, set[str]]:
    return {
        "control": served_paths(ROOT / "control" / "src" / "rest.rs") & {"/healthz", "/readyz"},
        "gateway": served_paths(ROOT / "gateway" / "src" / "lib.rs") & {"/healthz", "/readyz"},
        "livekit": {"/"},
        "tuwunel": {"/_tuwunel/server_version", "/_matrix/client/versions"},
    }


def workloads(objs: list[dict]) -> list[dict]:
    return [o for o in objs if o["kind"] in WORKLOAD_KINDS]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"].get("labels", {})


def secret_refs(workload: dict) -> dict[str, set[str]]:
    """Secret name -> keys this workload reads (env, envFrom, volumes)."""
    refs: dict[str, set[str]] = {}
    spec = pod_spec(workload)
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        for env in c.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs.setdefault(ref["name"], set()).add(ref["key"])
        for src in c.get("envFrom", []):
            if "secretRef" in src:
                refs.setdefault(src["secretRef"]["name"], set()).add("*")
    for vol in spec.get("volumes", []):
        if "secret" in vol:
            keys = {i["key"] for i in vol["secret"].get("items", [])} or {"*"}
            refs.setdefault(vol["secret"]["secretName"], set()).update(keys)
    return refs


def documented_secrets() -> dict[str, set[str]]:
    """The Secrets k8s/README.md tells the operator to create, with their keys."""
    text = (ROOT / "k8s" / "README.md").read_text()
    found: dict[str, set[str]] = {}
    for m in re.finditer(r"create secret generic ([\w-]+)((?:\s*\\?\s*--from-(?:literal|file)=[\w.-]+=\S+)+)", text):
        found.setdefault(m.group(1), set()).update(re.findall(r"--from-(?:literal|file)=([\w.-]+)=", m.group(2)))
    for m in re.finditer(r"create secret tls ([\w-]+)", text):
        found.setdefault(m.group(1), set()).update({"tls.crt", "tls.key", "*"})
    return found


def matches(selector: dict, labels: dict) -> bool:
    if selector.get("matchExpressions"):
        fail(f"matchExpressions are not evaluated by this check: {selector}")
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def ingress_sources(objs: list[dict], target: dict, port: int, protocol: str) -> list:
    """Who may connect to pods labelled `target` on port/protocol, by the NetworkPolicies:
    a list of ("pod", labels-selector) / ("namespace", selector) / ("any",) peers; None when no
    policy selects the pods (everything allowed)."""
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"
                and "Ingress" in o["spec"].get("policyTypes", ["Ingress"])
                and matches(o["spec"]["podSelector"], target)]
    if not policies:
        return None
    peers = []
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(p.get("protocol", "TCP") == protocol and p.get("port") in (port, None)
                                 for p in ports):
                continue
            sources = rule.get("from")
            if not sources:
                peers.append(("any",))
                continue
            for peer in sources:
                if "ipBlock" in peer:
                    peers.append(("ipBlock", peer["ipBlock"]))
                elif "namespaceSelector" in peer:
                    peers.append(("namespace", peer["namespaceSelector"], peer.get("podSelector")))
                else:
                    peers.append(("pod", peer["podSelector"]))
    return peers


def policy(args: list[str]) -> None:
    objs = docs(args[0])
    name = Path(args[0]).stem
    problems: list[str] = []
    by_kind = lambda kind: [o for o in objs if o["kind"] == kind]  # noqa: E731
    wls = workloads(objs)

    # Secrets: none committed, only the documented holders, only documented keys.
    if by_kind("Secret"):
        problems.append("the rendered objects contain a Secret: secrets are created by the operator")
    documented = documented_secrets()
    holders: dict[str, set[str]] = {}
    for w in wls:
        for secret, keys in secret_refs(w).items():
            holders.setdefault(secret, set()).add(w["metadata"]["name"])
            missing = keys - documented.get(secret, set()) - {"*"}
            if secret not in documented:
                problems.append(f"{w['metadata']['name']} reads Secret {secret}, which k8s/README.md does not create")
            elif missing:
                problems.append(f"{w['metadata']['name']} reads keys {sorted(missing)} of Secret {secret}, "
                                f"which k8s/README.md does not create")
    for secret, who in holders.items():
        allowed = SECRET_HOLDERS.get(secret)
        if allowed is None:
            problems.append(f"Secret {secret} (held by {sorted(who)}) is not in the check's list of holders")
        elif not who <= allowed:
            problems.append(f"Secret {secret} is held by {sorted(who - allowed)}, which must not hold it")
    if "livekit-api" in holders and holders["livekit-api"] != {"livekit", "koinos-control"}:
        problems.append(f"livekit-api must be held by LiveKit and control only, not {sorted(holders['livekit-api'])}")
    for ingress in by_kind("Ingress"):
        for tls in ingress["spec"].get("tls", []):
            if tls["secretName"] not in documented:
                problems.append(f"Ingress {ingress['metadata']['name']}: TLS Secret {tls['secretName']} is not created in k8s/README.md")
    for cm in by_kind("ConfigMap"):
        for key, text in cm.get("data", {}).items():
            if key.endswith((".py", ".json")):
                continue
            m = INLINE_SECRET_SETTINGS.search(text)
            if m:
                problems.append(f"ConfigMap {cm['metadata']['name']}/{key} sets {m.group(1)} inline: use a Secret")

    health = health_endpoints()
    for w in wls:
        wname = w["metadata"]["name"]
        spec = pod_spec(w)
        psc = spec.get("securityContext", {})
        if not psc.get("runAsNonRoot") or not psc.get("runAsUser"):
            problems.append(f"{wname}: pod securityContext must set runAsNonRoot and a non-root runAsUser")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{wname}: seccompProfile RuntimeDefault")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{wname}: automountServiceAccountToken: false (no pod here talks to the API server)")
        media = wname in MEDIA_PODS
        if not media and (spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC")):
            problems.append(f"{wname}: host namespaces are for {sorted(MEDIA_PODS)} only")
        if any("hostPath" in v for v in spec.get("volumes", [])):
            problems.append(f"{wname}: hostPath volume")
        for c in spec["containers"]:
            where = f"{wname}/{c['name']}"
            csc = c.get("securityContext", {})
            if csc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation: false")
            if csc.get("privileged"):
                problems.append(f"{where}: privileged")
            if csc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem: true")
            if "ALL" not in csc.get("capabilities", {}).get("drop", []):
                problems.append(f"{where}: capabilities.drop [ALL]")
            added = set(csc.get("capabilities", {}).get("add", []))
            if added - {"NET_BIND_SERVICE"} or (added and not media):
                problems.append(f"{where}: adds capabilities {sorted(added)}")
            if not media and any("hostPort" in p for p in c.get("ports", [])):
                problems.append(f"{where}: hostPort is for {sorted(MEDIA_PODS)} only")
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(kind, {}):
                        problems.append(f"{where}: resources.{kind}.{r}")
            image = c["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            if not tag or tag == "latest":
                problems.append(f"{where}: image {image} must be pinned to a tag")
            if w["kind"] == "Job":
                continue
            for probe in ("livenessProbe", "readinessProbe"):
                p = c.get(probe)
                if not p:
                    problems.append(f"{where}: no {probe}")
                    continue
                if "httpGet" in p:
                    known = health.get(c["name"])
                    path = p["httpGet"]["path"]
                    if known is None or path not in known:
                        problems.append(f"{where}: {probe} {path} is not a health endpoint {c['name']} serves ({sorted(known or [])})")
                    port = p["httpGet"]["port"]
                    names = {x.get("name") for x in c.get("ports", [])} | {x["containerPort"] for x in c.get("ports", [])}
                    if port not in names:
                        problems.append(f"{where}: {probe} port {port} is not a container port")

    # Services select pods; Ingress backends are Services with those ports; ConfigMaps exist.
    labels_of = {w["metadata"]["name"]: pod_labels(w) for w in wls}
    services = {s["metadata"]["name"]: s for s in by_kind("Service")}
    for s in services.values():
        if not any(matches({"matchLabels": s["spec"]["selector"]}, lab) for lab in labels_of.values()):
            problems.append(f"Service {s['metadata']['name']} selects no pod")
    for ingress in by_kind("Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                svc = path["backend"]["service"]
                ports = services.get(svc["name"], {}).get("spec", {}).get("ports", [])
                if not any(p.get("name") == svc["port"].get("name") or p["port"] == svc["port"].get("number") for p in ports):
                    problems.append(f"Ingress {ingress['metadata']['name']}: backend {svc} does not exist")
    configmaps = {c["metadata"]["name"] for c in by_kind("ConfigMap")}
    for w in wls:
        for v in pod_spec(w).get("volumes", []):
            if "configMap" in v and v["configMap"]["name"] not in configmaps:
                problems.append(f"{w['metadata']['name']}: ConfigMap {v['configMap']['name']} is not rendered")
    for hpa in by_kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if not any(w["kind"] == ref["kind"] and w["metadata"]["name"] == ref["name"] for w in wls):
            problems.append(f"HPA {hpa['metadata']['name']} scales nothing")
    for pdb in by_kind("PodDisruptionBudget"):
        if not any(matches(pdb["spec"]["selector"], lab) for lab in labels_of.values()):
            problems.append(f"PDB {pdb['metadata']['name']} selects no pod")

    # NetworkPolicies: default deny, and who reaches what.
    if not any(o["spec"]["podSelector"] == {} and "ingress" not in o["spec"]
               and o["spec"].get("policyTypes") == ["Ingress"] for o in by_kind("NetworkPolicy")):
        problems.append("no default-deny ingress NetworkPolicy")

    def allowed_pods(target: str, port: int, protocol: str = "TCP") -> set[str] | str:
        peers = ingress_sources(objs, labels_of[target], port, protocol)
        if peers is None:
            return "anyone (no policy selects it)"
        if any(p[0] != "pod" for p in peers):
            return f"peers outside the namespace's pods: {[p for p in peers if p[0] != 'pod']}"
        return {n for n, lab in labels_of.items() for p in peers if matches(p[1], lab)}

    expectations = [
        ("livekit", 7880, {"koinos-control", "koinos-gateway"}, "LiveKit's HTTP API and signalling"),
        ("koinos-control", 50051, {"koinos-gateway"}, "control's gRPC"),
    ]
    if "redis" in labels_of:
        expectations.append(("redis", 6379, {"livekit"}, "Redis"))
    for target, port, want, what in expectations:
        if target not in labels_of:
            problems.append(f"no workload {target}")
            continue
        got = allowed_pods(target, port)
        if got != want:
            problems.append(f"{what} (:{port}) is reachable by {got}, must be exactly {sorted(want)}")
    for port, protocol in ((7881, "TCP"), (7882, "UDP")):
        peers = ingress_sources(objs, labels_of["livekit"], port, protocol)
        if peers is not None and ("any",) not in peers:
            problems.append(f"LiveKit's media port {port}/{protocol} must be open to browsers")
    for w in wls:
        if ingress_sources(objs, pod_labels(w), 1, "TCP") is None:
            problems.append(f"{w['metadata']['name']}: no NetworkPolicy selects it")

    if problems:
        fail("\n".join(problems))
    say(f"{name}: no Secret objects or inline secrets; each Secret held only by its workloads "
        f"({', '.join(f'{k}: {len(v)}' for k, v in sorted(holders.items()))}) and created in k8s/README.md")
    say(f"{name}: every pod non-root with seccomp, no privilege escalation, read-only root, "
        f"capabilities dropped, requests and limits, pinned images; host network/ports only for "
        f"{', '.join(sorted(MEDIA_PODS))}")
    say(f"{name}: liveness/readiness probes on endpoints the programs serve; Services, Ingress "
        f"backends, ConfigMaps, HPA and PDB targets exist")
    say(f"{name}: default-deny ingress; LiveKit :7880 only from control and the gateway; control "
        f"gRPC only from the gateway" + ("; Redis only from LiveKit" if "redis" in labels_of else ""))


# --- embedded configs, checked by the real programs ----------------------------------------------

def free_ports(n: int) -> list[int]:
    """Ports ≥ 20000 that are free now (TCP and UDP), away from the dev stack's."""
    ports: list[int] = []
    candidate = 20000 + (os.getpid() * 37) % 20000
    while len(ports) < n:
        candidate += 1
        if candidate > 60000:
            candidate = 20001
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        ports.append(candidate)
    return ports


class Sandbox:
    """One container's filesystem as its pod spec describes it, under a temporary directory:
    ConfigMap volumes with their rendered data, Secret volumes with made-up values for exactly
    the keys the pod names, emptyDirs. Config text, args and env are rewritten to the sandbox's
    paths, so a file a config names but the pod does not mount is missing here as it would be
    in the cluster."""

    def __init__(self, objs: list[dict], workload: dict, container: str, root: Path):
        self.root = root
        self.configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in objs if c["kind"] == "ConfigMap"}
        spec = pod_spec(workload)
        self.container = next(c for c in spec["containers"] if c["name"] == container)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        self.mounts: list[str] = []
        self.secret_values: dict[tuple[str, str], str] = {}
        for mount in self.container.get("volumeMounts", []):
            vol = volumes.get(mount["name"])
            target = self.path(mount["mountPath"])
            self.mounts.append(mount["mountPath"])
            if vol is None:  # a volumeClaimTemplate
                target.mkdir(parents=True, exist_ok=True)
                continue
            files: dict[str, str] = {}
            mode = 0o644
            if "configMap" in vol:
                data = self.configmaps[vol["configMap"]["name"]]
                items = vol["configMap"].get("items") or [{"key": k, "path": k} for k in data]
                files = {i["path"]: data[i["key"]] for i in items}
            elif "secret" in vol:
                name = vol["secret"]["secretName"]
                items = vol["secret"].get("items") or [{"key": k, "path": k} for k in ("tls.crt", "tls.key")]
                files = {i["path"]: self.secret(name, i["key"]) for i in items}
                mode = vol["secret"].get("defaultMode", 0o644) & 0o770 | 0o600
            elif "emptyDir" in vol:
                target.mkdir(parents=True, exist_ok=True)
                continue
            else:
                fail(f"volume type of {mount['name']} not handled by the check")
            if "subPath" in mount:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(files[mount["subPath"]])
                target.chmod(mode)
                continue
            target.mkdir(parents=True, exist_ok=True)
            for rel, text in files.items():
                (target / rel).write_text(text)
                (target / rel).chmod(mode)
        # Config files now hold cluster paths: point them into the sandbox.
        for mount_path in self.mounts:
            base = self.path(mount_path)
            for f in [base] if base.is_file() else base.rglob("*") if base.is_dir() else []:
                if f.is_file() and "/run/secrets/" not in str(f):
                    mode = f.stat().st_mode
                    f.write_text(self.rewrite(f.read_text()))
                    f.chmod(mode)

    def path(self, cluster_path: str) -> Path:
        return self.root / cluster_path.lstrip("/")

    def rewrite(self, text: str) -> str:
        """Cluster paths under a mount point to sandbox paths, in one pass."""
        if not self.mounts:
            return text
        alternatives = "|".join(re.escape(m) for m in sorted(self.mounts, key=len, reverse=True))
        return re.sub(rf"(?<![\w/.-])({alternatives})(?=/|[^\w.-]|$)",
                      lambda m: str(self.path(m.group(1))), text)

    def secret(self, name: str, key: str) -> str:
        if (name, key) not in self.secret_values:
            if key in ("tls.crt", "tls.key"):
                if ("tls", key) not in self.secret_values:
                    self.secret_values.update(self_signed_tls(self.root))
            else:
                self.secret_values[(name, key)] = f"check-{name}-{key}-" + os.urandom(16).hex()
        return self.secret_values.get((name, key)) or self.secret_values[("tls", key)]

    def env(self, overrides: dict[str, str] | None = None) -> dict[str, str]:
        """The container's environment as the kubelet builds it: literal values, Secret keys
        (made up), the node's address (loopback here), `$(VAR)` references expanded."""
        env: dict[str, str] = {}
        for item in self.container.get("env", []):
            if "value" in item:
                value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"])
            else:
                source = item["valueFrom"]
                if "secretKeyRef" in source:
                    value = self.secret(source["secretKeyRef"]["name"], source["secretKeyRef"]["key"])
                elif "fieldRef" in source:
                    value = "127.0.0.1"
                else:
                    fail(f"env source {source} not handled by the check")
            env[item["name"]] = self.rewrite(value)
        env.update(overrides or {})
        return env

    def args(self, env: dict[str, str]) -> list[str]:
        return [self.rewrite(re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a))
                for a in self.container.get("command", []) + self.container.get("args", [])]


def self_signed_tls(root: Path) -> dict:
    key, crt = root / "check-tls.key", root / "check-tls.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=turn.clinic.example", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True)
    return {("tls", "tls.crt"): crt.read_text(), ("tls", "tls.key"): key.read_text()}


def find(objs: list[dict], kind: str, name: str) -> dict:
    for o in objs:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    fail(f"no {kind} {name} in the rendered objects")


def configmap_data(objs: list[dict], workload: dict, key: str) -> str:
    for v in pod_spec(workload).get("volumes", []):
        if "configMap" in v:
            data = find(objs, "ConfigMap", v["configMap"]["name"]).get("data", {})
            if key in data:
                return data[key]
    fail(f"{workload['metadata']['name']} mounts no ConfigMap with {key}")


def run_check_config(binary: str, workload: dict, objs: list[dict], tmp: Path) -> None:
    """control / gateway: `--check-config` on the mounted ConfigMap with the pod's environment."""
    name = workload["metadata"]["name"]
    container = pod_spec(workload)["containers"][0]["name"]
    box = Sandbox(objs, workload, container, tmp / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOINOS_CONTROL_", "KOINOS_GATEWAY_"))}
    env.update(box.env())
    argv = [binary] + box.args(env) + ["--check-config"]
    out = subprocess.run(argv, env=env, capture_output=True, text=True)
    text = (out.stdout + out.stderr).strip()
    if out.returncode != 0:
        fail(f"{name}: `{Path(binary).name} --check-config` refuses its ConfigMap:\n{text}")
    say(f"{name}: its ConfigMap and environment pass `{Path(binary).name} --check-config` ({text})")


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> str:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            fail(f"exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except OSError as e:
            last = e
            time.sleep(0.3)
    fail(f"{url} did not answer within {timeout:.0f} s: {last}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_livekit(objs: list[dict], tmp: Path, binary: str, metrics_out: Path) -> None:
    """LiveKit has no check mode: `livekit-server ports` parses the config strictly (unknown
    keys refused) and validates its rtc section, but prints its error and exits 0, so its output
    is read. Then LiveKit is started on the same config with only its four port numbers moved
    to free ports ≥ 20000 (and, multi-node, REDIS_HOST pointed at a Redis started here with the
    Secret's made-up password); it must serve GET / ("OK", the probe's endpoint) and /metrics,
    log its routing mode, and stop cleanly."""
    workload = find(objs, "Deployment", "livekit")
    box = Sandbox(objs, workload, "livekit", tmp / "livekit")
    env = dict(os.environ)
    env.update(box.env())
    argv = [binary] + box.args(env)
    out = subprocess.run(argv + ["ports"], env=env, capture_output=True, text=True, timeout=60)
    if not out.stdout.startswith("TCP Ports"):
        fail(f"livekit-server refuses its ConfigMap:\n{out.stdout}{out.stderr}")
    config_path = next(Path(a) for a in argv if a.endswith(".yaml"))
    config = yaml.safe_load(config_path.read_text())
    http, tcp, udp, prom, redis_port = free_ports(5)
    config["port"], config["rtc"]["tcp_port"], config["rtc"]["udp_port"] = http, tcp, udp
    config["prometheus"]["port"] = prom
    config_path.write_text(yaml.safe_dump(config))
    redis = None
    multi = "REDIS_HOST" in env
    if multi:
        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--requirepass", env["REDIS_PASSWORD"]],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        env["REDIS_HOST"] = f"127.0.0.1:{redis_port}"
    log = tmp / "livekit.log"
    with open(log, "w") as logf:
        proc = subprocess.Popen(argv, env=env, stdout=logf, stderr=subprocess.STDOUT)
    try:
        try:
            root = wait_http(f"http://127.0.0.1:{http}/", 60, proc)
            metrics = wait_http(f"http://127.0.0.1:{prom}/metrics", 20, proc)
        except CheckError as e:
            fail(f"LiveKit did not come up on its ConfigMap: {e}\n{log.read_text()[-3000:]}")
        if root.strip() != "OK":
            fail(f"LiveKit's / answered {root!r}")
        # Some families appear with LiveKit's first node-stats update, a few seconds in.
        deadline = time.monotonic() + 20
        while not livekit_named() <= exported_families(metrics) and time.monotonic() < deadline:
            time.sleep(1)
            metrics = wait_http(f"http://127.0.0.1:{prom}/metrics", 5, proc)
        with open(metrics_out, "a") as f:
            f.write(metrics)
        mode = "multi-node" if multi else "single-node"
        text = log.read_text()
        single = "using single-node routing" in text
        if multi:
            # A LiveKit node of a multi-node deployment registers itself in Redis.
            nodes = ""
            deadline = time.monotonic() + 10
            while not nodes.strip() and time.monotonic() < deadline:
                nodes = subprocess.run(["redis-cli", "-p", str(redis_port), "HKEYS", "nodes"],
                                       env={**env, "REDISCLI_AUTH": env["REDIS_PASSWORD"]},
                                       capture_output=True, text=True).stdout
                time.sleep(0.3)
            if single or not nodes.strip().startswith("ND_"):
                fail(f"LiveKit did not register as a node in Redis (HKEYS nodes: {nodes!r}):\n{text[-3000:]}")
        elif not single:
            fail(f"LiveKit did not log 'using single-node routing':\n{text[-3000:]}")
    finally:
        stop(proc)
        if redis is not None:
            stop(redis)
    say(f"livekit: `livekit-server ports` accepts its ConfigMap (strict); started on it, it served "
        f"/ and /metrics and ran {mode} routing" + (" (registered in Redis, with its password)" if multi else ""))


def stun_binding(port: int) -> bool:
    request = bytes.fromhex("0001 0000 2112a442") + os.urandom(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(request, ("127.0.0.1", port))
        try:
            reply, _ = s.recvfrom(2048)
        except OSError:
            return False
    return reply[:2] == b"\x01\x01" and reply[8:20] == request[8:20]


def check_coturn(objs: list[dict], tmp: Path) -> None:
    """coturn has no check mode either (it warns about a bad line and carries on, or exits). It is
    started on its ConfigMap and the Deployment's arguments (the secret from the Secret, made
    up) with the listening ports and relay range moved to free ports ≥ 20000 and the listeners
    on loopback; it must answer a STUN binding request on UDP, complete a TLS handshake on its
    TURN-over-TLS port with the mounted certificate, and log no configuration complaint."""
    workload = find(objs, "Deployment", "coturn")
    box = Sandbox(objs, workload, "coturn", tmp / "coturn")
    env = dict(os.environ)
    env.update(box.env())
    argv = box.args(env)
    argv[0] = shutil.which(argv[0]) or fail(f"{argv[0]} not installed")
    conf_path = next(Path(a) for a in argv if a.endswith("turnserver.conf"))
    plain, tls, relay = free_ports(3)
    text = conf_path.read_text()
    for key, value in (("listening-port", plain), ("tls-listening-port", tls),
                       ("min-port", relay), ("max-port", relay + 20)):
        text, n = re.subn(rf"^{key}=.*$", f"{key}={value}", text, flags=re.M)
        if n != 1:
            fail(f"turnserver.conf has no single {key}= line")
    text += "listening-ip=127.0.0.1\nrelay-ip=127.0.0.1\n"
    conf_path.write_text(text)
    log = tmp / "coturn.log"
    with open(log, "w") as logf:
        proc = subprocess.Popen(argv, env=env, stdout=logf, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not stun_binding(plain):
            if proc.poll() is not None or time.monotonic() > deadline:
                fail(f"coturn did not answer STUN on its ConfigMap:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection(("127.0.0.1", tls), timeout=5) as raw:
                with context.wrap_socket(raw) as conn:
                    version = conn.version()
        except OSError as e:
            fail(f"coturn's TLS port ({tls}) refused a handshake: {e}\n{log.read_text()[-3000:]}")
        if version not in ("TLSv1.2", "TLSv1.3"):
            fail(f"coturn's TLS port negotiated {version}")
    finally:
        stop(proc)
    complaints = [line for line in log.read_text().splitlines()
                  if re.search(r"bad configuration|unknown|unrecognized|error", line, re.I)]
    if complaints:
        fail("coturn complained about its configuration:\n" + "\n".join(complaints))
    say(f"coturn: started on its ConfigMap and arguments, it answered STUN and TURN-over-TLS "
        f"({version}) and logged no configuration complaint")


# Tuwunel is in no registry this machine reaches, so its program cannot check its config here.
# Its settings are compared with the keys of Tuwunel 1.9's example configuration that this
# deployment uses (a misspelt key also stops Tuwunel itself: error_on_unknown_config_opts), and
# with what control expects of it.
TUWUNEL_KEYS = {
    "global": {"server_name", "database_path", "database_backup_path", "database_backups_to_keep",
               "address", "port", "error_on_unknown_config_opts", "allow_registration",
               "registration_shared_secret_file", "allow_federation", "openid_token_ttl",
               "well_known"},
    "global.well_known": {"client", "server", "livekit_url"},
}


def check_cross(objs: list[dict]) -> None:
    control = tomllib.loads(configmap_data(objs, find(objs, "Deployment", "koinos-control"), "control.toml"))
    gateway = tomllib.loads(configmap_data(objs, find(objs, "Deployment", "koinos-gateway"), "gateway.toml"))
    livekit = yaml.safe_load(configmap_data(objs, find(objs, "Deployment", "livekit"), "livekit.yaml"))
    tuwunel = tomllib.loads(configmap_data(objs, find(objs, "StatefulSet", "tuwunel"), "tuwunel.toml"))
    turnconf = configmap_data(objs, find(objs, "Deployment", "coturn"), "turnserver.conf")
    problems = []
    for section, keys in TUWUNEL_KEYS.items():
        table = tuwunel
        for part in section.split("."):
            table = table.get(part, {})
        unknown = set(table) - keys
        if unknown:
            problems.append(f"tuwunel.toml [{section}]: keys {sorted(unknown)} are not Tuwunel 1.9 settings this check knows")
    g = tuwunel["global"]
    if not g.get("error_on_unknown_config_opts"):
        problems.append("tuwunel.toml: error_on_unknown_config_opts = true (a typo must stop the server)")
    if g["well_known"]["livekit_url"] != control["public_rtc_service_url"]:
        problems.append("tuwunel well_known.livekit_url must be control's public_rtc_service_url")
    if g["server_name"] != control["homeserver"]["server_name"]:
        problems.append("tuwunel server_name != control homeserver.server_name")
    if g["openid_token_ttl"] > control["homeserver"].get("openid_token_lifetime", 3600):
        problems.append("control homeserver.openid_token_lifetime must cover Tuwunel's openid_token_ttl")
    if g["well_known"]["client"] != control["homeserver"]["public_url"]:
        problems.append("tuwunel well_known.client != control homeserver.public_url")
    if livekit["room"]["auto_create"] is not False:
        problems.append("LiveKit room.auto_create must be false (only control creates rooms)")

    def service_port(url: str) -> None:
        m = re.match(r"^\w+://([\w-]+):(\d+)", url)
        if not m:
            problems.append(f"{url} does not name an in-cluster Service and port")
            return
        svc = next((o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == m.group(1)), None)
        if svc is None or not any(p["port"] == int(m.group(2)) for p in svc["spec"]["ports"]):
            problems.append(f"{url}: no Service {m.group(1)} with port {m.group(2)}")

    for url in (control["homeserver"]["url"], control["livekit"]["api_url"], gateway["upstream_url"],
                gateway["control_grpc_url"], *livekit["webhook"]["urls"]):
        service_port(url)
    origin = re.match(r"^(https?://[^/]+)", control["public_rtc_service_url"]).group(1)
    if origin not in gateway["allowed_origins"]:
        problems.append(f"gateway allowed_origins must include the page's origin {origin}")
    public = re.match(r"^wss?://([^/:]+)", control["livekit"]["public_url"]).group(1)
    hosts = {r["host"]: r for o in objs if o["kind"] == "Ingress" for r in o["spec"]["rules"]}
    rule = hosts.get(public)
    if not rule or not any(p["path"] == "/rtc" and p["backend"]["service"]["name"] == "koinos-gateway"
                           for p in rule["http"]["paths"]):
        problems.append(f"the Ingress must route {public}/rtc to the gateway (control's livekit.public_url)")
    turn_uris = {re.match(r"^turns?:([^:?]+):(\d+)", u).groups() for u in control["turn"]["uris"]}
    if livekit["rtc"].get("turn_servers"):
        problems.append("LiveKit must mint no TURN credentials (rtc.turn_servers): control is their one "
                        "source, with its TTL, and the gateway hands them out in LiveKit's join answer")
    if "no-tcp-relay" not in turnconf.split():
        problems.append("coturn must run with no-tcp-relay: a TCP relay reaches every TCP port of the "
                        "exempted LiveKit nodes (their API among them)")
    ports = {k: v for k, v in re.findall(r"^(listening-port|tls-listening-port)=(\d+)", turnconf, re.M)}
    if {p for _, p in turn_uris} - set(ports.values()):
        problems.append(f"control's TURN ports {sorted(p for _, p in turn_uris)} are not coturn's {ports}")
    if "use-auth-secret" not in turnconf.split():
        problems.append("coturn must run with use-auth-secret (control mints REST credentials)")
    if problems:
        fail("\n".join(problems))
    say("cross-checks: Tuwunel keys known and its well_known.livekit_url, server_name, client URL "
        "and OpenID lifetime match control; in-cluster URLs name real Services and ports; the page's "
        "origin is allowed by the gateway; /rtc goes to the gateway; TURN ports agree between control "
        "and coturn, only control mints TURN credentials, coturn relays UDP only; auto_create off")


def configs(args: list[str]) -> None:
    rendered = args[0]
    objs = docs(rendered)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
    with tempfile.TemporaryDirectory(prefix="koinos-k8s-") as t:
        tmp = Path(t)
        run_check_config(str(target / "koinos-control"), find(objs, "Deployment", "koinos-control"), objs, tmp)
        run_check_config(str(target / "koinos-gateway"), find(objs, "Deployment", "koinos-gateway"), objs, tmp)
        metrics = Path(os.environ.get("KOINOS_LIVEKIT_METRICS_OUT", tmp / "livekit-metrics.txt"))
        check_livekit(objs, tmp, str(CACHE / "bin" / "livekit-server"), metrics)
        check_coturn(objs, tmp)
        check_cross(objs)


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
