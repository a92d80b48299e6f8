#!/usr/bin/env python3
"""The manifest-driven run: every Deployment of a rendered overlay started as its
binary, the way its pod would run it, then probed, used and stopped as Kubernetes does.

Usage: run.py RENDERED.yaml BIN_DIR   (scripts/k8s-check.sh; BIN_DIR holds the
`cargo build --bins` output, e.g. target/debug)

1. Each Service name is mapped to its own loopback address (127.0.0.10, .11, … in
   name order), so that every container keeps its port: env values `http://<service>:<port>`
   and listen addresses `0.0.0.0:<port>` are rewritten to that address, nothing else.
2. Each container's binary (named like its image) starts with exactly the env and
   args of the Deployment, in an otherwise empty environment.
3. Each probe runs as the kubelet runs it: gRPC `grpc.health.v1.Health/Check` with the
   probe's service name, answered SERVING within timeoutSeconds; HTTP GET answered
   200–399. The startup probe must pass within initialDelaySeconds + periodSeconds ×
   failureThreshold, then the readiness and liveness probes.
4. An order goes through the gateway (POST /v1/orders) and must be CONFIRMED.
5. scripts/kind-smoke.sh runs against these processes, with a stand-in kubectl
   (fake_kubectl.py) whose port-forward relays to them: the smoke test of `make kind-up`,
   minus the cluster.
6. Every process gets SIGTERM at once, as on `kubectl delete`, and must exit 0 within
   terminationGracePeriodSeconds minus its preStop sleep (which runs before SIGTERM).
"""

from __future__ import annotations

import json
import os
import re
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from manifests import ROOT, Manifests, container, image_name, pod_labels, pod_spec, service_dns_names  # noqa: E402

HERE = Path(__file__).resolve().parent
FIRST_ADDRESS = 10  # 127.0.0.10: clear of 127.0.0.1, where `make run` listens
READY_WITHIN = 20.0  # seconds for readiness after startup (a pod's rollout waits longer)


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
    url = re.fullmatch(r"(https?://)([A-Za-z0-9.-]+)(:\d+.*)?", value)
    if url and url.group(2) in addresses:
        return f"{url.group(1)}{addresses[url.group(2)]}{url.group(3) or ''}"
    return value


def pods_of(m: Manifests, bin_dir: Path, logs: Path) -> list[Pod]:
    addresses = address_map(m)
    pods = []
    for d in m.deployments:
        if not (ROOT / "services" / d["metadata"]["name"]).is_dir():
            continue  # not a service of this repository (the observability stack): no binary to run
        name = d["metadata"]["name"]
        c = container(d)
        if c.get("command"):
            raise RunFailure(f"{name}: `command` is set; the images run their entrypoint, the service binary")
        services = [s for s in m.services if s["spec"].get("selector", {}).items() <= pod_labels(d).items()]
        if len(services) != 1:
            raise RunFailure(f"{name}: {len(services)} Services select its pods; the run maps one address per pod")
        own = addresses[services[0]["metadata"]["name"]]
        env = {}
        for e in c.get("env") or []:
            if "value" not in e:
                raise RunFailure(f"{name}: env {e['name']} has no literal value")
            env[e["name"]] = rewrite(e["value"], own, addresses)
        binary = bin_dir / image_name(c["image"])
        if not binary.exists():
            raise RunFailure(f"{name}: no binary {binary}: run `cargo build --bins` first")
        pods.append(Pod(name, d, own, env, list(c.get("args") or []), binary, logs / f"{name}.log"))
    return pods


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
    else:
        raise RunFailure(f"{pod.name}: {kind} is neither grpc nor httpGet")
    return answer == "SERVING", f"{kind} ({what}): {answer}"


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


def place_order(gateway: Pod) -> str:
    port = gateway.port_number("http")
    body = {"customerId": "cus-k8s-check", "items": [{"sku": "SKU-001", "quantity": 1}], "cardToken": "tok_visa"}
    request = urllib.request.Request(
        f"http://{gateway.address}:{port}/v1/orders", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            code, answer = response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        code, answer = e.code, e.read().decode(errors="replace")
    if code != 201:
        raise RunFailure(f"POST /v1/orders through the gateway answered {code}: {answer}")
    order = json.loads(answer)
    if order.get("status") != "CONFIRMED":
        raise RunFailure(f"the order is {order.get('status')}, not CONFIRMED: {answer}")
    return order.get("orderId", "?")


def smoke_script(pods: list[Pod], gateway: Pod, tmp: Path) -> list[str]:
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
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ.get('PATH', '')}",
           "FAKE_KUBECTL_SERVICES": json.dumps(services),
           "GATEWAY_URL": f"http://{gateway.address}:{gateway.port_number('http')}"}
    try:
        done = subprocess.run([str(ROOT / "scripts" / "kind-smoke.sh")], env=env, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise RunFailure(f"scripts/kind-smoke.sh did not finish within 60 s: {e.stdout}{e.stderr}") from None
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


def main(rendered: str, bin_dir: str) -> int:
    m = Manifests.load(Path(rendered))
    with tempfile.TemporaryDirectory(prefix="k8s-run-") as tmp:
        pods: list[Pod] = []
        try:
            pods = pods_of(m, Path(bin_dir), Path(tmp))
            for pod in pods:
                ensure_free(pod)
            for pod in pods:
                with open(pod.log, "wb") as log:
                    pod.process = subprocess.Popen([str(pod.binary), *pod.args], env=pod.env, stdout=log,
                                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            for pod in pods:
                probe = pod.container["startupProbe"]
                budget = probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
                pod.notes.append(wait_probe(pod, "startupProbe", budget))
            for pod in pods:
                pod.notes.append(wait_probe(pod, "readinessProbe", READY_WITHIN))
                pod.notes.append(wait_probe(pod, "livenessProbe", 0))
            gateway = next((p for p in pods if p.name == "gateway"), None)
            if gateway is None:
                raise RunFailure("no gateway Deployment to place an order through")
            order_id = place_order(gateway)
            smoke = smoke_script(pods, gateway, Path(tmp))
            failures = stop_all(pods)
        except RunFailure as e:
            stop_all(pods)
            print(f"k8s-run: FAILED: {e}", file=sys.stderr)
            return 1
        finally:
            for pod in pods:
                if pod.process and pod.process.poll() is None:
                    pod.process.kill()
                    pod.process.wait()
        for pod in pods:
            print(f"k8s-run: {pod.name} at {pod.address} ({' '.join(f'{k}={v}' for k, v in sorted(pod.env.items()) if k.endswith('_ADDR'))})")
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
