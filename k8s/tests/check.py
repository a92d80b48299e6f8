#!/usr/bin/env python3
"""The manifest contract: rendered manifests checked against the Kubernetes schemas and
against the binaries they run. Usage: check.py RENDERED.yaml... (scripts/k8s-check.sh)

Schemas: kubernetes-validate, strict (unknown fields fail), for the Kubernetes version
kind ships by default and for the oldest one the manifests support.

Contract, for each Deployment (one per service, named like services/<name>):
- names: container, image, ServiceAccount, Service, PodDisruptionBudget,
  HorizontalPodAutoscaler and NetworkPolicy share the service's name;
- env: every variable set is one the binary reads, or one that a later variable the
  binary reads expands as `$(NAME)`; every required one is set (k8s/tests/envvars.py
  derives both from the Rust source); values are literal or a `secretKeyRef` (whose
  Secret is in the manifests or made by scripts/kind-up.sh; so are the Secrets mounted
  as volumes, whose `items` name their keys); every `$(NAME)` names a
  variable defined earlier in the list (Kubernetes leaves the others unexpanded);
  StatefulSets (the broker, the database) have readiness and liveness probes;
- ports: the serving port is named `grpc` for a service with protos, else `http`, and
  is LISTEN_ADDR's (or the binary's default); every container port is named and is one
  the binary listens on (a `*LISTEN_ADDR` variable, or its default `*PORT` constant in
  config.rs), on every interface;
- probes: startup, readiness and liveness; gRPC probes on a container port, naming a
  health service the container serves (`""`, `liveness`, `readiness` or a service of
  proto/<name>/), `readiness` for startup and readiness and `liveness` for liveness;
  HTTP probes on a container port and a route of the service;
- upstreams: each `*_ADDR` URL, and the host of NATS_URL and DATABASE_URL, names a
  Service of the manifests and one of its ports, whose target is the container port
  of the pods it selects (of a Deployment or a StatefulSet: the broker and the database);
- selectors: Deployment, Service, PodDisruptionBudget and NetworkPolicy selectors match
  the pods they mean, HPAs scale an existing Deployment;
- network: every pod is isolated both ways; the policies allow exactly the calls the
  upstream addresses (and NATS_URL, DATABASE_URL) make, DNS to kube-dns for the pods that have upstreams, and
  outside traffic to the gateway only — nothing else;
- TLS: an `https://` upstream is called with a CA (GRPC_CLIENT_TLS_CA_FILE) and
  answered with TLS (GRPC_TLS_CERT_FILE); an `http://` one never reaches a TLS port;
  every volumeMount names a volume of its pod; in the production overlay
  (PRODUCTION), every gRPC service runs mutual TLS with reflection off, its probes on
  the health-only port, every upstream is `https://`, and nothing is exposed outside
  the cluster and no Secret is rendered (the operator creates them);
- start-up: the startup probe's budget covers DATABASE_CONNECT_TIMEOUT and
  NATS_CONNECT_TIMEOUT (where DATABASE_URL, NATS_URL are set) plus STARTUP_MARGIN: a
  service waiting for its database and broker is not restarted into a crash loop;
- state: in every overlay, a service that may run more than one replica (its HPA's
  maxReplicas, or replicas) has DATABASE_URL and NATS_URL set where its binary reads
  them: no replica keeps state, or hears events, that the others do not;
- kind overlay: the pods' requests (every Deployment rolling out at once) fit a
  2-CPU, 4 GiB node beside Kubernetes' own; every image pinned, IfNotPresent;
- shutdown: terminationGracePeriodSeconds > preStop sleep + SHUTDOWN_DELAY +
  SHUTDOWN_GRACE_PERIOD + MARGIN; the preStop hook is the native `sleep`;
- security: Pod Security Standards `restricted` fields, no service account token,
  CPU and memory requests and limits (StatefulSets too); checkov skip annotations
  give a reason; overlays' namespaces enforce `restricted`.
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import envvars  # noqa: E402
from manifests import (  # noqa: E402
    ROOT, Failures, Manifests, container, container_port, env_of, expand, grpc_services, http_routes,
    image_name, ns, parse_upstream, parse_url, pod_labels, pod_spec, references, secret_refs,
    service_dns_names, where,
)
from netpol import Cluster, Endpoint, selector_matches  # noqa: E402

# Kubernetes versions the manifests are validated for: the default node image of kind
# v0.33.0 (kindest/node:v1.37.0), and the oldest with the native preStop `sleep`
# action enabled by default (beta in 1.30).
TARGET_VERSION = "1.37"
MIN_VERSION = "1.30"
# Seconds left, after the drain, for the process to exit: at least this, and more than
# shared::telemetry::FLUSH_TIMEOUT (the bound on flushing spans) where it exists.
MARGIN = 5
# The only service reachable from outside the cluster (ARCHITECTURE.md).
ENTRY = {"gateway"}
# The overlay of `make kind-up`, which must fit a small machine.
KIND = "kind"
# k8s/base rendered alone: what the overlays build on, never deployed as it is.
BASE = "base"
HEALTH_PROBE_NAMES = {"", "liveness", "readiness"}
# Deployments that are not services of this repository: the observability stack of an
# overlay (k8s/overlays/kind/observability). They get the security, selector and network
# checks, not the contract of a service binary.
OBSERVABILITY = {"otel-collector", "jaeger", "prometheus", "grafana"}
# Optional upstreams: read only when set, so never required; when set, they are calls
# (and network edges) like the `*_ADDR` upstreams.
OPTIONAL_UPSTREAMS = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"}
# The broker and the database (ARCHITECTURE.md): read only when set, and then the
# service connects to the host of the URL, an edge like an upstream's. Their schemes.
URL_UPSTREAMS = {"NATS_URL": ("nats",), "DATABASE_URL": ("postgres", "postgresql")}
# Secrets that are not in the repository: scripts/kind-up.sh creates them, with every
# key a secretKeyRef names (checked against the script's text).
KIND_UP = ROOT / "scripts" / "kind-up.sh"
PRODUCTION_KUSTOMIZATION = ROOT / "k8s" / "overlays" / "production" / "kustomization.yaml"
# The edges of the observability stack that no env variable names: (from, to, port).
# Prometheus' scrapes (to every service's `metrics` port) and its API discovery are
# added by check_network, by pod IP: no DNS.
OBSERVABILITY_CALLS = {("otel-collector", "jaeger", 4317), ("grafana", "prometheus", 9090),
                       ("grafana", "jaeger", 16686)}
SCRAPER = "prometheus"
# Pods that call the Kubernetes API and so need a token: Prometheus (kubernetes_sd).
API_CLIENTS = {"prometheus"}
SHARED_SRC = ROOT / "shared" / "src"
# The overlay that must prove its hardening (k8s/overlays/production).
PRODUCTION = "production"
# Values shared::config::Env::flag reads as false.
FALSE = {"false", "0", "no", "off"}


def validate_schemas(m: Manifests, failures: Failures) -> None:
    import kubernetes_validate
    from kubernetes_validate import utils
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    # kubernetes-validate reads and parses the (large) schema files anew for every
    # object: read each once.
    if not hasattr(utils.schema_contents, "cache_info"):
        utils.schema_contents = functools.lru_cache(maxsize=None)(utils.schema_contents)

    for version in (TARGET_VERSION, MIN_VERSION):
        for doc in m.docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except ValidationError as e:
                path = ".".join(str(p) for p in e.path) or "(top)"
                failures.add(f"{m.label}: {where(doc)}", f"invalid for Kubernetes {version} at {path}: {e.message}")
            except SchemaNotFoundError:
                failures.add(f"{m.label}: {where(doc)}",
                             f"no schema for {doc.get('apiVersion')} {doc.get('kind')} in Kubernetes {version}")


def check_names(m: Manifests, f: Failures) -> None:
    for d in m.deployments:
        name, w = d["metadata"]["name"], f"{m.label}: {where(d)}"
        if name in OBSERVABILITY:
            f.check(container(d)["name"] == name, w, "the container is not named like the Deployment")
            continue
        f.check((ROOT / "services" / name / "Cargo.toml").exists(), w, f"no services/{name}: one name everywhere")
        c = container(d)
        f.check(c["name"] == name, w, f"container {c['name']!r} is not named like the Deployment")
        f.check(image_name(c.get("image", "")) == name, w, f"image {c.get('image')!r} is not the image {name!r}")
        f.check(pod_spec(d).get("serviceAccountName") == name, w, f"serviceAccountName is not {name!r}")
        for kind in ("ServiceAccount", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"):
            f.check(m.get(kind, name) is not None, w, f"no {kind} named {name!r}")
        labels = pod_labels(d)
        f.check(labels.get("app.kubernetes.io/name") == name, w, f"pod label app.kubernetes.io/name is not {name!r}")
        for key in ("app.kubernetes.io/part-of", "app.kubernetes.io/component"):
            f.check(key in labels, w, f"pod template has no {key} label")


def check_env(m: Manifests, d: dict, f: Failures) -> envvars.ServiceEnv:
    name, w = d["metadata"]["name"], f"{m.label}: {where(d)}"
    read = envvars.service_env(ROOT / "services" / name / "src", SHARED_SRC)
    entries = container(d).get("env") or []
    check_expansion(m, d, f)
    # Variables set only to be expanded into one the binary reads (a password into a URL).
    expanded = {ref for e in entries if e["name"] in read.reads for ref in references(e.get("value", ""))}
    seen = set()
    for e in entries:
        var = e["name"]
        f.check(var not in seen, w, f"env {var} is set twice")
        seen.add(var)
        f.check(var in read.reads or var in expanded, w, f"env {var} is set but services/{name} never reads it "
                f"(it reads: {', '.join(sorted(read.reads))}; rule in k8s/tests/envvars.py)")
    for var in sorted(read.required - seen):
        f.add(w, f"env {var} is required (its default is a loopback address) but not set")
    for key in ("envFrom",):
        f.check(key not in container(d), w, f"{key} hides which variables are set: list them in env")
    return read


def made_elsewhere(m: Manifests, secret: str, key: str) -> bool:
    """A Secret the manifests refer to but do not contain: scripts/kind-up.sh makes it
    (it names the Secret and the key), or, in the production overlay, the operator does:
    no Secret is rendered there, and its kustomization.yaml names each one and its keys."""
    source = PRODUCTION_KUSTOMIZATION if m.label == PRODUCTION else KIND_UP
    made = source.read_text() if source.exists() else ""
    if m.label == PRODUCTION and secret.endswith("-tls"):
        secret = "<service>-tls"  # one line there covers every service, new ones too
    return all(re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(word), made) for word in (secret, key))


def check_expansion(m: Manifests, workload: dict, f: Failures) -> None:
    """`$(NAME)` refers to an earlier variable; valueFrom is a secretKeyRef whose Secret exists."""
    w = f"{m.label}: {where(workload)}"
    for c in pod_spec(workload)["containers"] + (pod_spec(workload).get("initContainers") or []):
        defined: set[str] = set()
        for e in c.get("env") or []:
            for ref in references(e.get("value", "")):
                f.check(ref in defined, w, f"env {e['name']} expands $({ref}), which is not defined before it in "
                        f"container {c['name']}'s env: Kubernetes would leave it as the text $({ref})")
            if "valueFrom" in e:
                f.check(set(e["valueFrom"]) == {"secretKeyRef"}, w, f"env {e['name']} uses valueFrom "
                        f"{sorted(e['valueFrom'])}: the checks and the manifest-driven run know literal values "
                        "and secretKeyRef only")
            defined.add(e["name"])
        for var, (secret, key) in secret_refs(c).items():
            obj = m.get("Secret", secret)
            if obj is not None:
                keys = set(obj.get("data") or {}) | set(obj.get("stringData") or {})
                f.check(key in keys, w, f"env {var}: Secret {secret} has no key {key}")
                continue
            f.check(made_elsewhere(m, secret, key), w,
                    f"env {var}: Secret {secret} (key {key}) is neither in the manifests nor made by scripts/kind-up.sh")
    # Secrets mounted as files: likewise, each key the volume names.
    for volume in pod_spec(workload).get("volumes") or []:
        secret = (volume.get("secret") or {}).get("secretName")
        if secret is None:
            continue
        keys = [item["key"] for item in volume["secret"].get("items") or []]
        f.check(bool(keys), w, f"volume {volume['name']}: Secret {secret} without `items`: list the keys the "
                "container reads, so that the checks and the manifest-driven run know them")
        obj = m.get("Secret", secret)
        if obj is not None:
            present = set(obj.get("data") or {}) | set(obj.get("stringData") or {})
            for key in keys:
                f.check(key in present, w, f"volume {volume['name']}: Secret {secret} has no key {key}")
            continue
        for key in keys:
            f.check(made_elsewhere(m, secret, key), w,
                    f"volume {volume['name']}: Secret {secret} (key {key}) is neither in the manifests nor made by "
                    "scripts/kind-up.sh")


def listening_ports(name: str, env: dict[str, str]) -> dict[int, str]:
    """The ports the binary listens on, each with the variable that says so: every
    `*LISTEN_ADDR` set in env, and for those unset, their default from config.rs."""
    src = ROOT / "services" / name / "src"
    ports = {}
    for var, default in envvars.listen_defaults(src).items():
        value = env.get(var)
        port = value.rpartition(":")[2] if value else default
        if port is not None and str(port).isdigit():
            ports[int(port)] = var
    for var, value in env.items():
        if var.endswith("LISTEN_ADDR") and value.rpartition(":")[2].isdigit():
            ports[int(value.rpartition(":")[2])] = var
    return ports


def check_ports(m: Manifests, d: dict, f: Failures) -> dict | None:
    name, w = d["metadata"]["name"], f"{m.label}: {where(d)}"
    c = container(d)
    env = env_of(c)
    ports = c.get("ports") or []
    want = "grpc" if grpc_services(name) else "http"
    listening = listening_ports(name, env)
    for p in ports:
        f.check(bool(p.get("name")), w, f"container port {p['containerPort']} has no name")
        f.check(p["containerPort"] in listening, w, f"container port {p['containerPort']} is not a port the binary "
                f"listens on ({', '.join(f'{v}: {n}' for n, v in sorted(listening.items())) or 'none known'})")
    serving = [p for p in ports if p.get("name") == want]
    if not f.check(len(serving) == 1, w, f"no container port named {want!r} ({'has protos' if want == 'grpc' else 'no protos'})"):
        return None
    port = serving[0]
    f.check(listening.get(port["containerPort"]) == "LISTEN_ADDR", w,
            f"the {want} port {port['containerPort']} is not LISTEN_ADDR's port")
    for var, value in env.items():
        if var.endswith("LISTEN_ADDR"):
            f.check(value.rpartition(":")[0] in ("0.0.0.0", "[::]"), w,
                    f"{var}={value} does not listen on every interface: probes and Services could not reach it")
    return port


def check_probes(m: Manifests, d: dict, f: Failures) -> None:
    name, w = d["metadata"]["name"], f"{m.label}: {where(d)}"
    c = container(d)
    served = HEALTH_PROBE_NAMES | grpc_services(name)
    routes = http_routes(name)
    expected_grpc = {"startupProbe": "readiness", "readinessProbe": "readiness", "livenessProbe": "liveness"}
    for kind, health_name in expected_grpc.items():
        probe = c.get(kind)
        if not f.check(probe is not None, w, f"no {kind}"):
            continue
        if "grpc" in probe:
            port, service = probe["grpc"]["port"], probe["grpc"].get("service", "")
            f.check(container_port(c, port) is not None, w, f"{kind} gRPC port {port} is not a container port")
            f.check(service in served, w, f"{kind} asks health for {service!r}, which {name} does not serve "
                    f"(it serves {sorted(served)})")
            f.check(service == health_name, w, f"{kind} should ask for {health_name!r}, not {service!r} "
                    "(shared/src/health.rs: readiness turns NOT_SERVING at shutdown, liveness does not)")
        elif "httpGet" in probe:
            port, path = probe["httpGet"]["port"], probe["httpGet"].get("path", "/")
            f.check(container_port(c, port) is not None, w, f"{kind} HTTP port {port!r} is not a container port")
            f.check(path in routes, w, f"{kind} path {path} is not a route of services/{name} ({sorted(routes)})")
            f.check(not grpc_services(name), w, f"{kind} is HTTP, but {name} serves gRPC health")
        else:
            f.add(w, f"{kind} is neither grpc nor httpGet")


def check_shutdown(m: Manifests, d: dict, f: Failures) -> None:
    w = f"{m.label}: {where(d)}"
    c, spec = container(d), pod_spec(d)
    env = env_of(c)
    pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {})
    if not f.check("sleep" in pre_stop, w, "no native preStop sleep: endpoints may still route to a draining pod"):
        return
    sleep = pre_stop["sleep"]["seconds"]
    timings = {}
    for var in ("SHUTDOWN_DELAY", "SHUTDOWN_GRACE_PERIOD"):
        value = env.get(var)
        seconds = envvars.parse_duration(value) if value else envvars.duration_default(SHARED_SRC, var)
        if not f.check(seconds is not None, w, f"cannot tell {var}: {value!r}"):
            return
        timings[var] = seconds
    grace = spec.get("terminationGracePeriodSeconds", 30)
    margin = max(MARGIN, flush_timeout() + 1)
    needed = sleep + timings["SHUTDOWN_DELAY"] + timings["SHUTDOWN_GRACE_PERIOD"] + margin
    f.check(grace >= needed, w, f"terminationGracePeriodSeconds {grace} < preStop sleep {sleep} + SHUTDOWN_DELAY "
            f"{timings['SHUTDOWN_DELAY']:g} + SHUTDOWN_GRACE_PERIOD {timings['SHUTDOWN_GRACE_PERIOD']:g} + "
            f"{margin} to exit")


# What a service does at start-up after its database and broker answer, before its
# health says ready: migrations, binding its ports.
STARTUP_MARGIN = 10
# The start-up waits of shared: each connection retried until its timeout (shared/src/
# db.rs, shared/src/events/jetstream.rs), one after the other, before the port opens.
CONNECT_TIMEOUTS = {"DATABASE_URL": "DATABASE_CONNECT_TIMEOUT", "NATS_URL": "NATS_CONNECT_TIMEOUT"}


@functools.lru_cache(maxsize=None)
def shared_duration_default(var: str) -> float | None:
    """The default, in seconds, of a duration variable read anywhere in shared/src."""
    for path in sorted(SHARED_SRC.rglob("*.rs")):
        m = re.search(r"\"%s\"\s*,\s*Duration::from_(secs|millis)\((\d+)\)" % re.escape(var), path.read_text())
        if m:
            return int(m.group(2)) / (1000 if m.group(1) == "millis" else 1)
    return None


def check_startup(m: Manifests, d: dict, f: Failures) -> None:
    """The startup probe waits for as long as the service waits for its database and
    broker, and then some: a service still connecting is not killed and restarted, so
    it never enters a crash loop whose back-off outlasts the rollout while they start."""
    w = f"{m.label}: {where(d)}"
    c = container(d)
    env = env_of(c)
    waits = {}
    for url, var in CONNECT_TIMEOUTS.items():
        if url not in env:
            continue
        value = env.get(var)
        seconds = envvars.parse_duration(value) if value else shared_duration_default(var)
        if not f.check(seconds is not None, w, f"cannot tell {var}: {value!r}"):
            return
        waits[var] = seconds
    probe = c.get("startupProbe")
    if not waits or probe is None:
        return
    budget = probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
    needed = sum(waits.values()) + STARTUP_MARGIN
    f.check(budget >= needed, w,
            f"the startupProbe gives up after {budget:g}s, but the service waits up to "
            f"{' + '.join(f'{v:g}s ({k})' for k, v in waits.items())} for what it connects to, then starts "
            f"({STARTUP_MARGIN}s): killed while it waits, it crash-loops; raise failureThreshold to at least "
            f"{needed:g}s of probes")


@functools.lru_cache(maxsize=None)
def flush_timeout() -> float:
    """shared::telemetry::FLUSH_TIMEOUT in seconds, 0 where there is none."""
    path = SHARED_SRC / "telemetry.rs"
    text = path.read_text() if path.exists() else ""
    m = re.search(r"const\s+FLUSH_TIMEOUT\s*:\s*Duration\s*=\s*Duration::from_(secs|millis)\((\d+)\)", text)
    return 0.0 if not m else int(m.group(2)) / (1000 if m.group(1) == "millis" else 1)


def check_security(m: Manifests, d: dict, f: Failures) -> None:
    w = f"{m.label}: {where(d)}"
    spec = pod_spec(d)
    psc = spec.get("securityContext") or {}
    token_needed = d["metadata"]["name"] in API_CLIENTS
    f.check(spec.get("automountServiceAccountToken") is token_needed, w,
            f"automountServiceAccountToken is not {str(token_needed).lower()}")
    f.check(psc.get("runAsNonRoot") is True, w, "pod securityContext.runAsNonRoot is not true")
    f.check((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", w, "pod seccompProfile is not RuntimeDefault")
    for c in spec["containers"] + (spec.get("initContainers") or []):
        csc, cw = c.get("securityContext") or {}, f"{w} container {c['name']}"
        f.check(csc.get("allowPrivilegeEscalation") is False, cw, "allowPrivilegeEscalation is not false")
        f.check(csc.get("readOnlyRootFilesystem") is True, cw, "readOnlyRootFilesystem is not true")
        f.check((csc.get("capabilities") or {}).get("drop") == ["ALL"], cw, "capabilities.drop is not [ALL]")
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                f.check(r in (res.get(kind) or {}), cw, f"no {r} {kind[:-1]}")
    sa = m.get("ServiceAccount", spec.get("serviceAccountName", ""))
    if sa:
        f.check(sa.get("automountServiceAccountToken") is token_needed, f"{m.label}: {where(sa)}",
                f"automountServiceAccountToken is not {str(token_needed).lower()}")


def check_upstreams(m: Manifests, d: dict, read: envvars.ServiceEnv, f: Failures) -> list[tuple[dict, int]]:
    """Resolves each upstream address to (Deployment, container port); reports what does not resolve."""
    w = f"{m.label}: {where(d)}"
    calls = []
    env = env_of(container(d))
    # The variables read with `Env::upstream` (envvars.py): the addresses of other services.
    for var in sorted((read.required | (OPTIONAL_UPSTREAMS & read.reads)) & set(env)):
        parsed = parse_upstream(env[var])
        if not f.check(parsed is not None, w, f"{var}={env[var]!r} is not http://<service>:<port>"):
            continue
        host, port = parsed
        resolved = resolve(m, d, f, f"{var}={env[var]}", host, port)
        if resolved is None:
            continue
        target, cport, sport = resolved
        check_tls_upstream(m, d, f, var, env[var], target)
        grpc = cport.get("name") in ("grpc", "otlp-grpc")
        f.check(sport.get("appProtocol") == ("grpc" if grpc else "http"), w,
                f"{var}: Service {host} port {port} has appProtocol {sport.get('appProtocol')!r}")
        calls.append((target, cport["containerPort"]))
    calls += check_url_upstreams(m, d, read, f)
    return calls


def check_tls_upstream(m: Manifests, d: dict, f: Failures, var: str, url: str, target: dict) -> None:
    """https:// is called with a CA and answered with TLS; http:// never meets a TLS port."""
    w = f"{m.label}: {where(d)}"
    tls_server = "GRPC_TLS_CERT_FILE" in env_of(container(target))
    if url.startswith("https://"):
        f.check("GRPC_CLIENT_TLS_CA_FILE" in env_of(container(d)), w,
                f"{var}={url} is https://, but GRPC_CLIENT_TLS_CA_FILE is not set: the service refuses to start")
        f.check(tls_server, w, f"{var}={url} is https://, but {target['metadata']['name']} serves plaintext "
                "(no GRPC_TLS_CERT_FILE)")
    else:
        f.check(not tls_server, w, f"{var}={url} is plaintext, but {target['metadata']['name']} serves TLS "
                "(GRPC_TLS_CERT_FILE): use https://")


