"""Policy on the rendered objects: who holds which Secret, security contexts, probes, NetworkPolicies, wiring."""

from __future__ import annotations

import re
from pathlib import Path

from k8scommon import ROOT, docs, fail, say


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
