#!/usr/bin/env python3
"""A stand-in for the few kubectl commands scripts/kind-smoke.sh uses, so that run.py
can run the smoke script against the processes it started instead of a cluster:

- `get namespace NAME`: exists;
- `get service NAME`: exists if NAME is one of the Services below;
- `get services -o jsonpath=…`: `<name> <port named grpc>` per Service, as the smoke
  script's jsonpath prints them;
- `get secret NAME -o jsonpath={.data.KEY}` (dots in KEY escaped as `\.`): the key's
  value, base64-encoded as the API serves it;
- `get deployment NAME -o jsonpath={…env[?(@.name=="VAR")].value}`: VAR of the
  Deployment's container, or nothing;
- `port-forward svc/NAME :PORT`: listens on a free port of 127.0.0.1, prints kubectl's
  `Forwarding from 127.0.0.1:<port> -> PORT` line and relays every connection to the
  process of that Service, until killed.

The Services come from FAKE_KUBECTL_SERVICES: JSON {name: {"address": a, "grpc_port": p}},
and "ports": {service port: port of address} where the two differ;
the Secrets from FAKE_KUBECTL_SECRETS: {name: {key: base64}}; the Deployments' env from
FAKE_KUBECTL_DEPLOYMENTS: {name: {var: value}}.
"""

import json
import os
import re
import socket
import sys
import threading


def relay(a: socket.socket, b: socket.socket) -> None:
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def port_forward(address: str, port: int) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"Forwarding from 127.0.0.1:{listener.getsockname()[1]} -> {port}", flush=True)
    while True:
        client, _ = listener.accept()
        upstream = socket.create_connection((address, port))
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=relay, args=(a, b), daemon=True).start()


def main(args: list[str]) -> int:
    services = json.loads(os.environ["FAKE_KUBECTL_SERVICES"])
    while args and args[0] in ("--context", "-n", "--namespace"):
        args = args[2:]
    if args[:2] == ["get", "namespace"]:
        return 0
    if args[:2] == ["get", "service"] and len(args) == 3:
        return 0 if args[2] in services else 1
    if args[:2] == ["get", "services"]:
        for name, s in sorted(services.items()):
            print(f"{name} {s.get('grpc_port') or ''}")
        return 0
    if args[:2] == ["get", "secret"] and len(args) == 5 and args[3] == "-o":
        secret = json.loads(os.environ.get("FAKE_KUBECTL_SECRETS") or "{}").get(args[2])
        m = re.fullmatch(r"jsonpath=\{\.data\.(.+)\}", args[4])
        if secret is None or not m:
            print(f'Error from server (NotFound): secrets "{args[2]}" not found', file=sys.stderr)
            return 1
        print(secret.get(m.group(1).replace("\\.", "."), ""), end="")
        return 0
    if args[:2] == ["get", "deployment"] and len(args) == 5 and args[3] == "-o":
        env = json.loads(os.environ.get("FAKE_KUBECTL_DEPLOYMENTS") or "{}").get(args[2])
        m = re.search(r'env\[\?\(@\.name=="([A-Z0-9_]+)"\)\]\.value', args[4])
        if env is None or not m:
            print(f'Error from server (NotFound): deployments.apps "{args[2]}" not found', file=sys.stderr)
            return 1
        print(env.get(m.group(1), ""), end="")
        return 0
    if args[:1] == ["port-forward"] and len(args) == 3 and args[1].startswith("svc/"):
        service = services[args[1][4:]]
        port = int(args[2].lstrip(":"))
        port_forward(service["address"], service.get("ports", {}).get(str(port), port))
        return 0
    print(f"fake kubectl: not faked: kubectl {' '.join(args)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
