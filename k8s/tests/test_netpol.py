"""NetworkPolicy semantics of netpol.py, on policies written here."""

import unittest

from netpol import Cluster, Endpoint


def policy(name, selector, types, ingress=None, egress=None, namespace="app"):
    spec = {"podSelector": selector, "policyTypes": types}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def pod(name, namespace="app", ports=(("grpc", 50051, "TCP"),)):
    return Endpoint.pod(name, namespace, {"app": name}, ports)


A, B, C = pod("a"), pod("b"), pod("c")
OUTSIDE = Endpoint("outside", external=True)
DENY = policy("deny", {}, ["Ingress", "Egress"])


class NetpolTest(unittest.TestCase):
    def test_without_policies_everything_is_open(self):
        self.assertTrue(Cluster([]).allows(A, B, 50051))
        self.assertFalse(Cluster([]).isolated(A, "Ingress"))

    def test_default_deny_closes_both_directions(self):
        cluster = Cluster([DENY])
        self.assertFalse(cluster.allows(A, B, 50051))
        self.assertTrue(cluster.isolated(A, "Egress"))

    def test_a_call_needs_egress_and_ingress(self):
        egress = policy("a-out", {"matchLabels": {"app": "a"}}, ["Egress"],
                        egress=[{"to": [{"podSelector": {"matchLabels": {"app": "b"}}}], "ports": [{"port": 50051}]}])
        ingress = policy("b-in", {"matchLabels": {"app": "b"}}, ["Ingress"],
                         ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": [{"port": "grpc"}]}])
        self.assertFalse(Cluster([DENY, egress]).allows(A, B, 50051))
        self.assertFalse(Cluster([DENY, ingress]).allows(A, B, 50051))
        both = Cluster([DENY, egress, ingress])
        self.assertTrue(both.allows(A, B, 50051))
        self.assertFalse(both.allows(A, B, 50052), "another port")
        self.assertFalse(both.allows(C, B, 50051), "another source")
        self.assertFalse(both.allows(A, B, 50051, "UDP"), "another protocol")

    def test_peers_pod_selector_is_namespaced_namespace_selector_is_not(self):
        elsewhere = Endpoint.pod("a", "other", {"app": "a"}, ())
        same_ns = policy("b-in", {"matchLabels": {"app": "b"}}, ["Ingress"],
                         ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}])
        self.assertTrue(Cluster([same_ns]).allows(A, B, 50051))
        self.assertFalse(Cluster([same_ns]).allows(elsewhere, B, 50051))
        any_ns = policy("b-in", {"matchLabels": {"app": "b"}}, ["Ingress"],
                        ingress=[{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "a"}}}]}])
        self.assertTrue(Cluster([any_ns]).allows(elsewhere, B, 50051))

    def test_a_rule_without_peers_admits_everyone_even_outside(self):
        open_b = policy("b-in", {"matchLabels": {"app": "b"}}, ["Ingress"], ingress=[{"ports": [{"port": 50051}]}])
        cluster = Cluster([DENY, open_b])
        self.assertTrue(cluster.allows(OUTSIDE, B, 50051))
        self.assertFalse(cluster.allows(OUTSIDE, A, 50051))

    def test_match_expressions(self):
        sel = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "c"]}]}
        p = policy("in", {"matchLabels": {"app": "b"}}, ["Ingress"], ingress=[{"from": [{"podSelector": sel}]}])
        cluster = Cluster([p])
        self.assertTrue(cluster.allows(A, B, 50051))
        self.assertTrue(cluster.allows(C, B, 50051))
        self.assertFalse(cluster.allows(pod("d"), B, 50051))


if __name__ == "__main__":
    unittest.main()
