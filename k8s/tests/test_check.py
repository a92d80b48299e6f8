"""The contract checks (check.py) fail on broken manifests: each test breaks the rendered
kind overlay in one way and expects the failure that names it."""

import contextlib
import copy
import dataclasses
import subprocess
import unittest
from unittest import mock

import check
import envvars
from manifests import ROOT, Failures, Manifests, container, pod_spec
import yaml


@contextlib.contextmanager
def reading(extra: dict[str, set[str]]):
    """The binaries as if they read more variables (`{"orders": {"NATS_URL"}}`): the
    rules about NATS_URL and DATABASE_URL, tested whether or not the Rust code that
    reads them is there yet."""
    real = envvars.service_env

    def service_env(service_src, shared_src):
        env = real(service_src, shared_src)
        more = extra.get(service_src.parent.name, set())
        return dataclasses.replace(env, reads=env.reads | more)

    with mock.patch.object(envvars, "service_env", service_env):
        yield


# What the kind overlay's durable component sets (k8s/components/durable/services.yaml).
DURABLE_READS = {"orders": {"NATS_URL", "DATABASE_URL"}, "notifications": {"NATS_URL", "DATABASE_URL"},
                 "inventory": {"DATABASE_URL"}, "payments": {"DATABASE_URL"}}


def render(overlay: str = "kind") -> list:
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
                         check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


class ContractTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = render()

    def failures(self, mutate=None, schemas=False) -> list[str]:
        m = Manifests("kind", copy.deepcopy(self.docs))
        if mutate:
            mutate(m)
        f = Failures()
        check.check(m, f, schemas=schemas)
        return f.messages

    def assertFails(self, mutate, *fragments, schemas=False):
        messages = self.failures(mutate, schemas)
        for fragment in fragments:
            self.assertTrue(any(fragment in msg for msg in messages),
                            f"no failure mentions {fragment!r}; got:\n" + "\n".join(messages))

    @staticmethod
    def env(m, name):
        return container(m.get("Deployment", name))["env"]

    def test_the_overlay_passes(self):
        self.assertEqual(self.failures(), [])

    def test_state_in_memory_on_more_than_one_replica(self):
        def drop_database(m):
            env = self.env(m, "payments")
            env[:] = [e for e in env if e["name"] not in ("DATABASE_URL", "DATABASE_PASSWORD")]
            m.get("HorizontalPodAutoscaler", "payments")["spec"]["maxReplicas"] = 3

        def drop_broker(m):
            env = self.env(m, "orders")
            env[:] = [e for e in env if e["name"] != "NATS_URL"]

        self.assertFails(drop_database, "payments: may run 3 replicas but DATABASE_URL is not set")
        self.assertFails(drop_broker, "orders: may run 2 replicas but NATS_URL is not set")

        def one_replica(m):
            drop_database(m)
            hpa = m.get("HorizontalPodAutoscaler", "payments")["spec"]
            hpa["minReplicas"] = hpa["maxReplicas"] = 1

        self.assertFalse([msg for msg in self.failures(one_replica) if "DATABASE_URL is not set" in msg])

    def test_the_production_overlay_keeps_state_where_every_replica_sees_it(self):
        m = Manifests("production", render("production"))
        f = Failures()
        check.check(m, f, schemas=False)
        self.assertEqual([msg for msg in f.messages if "replicas but" in msg], [])
        for name, wanted in DURABLE_READS.items():
            if m.get("Deployment", name) is None:
                continue  # taken by make remove-service
            env = {e["name"] for e in container(m.get("Deployment", name))["env"]}
            self.assertLessEqual(wanted, env, name)

    def test_a_variable_nothing_reads(self):
        self.assertFails(lambda m: self.env(m, "inventory").append({"name": "OTEL_ENDPOINT", "value": "x"}),
                         "env OTEL_ENDPOINT is set but services/inventory never reads it")

    def test_the_broker_and_database_edges_follow_the_urls(self):
        def edit(m):
            clients = m.get("NetworkPolicy", "postgres-clients")["spec"]["podSelector"]["matchExpressions"][0]
            clients["values"].remove("payments")
            m.get("NetworkPolicy", "nats")["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0][
                "values"].append("gateway")
            m.get("NetworkPolicy", "gateway")["spec"]["egress"].append(
                {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "nats"}}}]})
        with reading(DURABLE_READS):
            self.assertEqual(self.failures(), [])
            self.assertFails(edit, "payments → postgres:5432 is a call payments makes, but the policies deny it",
                             "gateway → nats:4222 is allowed, but gateway does not call it")

    def test_a_url_to_no_service(self):
        def wrong(m):
            for e in self.env(m, "orders"):
                if e["name"] == "NATS_URL":
                    e["value"] = "http://nats:4222"
            for e in self.env(m, "inventory"):
                if e["name"] == "DATABASE_URL":
                    e["value"] = e["value"].replace("@postgres:", "@postgre:")
        with reading(DURABLE_READS):
            self.assertFails(wrong, "NATS_URL='http://nats:4222' is not nats://",
                             "no Service named 'postgre'", "inventory → postgres:5432 is allowed, but inventory does not")

    def test_expansion_needs_an_earlier_variable(self):
        def reorder(m):
            env = self.env(m, "payments")
            password = next(e for e in env if e["name"] == "DATABASE_PASSWORD")
            env.remove(password)
            env.append(password)
        with reading(DURABLE_READS):
            self.assertFails(reorder, "env DATABASE_URL expands $(DATABASE_PASSWORD), which is not defined before it")

    def test_a_helper_variable_nothing_expands(self):
        def drop(m):
            env = self.env(m, "payments")
            env[:] = [e for e in env if e["name"] != "DATABASE_URL"]
        with reading(DURABLE_READS):
            self.assertFails(drop, "env DATABASE_PASSWORD is set but services/payments never reads it")

    def test_secrets_come_from_kind_up_or_the_manifests(self):
        def edit(m):
            for e in self.env(m, "orders"):
                if e["name"] == "DATABASE_PASSWORD":
                    e["valueFrom"]["secretKeyRef"]["key"] = "order-password"
            container(m.get("Deployment", "payments"))["env"].append(
                {"name": "RUST_LOG", "valueFrom": {"configMapKeyRef": {"name": "x", "key": "y"}}})
        with reading(DURABLE_READS):
            self.assertFails(edit, "Secret postgres-credentials (key order-password) is neither in the manifests "
                             "nor made by scripts/kind-up.sh", "uses valueFrom ['configMapKeyRef']")

    def test_secret_volumes_come_from_kind_up_or_the_manifests(self):
        def edit(m):
            for volume in pod_spec(m.get("Deployment", "gateway"))["volumes"]:
                volume["secret"]["items"][0]["key"] = "keys.json"
        self.assertFails(edit, "Secret gateway-jwt-keys (key keys.json) is neither in the manifests nor made by "
                         "scripts/kind-up.sh")

    def test_statefulsets_are_checked(self):
        def edit(m):
            s = m.get("StatefulSet", "postgres")
            pod_spec(s)["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
            s["spec"]["serviceName"] = "postgresql"
            m.get("Service", "nats")["spec"]["selector"] = {"app.kubernetes.io/name": "nats-server"}
            del container(m.get("StatefulSet", "nats"))["livenessProbe"]
        self.assertFails(edit, "StatefulSet grpc-template/postgres container postgres: readOnlyRootFilesystem",
                         "StatefulSet grpc-template/nats: no livenessProbe",
                         "serviceName 'postgresql' is not a Service", "selects the pods of [], not those of 'nats'")

    def test_a_missing_upstream(self):
        def drop(m):
            env = self.env(m, "orders")
            env[:] = [e for e in env if e["name"] != "PAYMENTS_ADDR"]
        self.assertFails(drop, "env PAYMENTS_ADDR is required")

    def test_an_upstream_on_the_wrong_port_or_service(self):
        def wrong(m):
            for e in self.env(m, "orders"):
                if e["name"] == "PAYMENTS_ADDR":
                    e["value"] = "http://payments:50052"
                if e["name"] == "INVENTORY_ADDR":
                    e["value"] = "http://inventroy:50052"
        self.assertFails(wrong, "Service payments has no port 50052", "no Service named 'inventroy'")

    def test_ports_the_binary_does_not_listen_on(self):
        def ports(m):
            c = container(m.get("Deployment", "payments"))
            c["ports"].append({"name": "metrics", "containerPort": 9999})
            for e in c["env"]:
                if e["name"] == "LISTEN_ADDR":
                    e["value"] = "127.0.0.1:50053"
        self.assertFails(ports, "container port 9999 is not a port the binary listens on",
                         "LISTEN_ADDR=127.0.0.1:50053 does not listen on every interface")

    def test_probes(self):
        def break_probes(m):
            c = container(m.get("Deployment", "orders"))
            c["readinessProbe"]["grpc"]["service"] = "orders.v1.OrdersService"
            c["livenessProbe"]["grpc"]["port"] = 50052
            container(m.get("Deployment", "gateway"))["readinessProbe"]["httpGet"]["path"] = "/ready"
        self.assertFails(break_probes, "asks health for 'orders.v1.OrdersService'",
                         "livenessProbe gRPC port 50052 is not a container port", "path /ready is not a route")

    def test_liveness_must_not_be_readiness(self):
        def swap(m):
            container(m.get("Deployment", "payments"))["livenessProbe"]["grpc"]["service"] = "readiness"
        self.assertFails(swap, "livenessProbe should ask for 'liveness'")

    def test_grace_period_shorter_than_the_drain(self):
        def shorten(m):
            m.get("Deployment", "inventory")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 12
        self.assertFails(shorten, "terminationGracePeriodSeconds 12 < preStop sleep 5")

    def test_a_selector_that_misses(self):
        def typo(m):
            m.get("Service", "payments")["spec"]["selector"] = {"app.kubernetes.io/name": "payment"}
        self.assertFails(typo, "selects the pods of [], not those of 'payments'",
                         "Service payments selects 0 workloads")

    def test_a_denied_call_and_an_extra_edge(self):
        def edit(m):
            orders = m.get("NetworkPolicy", "orders")["spec"]
            orders["egress"] = [r for r in orders["egress"]
                                if not any(p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "payments"
                                           for p in r.get("to", []))]
            m.get("NetworkPolicy", "payments")["spec"]["ingress"][0]["from"].append(
                {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}})
            m.get("NetworkPolicy", "gateway")["spec"]["egress"].append({"to": [{"podSelector": {}}]})
        self.assertFails(edit, "orders → payments:50053 is a call orders makes, but the policies deny it",
                         "gateway → payments:50053 is allowed, but gateway does not call it")

    def test_default_deny_and_dns(self):
        def edit(m):
            m.docs.remove(m.get("NetworkPolicy", "default-deny"))
            m.docs.remove(m.get("NetworkPolicy", "payments"))
            m.docs.remove(m.get("NetworkPolicy", "telemetry"))  # selects payments too
            # Jaeger resolves no name (the collector sends to it).
            m.get("NetworkPolicy", "jaeger")["spec"]["egress"] = copy.deepcopy(
                m.get("NetworkPolicy", "orders")["spec"]["egress"][-1:])
        self.assertFails(edit, "pod payments: no NetworkPolicy isolates it for Ingress",
                         "jaeger → kube-dns:53/UDP is allowed, but jaeger calls no service by name")

    def test_observability_edges(self):
        def edit(m):
            telemetry = m.get("NetworkPolicy", "telemetry")["spec"]
            telemetry["ingress"] = []  # no scrape
            telemetry["egress"] = telemetry["egress"][1:]  # no spans to the collector
            m.get("NetworkPolicy", "grafana")["spec"]["egress"].append(
                {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "otel-collector"}}}]})
            m.get("NetworkPolicy", "otel-collector")["spec"]["ingress"][0]["from"].append(
                {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "grafana"}}})
        self.assertFails(edit, "prometheus → orders:9101 is a call prometheus makes, but the policies deny it",
                         "orders → otel-collector:4317 is a call orders makes, but the policies deny it",
                         "grafana → otel-collector:4317 is allowed, but grafana does not call it")

    def test_only_api_clients_get_a_token(self):
        def edit(m):
            pod_spec(m.get("Deployment", "grafana"))["automountServiceAccountToken"] = True
            pod_spec(m.get("Deployment", "prometheus"))["automountServiceAccountToken"] = False
        self.assertFails(edit, "Deployment grpc-template/grafana: automountServiceAccountToken is not false",
                         "Deployment grpc-template/prometheus: automountServiceAccountToken is not true")

    def test_outside_reaches_only_the_gateway(self):
        def expose(m):
            m.get("Service", "orders")["spec"]["type"] = "NodePort"
            m.get("NetworkPolicy", "orders")["spec"]["ingress"].append({"ports": [{"port": 50051}]})
        self.assertFails(expose, "traffic from outside to orders:50051 is allowed",
                         "is exposed outside the cluster (NodePort)")

    def test_security_context(self):
        def loosen(m):
            c = container(m.get("Deployment", "payments"))
            c["securityContext"]["readOnlyRootFilesystem"] = False
            del c["resources"]["limits"]["memory"]
            m.get("Namespace", "grpc-template")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = "baseline"
        self.assertFails(loosen, "readOnlyRootFilesystem is not true", "no memory limit",
                         "does not enforce the restricted Pod Security Standard")

    def test_a_skip_without_a_reason(self):
        def skip(m):
            m.get("Deployment", "orders")["metadata"]["annotations"]["checkov.io/skip3"] = "CKV_K8S_8"
        self.assertFails(skip, "checkov.io/skip3 must be CKV_…=<the reason, in words>")

    def test_schemas_are_strict(self):
        def typo(m):
            container(m.get("Deployment", "orders"))["startupProbe"]["failureTreshold"] = 3
        self.assertFails(typo, "invalid for Kubernetes 1.37", "'failureTreshold' was unexpected", schemas=True)


    def test_a_startup_probe_shorter_than_the_connection_waits(self):
        def shorten(m):
            container(m.get("Deployment", "orders"))["startupProbe"]["failureThreshold"] = 30
            self.env(m, "payments").append({"name": "DATABASE_CONNECT_TIMEOUT", "value": "10m"})
        self.assertFails(shorten, "grpc-template/orders: the startupProbe gives up after 30s, but the service waits "
                         "up to 180s (DATABASE_CONNECT_TIMEOUT) + 180s (NATS_CONNECT_TIMEOUT)",
                         "grpc-template/payments: the startupProbe gives up after 190s, but the service waits up to 600s")

    def test_the_kind_node_is_overcommitted(self):
        def two_each(m):
            # Four of each: over the node however many services the tree has.
            for h in m.of_kind("HorizontalPodAutoscaler"):
                h["spec"]["minReplicas"] = 4
        self.assertFails(two_each, "of cpu (every Deployment rolling out at once), more than the 1050m a 2-CPU, "
                         "4 GiB kind node leaves beside Kubernetes' own 950m")

        def big(m):
            pod_spec(m.get("StatefulSet", "postgres"))["containers"][0]["resources"]["requests"]["memory"] = "3Gi"
        self.assertFails(big, "of memory (every Deployment rolling out at once), more than the 3806Mi")

        def surge(m):
            m.get("Deployment", "jaeger")["spec"]["strategy"] = {"type": "RollingUpdate"}
            m.get("Deployment", "grafana")["spec"]["strategy"] = {"type": "RollingUpdate"}
            # Every service of the tree (make remove-service may have taken some).
            for d in m.deployments:
                if d["metadata"]["name"] not in check.OBSERVABILITY:
                    d["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = 2
        self.assertFails(surge, "of cpu (every Deployment rolling out at once)")

    def test_kind_images_unpinned_or_pulled_always(self):
        def loosen(m):
            pod_spec(m.get("StatefulSet", "nats"))["containers"][0]["imagePullPolicy"] = "Always"
            pod_spec(m.get("Deployment", "grafana"))["containers"][0]["image"] = "grafana/grafana:latest"
            pod_spec(m.get("Deployment", "jaeger"))["containers"][0]["image"] = "jaegertracing/all-in-one"
            pod_spec(m.get("Deployment", "orders"))["containers"][0]["image"] = "orders:latest"
        self.assertFails(loosen, "nats: container nats: imagePullPolicy is 'Always', not IfNotPresent",
                         "image 'grafana/grafana:latest' is not pinned", "image 'jaegertracing/all-in-one' is not pinned",
                         "image 'orders:latest' is not pinned")
        # Pinned by digest, and the tag of an image kind-up.sh built.
        def digest(m):
            pod_spec(m.get("Deployment", "grafana"))["containers"][0]["image"] = "grafana/grafana@sha256:" + "0" * 64
            pod_spec(m.get("Deployment", "orders"))["containers"][0]["image"] = "orders:3f2a9c81d0e4"
        self.assertEqual(self.failures(digest), [])

class ProductionTest(unittest.TestCase):
    """The production overlay's promises (mutual TLS, no reflection, probes on the
    health-only port, nothing exposed, no Secret) and the TLS rules of every overlay."""

    @classmethod
    def setUpClass(cls):
        cls.docs = render(check.PRODUCTION)

    def failures(self, mutate=None, schemas=False) -> list[str]:
        m = Manifests(check.PRODUCTION, copy.deepcopy(self.docs))
        if mutate:
            mutate(m)
        f = Failures()
        check.check(m, f, schemas=schemas)
        return f.messages

    assertFails = ContractTest.assertFails

    @staticmethod
    def set_env(m, name, var, value):
        for e in container(m.get("Deployment", name))["env"]:
            if e["name"] == var:
                e["value"] = value

    def test_the_overlay_passes(self):
        self.assertEqual(self.failures(), [])

    def test_reflection_on(self):
        self.assertFails(lambda m: self.set_env(m, "inventory", "GRPC_REFLECTION", "true"),
                         "GRPC_REFLECTION is not false")

    def test_tls_off(self):
        def plaintext(m):
            c = container(m.get("Deployment", "inventory"))
            c["env"] = [e for e in c["env"] if e["name"] != "GRPC_TLS_CERT_FILE"]
        self.assertFails(plaintext, "GRPC_TLS_CERT_FILE is not set",
                         "INVENTORY_ADDR=https://inventory:50052 is https://, but inventory serves plaintext")

    def test_a_plaintext_call_to_a_tls_port(self):
        self.assertFails(lambda m: self.set_env(m, "orders", "INVENTORY_ADDR", "http://inventory:50052"),
                         "is plaintext, but inventory serves TLS",
                         "INVENTORY_ADDR=http://inventory:50052: production calls go over TLS")

    def test_https_without_a_ca(self):
        def no_ca(m):
            c = container(m.get("Deployment", "orders"))
            c["env"] = [e for e in c["env"] if e["name"] != "GRPC_CLIENT_TLS_CA_FILE"]
        self.assertFails(no_ca, "GRPC_CLIENT_TLS_CA_FILE is not set: the service refuses to start")

    def test_probes_on_the_tls_port(self):
        def tls_port(m):
            container(m.get("Deployment", "payments"))["readinessProbe"]["grpc"]["port"] = 50053
        self.assertFails(tls_port, "readinessProbe asks port 50053, not the plaintext health port")

    def test_a_mount_without_its_volume(self):
        self.assertFails(lambda m: pod_spec(m.get("Deployment", "payments")).pop("volumes"),
                         "mounts volume 'tls', which the pod does not define")

    def test_exposed_or_secret(self):
        def expose(m):
            m.get("Service", "gateway")["spec"]["type"] = "NodePort"
            m.docs.append({"apiVersion": "v1", "kind": "Secret",
                           "metadata": {"name": "orders-tls", "namespace": "grpc-template"}})
        self.assertFails(expose, "production exposes the gateway through your ingress only",
                         "a Secret in the rendered manifests")



if __name__ == "__main__":
    unittest.main()
