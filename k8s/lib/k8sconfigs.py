"""Every embedded config, checked by the real program it configures (LiveKit, coturn, control, gateway) in a sandbox on free ports."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

import yaml

from k8scommon import CACHE, ROOT, CheckError, docs, fail, say
from k8smonitoring import exported_families, livekit_named
from k8spolicy import pod_spec


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
