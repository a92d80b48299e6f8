#!/usr/bin/env python3
"""Stand-ins for docker, kind and kubectl (`fake_cluster.py TOOL ARGS…`, through a
wrapper named like the tool), the commands scripts/kind-up.sh runs, so that test_kind_up.py can run kind-up's whole flow
without a container engine or a cluster.

The state lives in FAKE_CLUSTER_STATE (a directory): state.json (clusters, images,
loaded images, Secrets, applied kustomizations) and calls.jsonl (every call's argv, in
order). FAKE_CLUSTER_FAIL names a step that fails: `build`, `secret` (applying a
Secret), `apply` (the kustomization) or `rollout`.

Like Docker's containerd image store, a build with a provenance attestation (the
default of buildx) gets a new image ID every time, since the attestation records the
build's time; with `--provenance=false` an unchanged build keeps its ID.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import sys
import uuid
from pathlib import Path

STATE = Path(os.environ["FAKE_CLUSTER_STATE"])
FAIL = os.environ.get("FAKE_CLUSTER_FAIL", "")
OBSERVABILITY = ["grafana", "jaeger", "otel-collector", "prometheus"]


class State:
    def __enter__(self):
        self.lock = open(STATE / "lock", "w")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        path = STATE / "state.json"
        self.data = json.loads(path.read_text()) if path.exists() else {}
        for key in ("clusters", "images", "loaded", "secrets", "applied", "deployments"):
            self.data.setdefault(key, [] if key in ("clusters", "applied", "deployments") else {})
        return self.data

    def __exit__(self, *exc):
        (STATE / "state.json").write_text(json.dumps(self.data, indent=1, sort_keys=True))
        self.lock.close()


def fail(message: str, code: int = 1) -> int:
    print(message, file=sys.stderr)
    return code


def docker(args: list[str]) -> int:
    if args == ["info"]:
        return 0
    if args[:1] == ["version"]:
        print("27.3.1")
        return 0
    if args == ["build", "--help"]:
        print("      --load                 Shorthand for \"--output=type=docker\"\n"
              "      --provenance string   Shorthand for \"--attest=type=provenance\"")
        return 0
    if args[:1] == ["build"]:
        if FAIL == "build":
            return fail("ERROR: failed to solve: process \"cargo chef prepare\" did not complete successfully")
        service = next(a.split("=", 1)[1] for a in args if a.startswith("SERVICE="))
        tag = args[args.index("--tag") + 1]
        attestation = "" if "--provenance=false" in args else uuid.uuid4().hex
        with State() as s:
            s["images"][tag] = hashlib.sha256(f"{service}{attestation}".encode()).hexdigest()
        return 0
    if args[:2] == ["image", "inspect"]:
        with State() as s:
            image = s["images"].get(args[-1])
        if image is None:
            return fail(f"Error: No such image: {args[-1]}")
        print(f"sha256:{image}" if "{{.Id}}" in args else "123456789")
        return 0
    if args[:1] == ["tag"]:
        with State() as s:
            s["images"][args[2]] = s["images"][args[1]]
        return 0
    return fail(f"fake docker: unexpected {args}", 99)


def kind(args: list[str]) -> int:
    if args == ["version"]:
        print("kind v0.33.0 go1.24.4 linux/amd64")
        return 0
    with State() as s:
        if args[:2] == ["get", "clusters"]:
            print("\n".join(s["clusters"]))
            return 0
        name = args[args.index("--name") + 1]
        if args[:2] == ["create", "cluster"]:
            s["clusters"].append(name)
            return 0
        if args[:2] == ["load", "docker-image"] and name in s["clusters"]:
            s["loaded"][args[-1]] = s["images"][args[-1]]
            return 0
    return fail(f"fake kind: unexpected {args}", 99)


def secret_yaml(name: str, sources: list[str]) -> str:
    import yaml  # here: most calls need none, and each call is a process

    data = {}
    for source in sources:
        key, _, path = source.rpartition("=")
        p = Path(path)
        files = sorted(p.iterdir()) if p.is_dir() else [p]
        for f in files:
            data[key or f.name] = base64.b64encode(f.read_bytes()).decode()
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": data})


def kubectl(args: list[str]) -> int:
    while args and args[0] in ("--context", "-n", "--namespace"):
        args = args[2:]
    if args[:1] == ["version"]:
        version = {"clientVersion": {"major": "1", "minor": "33"}}
        if "--client" not in args:
            version["serverVersion"] = {"major": "1", "minor": "37"}
        print(json.dumps(version, indent=2))
        return 0
    if args[:2] == ["create", "secret"]:
        print(secret_yaml(args[3], [a.split("=", 1)[1] for a in args if a.startswith("--from-file=")]))
        return 0
    if args[:2] == ["label", "--local"]:
        import yaml

        doc = yaml.safe_load(sys.stdin)
        doc["metadata"]["labels"] = dict(a.split("=", 1) for a in args if "=" in a and not a.startswith("-"))
        print(yaml.safe_dump(doc))
        return 0
    if args[:1] == ["rollout"]:
        if args[1] == "status" and FAIL == "rollout":
            return fail(f"error: timed out waiting for the condition on {args[2]}")
        return 0
    if args[:2] == ["get", "pods"] or args[:1] in (["describe"], ["logs"]) or args[:2] == ["get", "events"]:
        return 0
    with State() as s:
        if args[:1] == ["apply"] and args[1:3] == ["-f", "-"]:
            import yaml

            if FAIL == "secret":
                return fail("error: error validating data: the server is currently unable to handle the request")
            doc = yaml.safe_load(sys.stdin)
            s["secrets"][doc["metadata"]["name"]] = doc.get("data") or {}
            return 0
        if args[:2] == ["apply", "-f"]:
            return 0
        if args[:2] == ["apply", "-k"]:
            if FAIL == "apply":
                return fail("error: the server could not apply the kustomization")
            s["applied"].append((Path(args[2]) / "kustomization.yaml").read_text())
            s["deployments"] = sorted(set(s["deployments"]) | set(json.loads(os.environ["FAKE_CLUSTER_SERVICES"]))
                                      | set(OBSERVABILITY))
            return 0
        if args[:2] == ["get", "secret"]:
            secret = s["secrets"].get(args[2])
            if secret is None:
                return fail(f'Error from server (NotFound): secrets "{args[2]}" not found')
            if len(args) > 3:
                key = args[4].split('index .data "', 1)[1].split('"', 1)[0]
                print(secret.get(key, ""), end="")
            return 0
        if args[:2] == ["patch", "secret"]:
            patch = (Path(args[args.index("--patch-file") + 1]).read_text() if "--patch-file" in args
                     else args[args.index("-p") + 1])
            for key, value in json.loads(patch)["stringData"].items():
                s["secrets"][args[2]][key] = base64.b64encode(value.encode()).decode()
            return 0
        if args == ["get", "statefulsets", "-o", "name"]:
            if s["deployments"]:
                print("statefulset.apps/nats\nstatefulset.apps/postgres")
            return 0
        if args == ["get", "deployments", "-o", "name"]:
            print("\n".join(f"deployment.apps/{d}" for d in s["deployments"]))
            return 0
        if args[:2] == ["get", "deployment"]:
            return 0 if args[2] in s["deployments"] else fail(f'deployments.apps "{args[2]}" not found')
    return fail(f"fake kubectl: unexpected {args}", 99)


def main() -> int:
    tool, args = sys.argv[1], sys.argv[2:]
    with open(STATE / "calls.jsonl", "a") as log:
        log.write(json.dumps([tool, *args]) + "\n")
    return {"docker": docker, "kind": kind, "kubectl": kubectl}[tool](args)


if __name__ == "__main__":
    sys.exit(main())