def check_volumes(m: Manifests, workload: dict, f: Failures) -> None:
    """Every volumeMount names a volume of the pod (a component may add the mount and an
    identity patch the volume: a service without the latter would never start)."""
    spec = pod_spec(workload)
    volumes = {v["name"] for v in spec.get("volumes") or []}
    for c in spec["containers"] + (spec.get("initContainers") or []):
        for mount in c.get("volumeMounts") or []:
            f.check(mount["name"] in volumes, f"{m.label}: {where(workload)}",
                    f"container {c['name']} mounts volume {mount['name']!r}, which the pod does not define")


def check_production(m: Manifests, f: Failures) -> None:
    """The production overlay's promises: mutual TLS and no reflection on every gRPC
    service, probes on the health-only port, no entry but through your ingress, no Secret."""
    for d in m.deployments:
        name, w = d["metadata"]["name"], f"{m.label}: {where(d)}"
        if name in OBSERVABILITY or not (ROOT / "services" / name / "src").exists():
            continue
        c = container(d)
        env = env_of(c)
        for var, value in env.items():
            if var.endswith("_ADDR") and "://" in value:
                f.check(value.startswith("https://"), w, f"{var}={value}: production calls go over TLS")
        if not grpc_services(name):
            continue
        f.check(env.get("GRPC_REFLECTION", "true").lower() in FALSE, w,
                "GRPC_REFLECTION is not false: reflection would describe every API to anyone who reaches the port")
        for var in ("GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE", "GRPC_TLS_CLIENT_CA_FILE"):
            f.check(bool(env.get(var)), w, f"{var} is not set: production serves mutual TLS only")
        health = env.get("HEALTH_LISTEN_ADDR", "").rpartition(":")[2]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            port = ((c.get(kind) or {}).get("grpc") or {}).get("port")
            f.check(health.isdigit() and port == int(health), w,
                    f"{kind} asks port {port}, not the plaintext health port (HEALTH_LISTEN_ADDR={health or 'unset'}):"
                    " Kubernetes' gRPC probes cannot speak TLS")
    for svc in m.services:
        f.check(svc["spec"].get("type", "ClusterIP") == "ClusterIP", f"{m.label}: {where(svc)}",
                f"is a {svc['spec'].get('type')}: production exposes the gateway through your ingress only")
    for secret in m.of_kind("Secret"):
        f.add(f"{m.label}: {where(secret)}", "a Secret in the rendered manifests: its values would be in the repository")


