"""Rendered manifests (`kubectl kustomize` output), indexed for the checks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


class Failures:
    """Collects every problem, so that one run names them all."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.messages.append(f"{where}: {message}")

    def check(self, ok: bool, where: str, message: str) -> bool:
        if not ok:
            self.add(where, message)
        return ok


@dataclass
class Manifests:
    """The objects of one rendered overlay (or the base)."""

    label: str
    docs: list[dict]

    @staticmethod
    def load(path: Path, label: str | None = None) -> "Manifests":
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        return Manifests(label or path.stem, docs)

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d.get("kind") == kind]

    def get(self, kind: str, name: str) -> dict | None:
        return next((d for d in self.of_kind(kind) if d["metadata"]["name"] == name), None)

    @property
    def deployments(self) -> list[dict]:
        return self.of_kind("Deployment")

    @property
    def statefulsets(self) -> list[dict]:
        return self.of_kind("StatefulSet")

    @property
    def workloads(self) -> list[dict]:
        """Everything that runs pods: the Deployments, then the StatefulSets."""
        return self.deployments + self.statefulsets

    @property
    def services(self) -> list[dict]:
        return self.of_kind("Service")


def ns(obj: dict) -> str:
    return obj["metadata"].get("namespace", "default")


def where(obj: dict) -> str:
    return f"{obj['kind']} {ns(obj)}/{obj['metadata']['name']}"


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def pod_labels(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"].get("labels") or {}


def container(deployment: dict) -> dict:
    """The service's container: the one named like the Deployment."""
    containers = pod_spec(deployment)["containers"]
    name = deployment["metadata"]["name"]
    return next((c for c in containers if c["name"] == name), containers[0])


def env_of(c: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in c.get("env") or []}


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def references(value: str) -> list[str]:
    """The variables `$(NAME)` names in an env value (`$$` escapes a `$`)."""
    return [m.group(1) for m in _REFERENCE.finditer(value) if m.group(1)]


def expand(value: str, defined: dict[str, str]) -> str:
    """An env value as the kubelet expands it: `$(NAME)` becomes the value of NAME if
    an EARLIER entry of the container's env defined it (`defined`), and stays as it is
    otherwise; `$$` becomes `$`."""
    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return defined.get(m.group(1), m.group(0))
    return _REFERENCE.sub(one, value)


def secret_refs(c: dict) -> dict[str, tuple[str, str]]:
    """Env variable → (Secret, key) of each `valueFrom.secretKeyRef`."""
    out = {}
    for e in c.get("env") or []:
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            out[e["name"]] = (ref["name"], ref["key"])
    return out


def image_name(image: str) -> str:
    """`registry/path/orders:tag@sha256:…` → `orders`."""
    image = image.split("@")[0]
    last = image.rsplit("/", 1)[-1]
    return last.split(":")[0]


def service_dns_names(service: dict) -> set[str]:
    """The names a pod of the same namespace can use for the Service."""
    name, namespace = service["metadata"]["name"], ns(service)
    return {name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"}


_UPSTREAM = re.compile(r"https?://([A-Za-z0-9.-]+):(\d+)/?")


def parse_upstream(value: str) -> tuple[str, int] | None:
    m = _UPSTREAM.fullmatch(value)
    return (m.group(1), int(m.group(2))) if m else None


_URL = re.compile(r"([a-z][a-z0-9+.-]*)://(?:[^@/]*@)?([A-Za-z0-9.-]+):(\d+)(?:[/?].*)?")


def parse_url(value: str) -> tuple[str, str, int] | None:
    """`scheme://[user:password@]host:port[/path][?query]` → (scheme, host, port): the
    address a NATS_URL or DATABASE_URL connects to."""
    m = _URL.fullmatch(value)
    return (m.group(1), m.group(2), int(m.group(3))) if m else None


def container_port(c: dict, ref) -> dict | None:
    """The container port that `ref` (a number or a port name) designates."""
    for p in c.get("ports") or []:
        if ref == p["containerPort"] or ref == p.get("name"):
            return p
    return None


def grpc_services(name: str) -> set[str]:
    """The full names of the gRPC services declared in proto/<name>/ (e.g.
    `orders.v1.OrderService`): what a service registers with health by name."""
    names = set()
    for proto in sorted((ROOT / "proto" / name).rglob("*.proto")):
        text = proto.read_text()
        package = re.search(r"^\s*package\s+([\w.]+)\s*;", text, re.M)
        for service in re.findall(r"^\s*service\s+(\w+)\s*\{", text, re.M):
            names.add(f"{package.group(1)}.{service}" if package else service)
    return names


def http_routes(name: str) -> set[str]:
    """The paths of `.route("/path", …)` in services/<name>/src: an HTTP service's routes."""
    routes = set()
    for path in (ROOT / "services" / name / "src").rglob("*.rs"):
        routes |= set(re.findall(r"\.route\(\s*\"([^\"]+)\"", path.read_text()))
    return routes
