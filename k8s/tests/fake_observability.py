"""Stand-ins for the kind overlay's observability stack in the manifest-driven run
(run.py), so that scripts/kind-smoke.sh's checks of it run against what the services
really send and serve:

- an OTLP/gRPC trace receiver at the collector's address (the services'
  OTEL_EXPORTER_OTLP_ENDPOINT): it records which services sent spans of which trace;
- Jaeger's query API, GET /api/traces/<trace id>, answered from those spans in Jaeger's
  shape (`processes` with a `serviceName` each);
- Prometheus' query API, GET /api/v1/query (the one query the smoke test makes, `min by
  (service) (up{…})`), answered by scraping every service's /metrics now, where its pod
  annotations say, as the kind overlay's Prometheus does;
- Grafana's GET /api/health.

The HTTP ones listen on free ports of 127.0.0.1; `ports` maps the Service ports that
fake_kubectl.py's port-forward is asked for to them.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import grpc

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def fields(message: bytes):
    """(field number, value) of a protobuf message: bytes for length-delimited fields,
    ints for varints; fixed-size fields skipped."""
    i = 0
    while i < len(message):
        key, i = varint(message, i)
        wire = key & 7
        if wire == 0:
            value, i = varint(message, i)
            yield key >> 3, value
        elif wire == 2:
            length, i = varint(message, i)
            yield key >> 3, message[i:i + length]
            i += length
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"protobuf wire type {wire}")


def varint(message: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = message[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def service_name(resource: bytes) -> str:
    for number, kv in fields(resource):
        if number == 1:  # Resource.attributes: KeyValue { key = 1; AnyValue value = 2 }
            pairs = dict(fields(kv))
            if pairs.get(1) == b"service.name":
                return dict(fields(pairs.get(2, b""))).get(1, b"").decode()  # AnyValue.string_value
    return "?"


class Observability:
    def __init__(self, collector: str, pods: list) -> None:
        self.pods = pods
        self.traces: dict[str, set[str]] = {}
        self.lock = threading.Lock()
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.grpc.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            TRACE_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(self.export)})])
        if not self.grpc.add_insecure_port(collector):
            raise RuntimeError(f"cannot listen on {collector}")
        self.http = {port: self.serve(handler) for port, handler in
                     ((16686, self.jaeger), (9090, self.prometheus), (3000, self.grafana))}

    @property
    def ports(self) -> dict[str, dict[str, int]]:
        names = {16686: "jaeger", 9090: "prometheus", 3000: "grafana"}
        return {names[port]: {str(port): server.server_address[1]} for port, server in self.http.items()}

    def __enter__(self) -> "Observability":
        self.grpc.start()
        for server in self.http.values():
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.grpc.stop(0)
        for server in self.http.values():
            server.shutdown()
            server.server_close()

    # ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1 }, ResourceSpans
    # { Resource resource = 1; repeated ScopeSpans scope_spans = 2 }, ScopeSpans { repeated
    # Span spans = 2 }, Span { bytes trace_id = 1 }.
    def export(self, request: bytes, context) -> bytes:
        for number, resource_spans in fields(request):
            if number != 1:
                continue
            parts = list(fields(resource_spans))
            service = next((service_name(v) for n, v in parts if n == 1), "?")
            for _, scope_spans in (p for p in parts if p[0] == 2):
                for _, span in (f for f in fields(scope_spans) if f[0] == 2):
                    trace_id = dict(fields(span)).get(1, b"").hex()
                    with self.lock:
                        self.traces.setdefault(trace_id, set()).add(service)
        return b""  # an empty ExportTraceServiceResponse: everything accepted

    def jaeger(self, path: str) -> tuple[int, str]:
        trace_id = path.rsplit("/", 1)[-1]
        with self.lock:
            services = sorted(self.traces.get(trace_id, ()))
        if not services:
            return 404, json.dumps({"data": None, "errors": [{"code": 404, "msg": "trace not found"}]})
        processes = {f"p{i + 1}": {"serviceName": s, "tags": []} for i, s in enumerate(services)}
        return 200, json.dumps({"data": [{"traceID": trace_id, "spans": [], "processes": processes}]},
                               separators=(",", ":"))

    def prometheus(self, path: str) -> tuple[int, str]:
        result = []
        for pod in self.pods:
            template = pod.deployment["spec"]["template"]["metadata"]
            annotations = template.get("annotations") or {}
            if annotations.get("prometheus.io/scrape") != "true":
                continue
            url = f"http://{pod.address}:{annotations['prometheus.io/port']}{annotations.get('prometheus.io/path', '/metrics')}"
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    up = answer.status == 200
            except OSError:
                up = False
            service = template["labels"]["app.kubernetes.io/name"]
            result.append({"metric": {"service": service}, "value": [1.0, "1" if up else "0"]})
        return 200, json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}},
                               separators=(",", ":"))

    def grafana(self, path: str) -> tuple[int, str]:
        if path != "/api/health":
            return 404, "{}"
        return 200, json.dumps({"commit": "fake", "database": "ok", "version": "11.4.0"}, indent=2)

    @staticmethod
    def serve(answer) -> ThreadingHTTPServer:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the name http.server calls)
                status, body = answer(urlparse(self.path).path)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return ThreadingHTTPServer(("127.0.0.1", 0), Handler)