def check_url_upstreams(m: Manifests, d: dict, read: envvars.ServiceEnv, f: Failures) -> list[tuple[dict, int]]:
    """NATS_URL and DATABASE_URL, where set and read: the Service and pods they connect to."""
    w = f"{m.label}: {where(d)}"
    calls, defined = [], {}
    for e in container(d).get("env") or []:
        # Secrets expand to a placeholder: only the host and port matter here.
        defined[e["name"]] = expand(e["value"], defined) if "value" in e else "secret"
        var = e["name"]
        if var not in URL_UPSTREAMS or var not in read.reads:
            continue
        parsed = parse_url(defined[var])
        if not f.check(parsed is not None and parsed[0] in URL_UPSTREAMS[var], w,
                       f"{var}={e['value']!r} is not {'|'.join(URL_UPSTREAMS[var])}://…<host>:<port>…"):
            continue
        _, host, port = parsed
        resolved = resolve(m, d, f, f"{var}={e['value']}", host, port)
        if resolved is not None:
            calls.append((resolved[0], resolved[1]["containerPort"]))
    return calls


def resolve(m: Manifests, d: dict, f: Failures, what: str, host: str, port: int) -> tuple[dict, dict, dict] | None:
    """host:port → (the workload whose pods the Service selects, its container port,
    the Service port), or None after reporting why not."""
    w = f"{m.label}: {where(d)}"
    services = [s for s in m.services if host in service_dns_names(s) and ns(s) == ns(d)]
    if not f.check(len(services) == 1, w, f"{what}: no Service named {host!r} in namespace {ns(d)}"):
        return None
    service = services[0]
    sport = next((p for p in service["spec"]["ports"] if p["port"] == port), None)
    if not f.check(sport is not None, w, f"{what}: Service {host} has no port {port}"):
        return None
    targets = [t for t in m.workloads if ns(t) == ns(d) and service_selects(service, t)]
    if not f.check(len(targets) == 1, w, f"{what}: Service {host} selects {len(targets)} workloads"):
        return None
    cport = container_port(container(targets[0]), sport.get("targetPort", port))
    if not f.check(cport is not None, w, f"{what}: Service {host} port {port} targets "
                   f"{sport.get('targetPort')!r}, not a container port of {targets[0]['metadata']['name']}"):
        return None
    return targets[0], cport, sport


def service_selects(service: dict, deployment: dict) -> bool:
    """A Service's selector is a plain label map; one without a selector selects nothing."""
    selector = service["spec"].get("selector")
    return bool(selector) and selector_matches({"matchLabels": selector}, pod_labels(deployment))


def check_selectors(m: Manifests, f: Failures) -> None:
    for d in m.workloads:
        w = f"{m.label}: {where(d)}"
        f.check(selector_matches(d["spec"]["selector"], pod_labels(d)), w, "selector does not match its pod template")
        others = [o for o in m.workloads if o is not d and ns(o) == ns(d)
                  and selector_matches(d["spec"]["selector"], pod_labels(o))]
        f.check(not others, w, f"selector also matches the pods of {[o['metadata']['name'] for o in others]}")
    for s in m.statefulsets:
        governing = m.get("Service", s["spec"].get("serviceName", ""))
        f.check(governing is not None and ns(governing) == ns(s), f"{m.label}: {where(s)}",
                f"serviceName {s['spec'].get('serviceName')!r} is not a Service of the manifests")
    for kind in ("Service", "PodDisruptionBudget"):
        for obj in m.of_kind(kind):
            if kind == "Service":
                matched = [d["metadata"]["name"] for d in m.workloads if ns(d) == ns(obj) and service_selects(obj, d)]
            else:
                matched = [d["metadata"]["name"] for d in m.workloads
                           if ns(d) == ns(obj) and selector_matches(obj["spec"].get("selector"), pod_labels(d))]
            f.check(matched == [obj["metadata"]["name"]], f"{m.label}: {where(obj)}",
                    f"selects the pods of {matched}, not those of {obj['metadata']['name']!r}")
    for hpa in m.of_kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        f.check(ref.get("kind") == "Deployment" and m.get("Deployment", ref.get("name")) is not None,
                f"{m.label}: {where(hpa)}", f"scales {ref}, which is not a Deployment of the manifests")
    for policy in m.of_kind("NetworkPolicy"):
        selector = policy["spec"].get("podSelector") or {}
        if selector:
            matched = [d for d in m.workloads if ns(d) == ns(policy) and selector_matches(selector, pod_labels(d))]
            f.check(bool(matched), f"{m.label}: {where(policy)}", "podSelector matches no pod")


def check_network(m: Manifests, calls: dict[str, list[tuple[dict, int]]], f: Failures) -> None:
    namespaces = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in m.of_kind("Namespace")}
    cluster = Cluster(m.of_kind("NetworkPolicy"), namespaces)
    pods = {}
    for d in m.workloads:
        ports = [(p.get("name", ""), p["containerPort"], p.get("protocol", "TCP")) for p in container(d).get("ports") or []]
        pods[d["metadata"]["name"]] = Endpoint.pod(d["metadata"]["name"], ns(d), pod_labels(d), ports)
    outside = Endpoint("outside the cluster", external=True)
    dns = Endpoint.pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")])
    apiserver = Endpoint.pod("kube-apiserver", "kube-system", {"component": "kube-apiserver"}, [("https", 6443, "TCP")])
    stranger = Endpoint.pod("a pod of another namespace", "elsewhere", {"app": "stranger"}, [("http", 8080, "TCP")])
    undeclared = 9  # a port no container declares: rules without ports would open it
    expected = {(src, t["metadata"]["name"], port) for src, targets in calls.items() for t, port in targets}
    if SCRAPER in pods:
        # Prometheus scrapes every service's metrics port, by pod IP.
        expected |= {(SCRAPER, name, number) for name, pod in pods.items() if name not in OBSERVABILITY
                     for port_name, number, _ in pod.ports if port_name == "metrics"}
    label = m.label

    for name, pod in pods.items():
        for direction in ("Ingress", "Egress"):
            f.check(cluster.isolated(pod, direction), f"{label}: pod {name}",
                    f"no NetworkPolicy isolates it for {direction}: everything is allowed")
        # pod → pod
        for dst_name, dst in pods.items():
            if dst_name == name:
                continue
            for port in sorted({p for _, p, _ in dst.ports} | {undeclared}):
                allowed, wanted = cluster.allows(pod, dst, port), (name, dst_name, port) in expected
                if allowed and not wanted:
                    f.add(f"{label}: network", f"{name} → {dst_name}:{port} is allowed, but {name} does not call it")
                if wanted and not allowed:
                    f.add(f"{label}: network", f"{name} → {dst_name}:{port} is a call {name} makes, but the policies deny it")
        # outside → pod
        for port_name, port, proto in pod.ports + (("", undeclared, "TCP"),):
            allowed = cluster.allows(outside, pod, port, proto) or cluster.allows(stranger, pod, port, proto)
            # The entry's serving port only: its metrics port is for the scraper.
            wanted = name in ENTRY and port != undeclared and port_name != "metrics"
            if allowed != wanted:
                f.add(f"{label}: network", f"traffic from outside to {name}:{port} is "
                      f"{'allowed' if allowed else 'denied'}, but {name} is {'' if wanted else 'not '}the entry")
        # pod → DNS, and nowhere else outside the namespace
        resolves = bool(calls.get(name))
        for proto in ("UDP", "TCP"):
            allowed = cluster.allows(pod, dns, 53, proto)
            if allowed != resolves:
                f.add(f"{label}: network", f"{name} → kube-dns:53/{proto} is {'allowed' if allowed else 'denied'}, "
                      f"but {name} {'calls' if resolves else 'calls no'} service{'s' if resolves else ''} by name")
        for other, port in ((outside, 443), (apiserver, 6443), (stranger, 8080), (dns, undeclared)):
            f.check(not cluster.allows(pod, other, port), f"{label}: network",
                    f"{name} → {other.name}:{port} is allowed, but nothing needs it")
    for svc in m.services:
        if svc["spec"].get("type") in ("NodePort", "LoadBalancer"):
            f.check(svc["metadata"]["name"] in ENTRY, f"{label}: {where(svc)}",
                    f"is exposed outside the cluster ({svc['spec']['type']}), but only {sorted(ENTRY)} may be")


def check_annotations(m: Manifests, f: Failures) -> None:
    for doc in m.docs:
        for key, value in (doc["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                check_id, _, reason = str(value).partition("=")
                f.check(check_id.startswith("CKV") and len(reason.split()) >= 5, f"{m.label}: {where(doc)}",
                        f"{key} must be CKV_…=<the reason, in words>, got {value!r}")


def check_namespaces(m: Manifests, f: Failures) -> None:
    used = {ns(d) for d in m.docs if d["kind"] != "Namespace"}
    for name in sorted(used):
        n = m.get("Namespace", name)
        if name == "default" and n is None:
            continue  # the base: overlays choose the namespace
        if not f.check(n is not None, m.label, f"namespace {name} is used but not created"):
            continue
        labels = n["metadata"].get("labels") or {}
        f.check(labels.get("pod-security.kubernetes.io/enforce") == "restricted", f"{m.label}: {where(n)}",
                "does not enforce the restricted Pod Security Standard")


# The kind overlay runs on one node that a laptop's Docker (a Docker Desktop VM) or a
# 2-core CI runner gives: 2 CPUs and 4 GiB. Kubernetes' own pods request part of it
# before ours: kubeadm's static pods (kube-apiserver 250m, kube-controller-manager 200m,
# kube-scheduler 100m, etcd 100m and 100Mi), CoreDNS (two replicas of 100m and 70Mi)
# and kind's CNI, kindnet (100m, 50Mi); kube-proxy and local-path-provisioner request
# nothing. (kubectl describe node on a kind v0.33 node lists the same.)
KIND_NODE = {"cpu": 2000, "memory": 4096}  # millicores, MiB
KIND_CONTROL_PLANE = {"cpu": 250 + 200 + 100 + 100 + 2 * 100 + 100, "memory": 100 + 2 * 70 + 50}


def quantity(value, resource: str) -> float:
    """A Kubernetes quantity in millicores (cpu) or MiB (memory)."""
    text = str(value)
    if resource == "cpu":
        return float(text[:-1]) if text.endswith("m") else float(text) * 1000
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "K": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[:-len(unit)]) * factor
    return float(text) / 2**20


def replicas(m: Manifests, workload: dict) -> int:
    """The pods a workload runs with no metrics server (kind has none): its HPA's
    minReplicas, else spec.replicas (default 1)."""
    hpa = next((h for h in m.of_kind("HorizontalPodAutoscaler")
                if h["spec"]["scaleTargetRef"]["name"] == workload["metadata"]["name"]
                and h["spec"]["scaleTargetRef"]["kind"] == workload["kind"]), None)
    return int(hpa["spec"].get("minReplicas", 1)) if hpa else int(workload["spec"].get("replicas", 1))


def surge(workload: dict, count: int) -> int:
    """The extra pods of a rolling update: a Deployment's maxSurge (default 25%,
    rounded up)."""
    if workload["kind"] != "Deployment":
        return 0  # StatefulSets replace pods one at a time
    strategy = workload["spec"].get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0
    value = (strategy.get("rollingUpdate") or {}).get("maxSurge", "25%")
    if isinstance(value, str) and value.endswith("%"):
        return -(-count * int(value[:-1]) // 100)
    return int(value)


def max_replicas(m: Manifests, workload: dict) -> int:
    """The most pods a workload may run: its HPA's maxReplicas, else spec.replicas."""
    hpa = next((h for h in m.of_kind("HorizontalPodAutoscaler")
                if h["spec"]["scaleTargetRef"]["name"] == workload["metadata"]["name"]
                and h["spec"]["scaleTargetRef"]["kind"] == workload["kind"]), None)
    return int(hpa["spec"]["maxReplicas"]) if hpa else int(workload["spec"].get("replicas", 1))


def check_state(m: Manifests, d: dict, read: envvars.ServiceEnv, f: Failures) -> None:
    """A service that may run more than one replica keeps its state where every replica
    sees it: DATABASE_URL set if the binary reads it (its store is in memory otherwise:
    each replica its own orders, payments, stock), NATS_URL likewise (events to an
    in-process bus no other replica hears). The base is exempt: it is what the overlays
    build on, never deployed alone."""
    count = max_replicas(m, d)
    if m.label == BASE or count <= 1:
        return
    env = {e["name"] for e in container(d).get("env") or []}
    for var, what in (("DATABASE_URL", "its state would be in memory, one copy per replica"),
                      ("NATS_URL", "its events would go to an in-process bus that the other replicas never hear")):
        f.check(var not in read.reads or var in env, f"{m.label}: {where(d)}",
                f"may run {count} replicas but {var} is not set: {what} (add k8s/components/durable, "
                "or run one replica)")


def check_kind_capacity(m: Manifests, f: Failures) -> None:
    """The requests of every pod the overlay runs, while every Deployment rolls out at
    once (as `make kind-up` applies them), fit the node beside Kubernetes' own."""
    for resource, unit in (("cpu", "m"), ("memory", "Mi")):
        total = 0.0
        for w in m.workloads:
            count = replicas(m, w)
            spec = pod_spec(w)
            per_pod = sum(quantity(((c.get("resources") or {}).get("requests") or {}).get(resource, 0), resource)
                          for c in spec["containers"])
            init = [quantity(((c.get("resources") or {}).get("requests") or {}).get(resource, 0), resource)
                    for c in spec.get("initContainers", [])]
            total += (count + surge(w, count)) * max([per_pod, *init])
        free = KIND_NODE[resource] - KIND_CONTROL_PLANE[resource]
        f.check(total <= free, m.label,
                f"the pods request {total:.0f}{unit} of {resource} (every Deployment rolling out at once), more "
                f"than the {free}{unit} a {KIND_NODE['cpu'] // 1000}-CPU, {KIND_NODE['memory'] // 1024} GiB kind node "
                f"leaves beside Kubernetes' own {KIND_CONTROL_PLANE[resource]}{unit}: pods would stay Pending")


def check_kind_images(m: Manifests, f: Failures) -> None:
    """Every image is pinned and pulled only when the node lacks it: a restart pulls
    nothing (no registry limits, works offline), and the images kind-up.sh loaded into
    the node, which no registry has, are used as they are."""
    ours = {d.name for d in (ROOT / "services").iterdir() if (d / "src").is_dir()}
    for w in m.workloads:
        spec = pod_spec(w)
        for c in spec["containers"] + spec.get("initContainers", []):
            image = c.get("image", "")
            at = f"{m.label}: {where(w)}: container {c['name']}"
            f.check(c.get("imagePullPolicy") == "IfNotPresent", at,
                    f"imagePullPolicy is {c.get('imagePullPolicy')!r}, not IfNotPresent: every restart pulls "
                    "again (registry pull limits, no offline use)")
            name, _, tag = image.split("@")[0].rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
            if image_name(image) in ours:
                pinned = bool(tag) and tag != "latest"  # scripts/kind-up.sh deploys the image ID as the tag
            else:
                pinned = "@sha256:" in image or bool(re.fullmatch(r"v?\d+(\.\d+)+[\w.-]*", tag))
            f.check(pinned, at, f"image {image!r} is not pinned to a version (or a digest)")


def check(m: Manifests, f: Failures, schemas: bool = True) -> None:
    if schemas:
        validate_schemas(m, f)
    check_names(m, f)
    check_selectors(m, f)
    calls = {}
    for d in m.deployments:
        name = d["metadata"]["name"]
        if name in OBSERVABILITY:
            check_security(m, d, f)
            calls[name] = [(m.get("Deployment", to), port) for src, to, port in sorted(OBSERVABILITY_CALLS)
                           if src == name and m.get("Deployment", to) is not None and ns(m.get("Deployment", to)) == ns(d)]
            continue
        if not (ROOT / "services" / name / "src").exists():
            continue  # reported by check_names
        read = check_env(m, d, f)
        check_volumes(m, d, f)
        check_ports(m, d, f)
        check_probes(m, d, f)
        check_shutdown(m, d, f)
        check_startup(m, d, f)
        check_security(m, d, f)
        check_state(m, d, read, f)
        calls[name] = check_upstreams(m, d, read, f)
    for s in m.statefulsets:
        # The broker and the database: images of others, so no contract of a binary;
        # they call nothing.
        check_expansion(m, s, f)
        check_security(m, s, f)
        for kind in ("readinessProbe", "livenessProbe"):
            f.check(kind in container(s), f"{m.label}: {where(s)}", f"no {kind}")
        calls[s["metadata"]["name"]] = []
    check_network(m, calls, f)
    check_annotations(m, f)
    check_namespaces(m, f)
    if m.label == PRODUCTION:
        check_production(m, f)
    if m.label == KIND:
        check_kind_capacity(m, f)
        check_kind_images(m, f)


def main(paths: list[str]) -> int:
    if not paths:
        print("usage: check.py RENDERED.yaml...", file=sys.stderr)
        return 2
    failures = Failures()
    for path in paths:
        m = Manifests.load(Path(path))
        check(m, failures)
        print(f"k8s-check: {m.label}: {len(m.docs)} objects, {len(m.deployments)} Deployments and "
              f"{len(m.statefulsets)} StatefulSets checked "
              f"(schemas: Kubernetes {TARGET_VERSION} and {MIN_VERSION}, strict)")
    if failures.messages:
        print(f"k8s-check: {len(failures.messages)} contract failure(s):", file=sys.stderr)
        for message in failures.messages:
            print(f"  - {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
