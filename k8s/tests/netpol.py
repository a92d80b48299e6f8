"""What NetworkPolicies allow, by the Kubernetes semantics (networking.k8s.io/v1):

- a pod selected by no policy of a direction (Ingress or Egress) is open in it;
- once selected, a connection is allowed if any selecting policy's rule allows it;
- a connection between two pods needs the egress side of the source AND the ingress
  side of the destination;
- a rule's peers: `podSelector` alone means pods of the policy's namespace,
  `namespaceSelector` alone all pods of the matching namespaces, both together the
  matching pods of the matching namespaces, `ipBlock` addresses (here: anything
  outside the cluster); no `from`/`to` at all means everyone;
- a rule's ports: none means every port; a named port is the destination's container
  port of that name; `endPort` makes a range.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace, labels, container ports) or, with `external`, anything outside
    the cluster (a client on the internet, a node's port mapping)."""

    name: str
    namespace: str = ""
    labels: tuple = ()
    # (name, port, protocol) of each container port
    ports: tuple = ()
    external: bool = False

    @staticmethod
    def pod(name: str, namespace: str, labels: dict, ports=()) -> "Endpoint":
        return Endpoint(name, namespace, tuple(sorted(labels.items())), tuple(ports))

    def label_dict(self) -> dict:
        return dict(self.labels)


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector: `{}` matches everything; `None` (absent) is handled by callers."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


@dataclass
class Cluster:
    """Policies and the labels of namespaces (`kubernetes.io/metadata.name` is implied)."""

    policies: list[dict]
    namespace_labels: dict[str, dict] = field(default_factory=dict)

    def ns_labels(self, namespace: str) -> dict:
        return {**self.namespace_labels.get(namespace, {}), "kubernetes.io/metadata.name": namespace}

    def _selecting(self, pod: Endpoint, direction: str) -> list[dict]:
        if pod.external:
            return []
        out = []
        for policy in self.policies:
            meta, spec = policy["metadata"], policy.get("spec") or {}
            if meta.get("namespace", "default") != pod.namespace:
                continue
            if not selector_matches(spec.get("podSelector"), pod.label_dict()):
                continue
            types = spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))
            if direction in types:
                out.append(policy)
        return out

    def _peer_matches(self, peer: dict, policy_ns: str, other: Endpoint) -> bool:
        if "ipBlock" in peer:
            return other.external
        if other.external:
            return False
        pod_sel, ns_sel = peer.get("podSelector"), peer.get("namespaceSelector")
        if ns_sel is None:
            ns_ok = other.namespace == policy_ns
        else:
            ns_ok = selector_matches(ns_sel, self.ns_labels(other.namespace))
        pod_ok = pod_sel is None or selector_matches(pod_sel, other.label_dict())
        return ns_ok and pod_ok

    @staticmethod
    def _port_matches(rule_ports, dest: Endpoint, port: int, protocol: str) -> bool:
        if not rule_ports:
            return True
        for p in rule_ports:
            if p.get("protocol", "TCP") != protocol:
                continue
            if "port" not in p:
                return True
            want = p["port"]
            if isinstance(want, str):
                numbers = [n for (name, n, proto) in dest.ports if name == want and proto == protocol]
                if port in numbers:
                    return True
                continue
            if want == port or (p.get("endPort") and want <= port <= p["endPort"]):
                return True
        return False

    def _side_allows(self, pod: Endpoint, other: Endpoint, dest: Endpoint, port: int, protocol: str,
                     direction: str) -> bool:
        policies = self._selecting(pod, direction)
        if not policies:
            return True  # not isolated in this direction
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        for policy in policies:
            ns = policy["metadata"].get("namespace", "default")
            for rule in (policy.get("spec") or {}).get(key) or []:
                peers = rule.get(peers_key)
                if peers and not any(self._peer_matches(peer, ns, other) for peer in peers):
                    continue
                if self._port_matches(rule.get("ports"), dest, port, protocol):
                    return True
        return False

    def allows(self, src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP") -> bool:
        """Whether src may open a connection to dst's port."""
        egress = self._side_allows(src, dst, dst, port, protocol, "Egress")
        ingress = self._side_allows(dst, src, dst, port, protocol, "Ingress")
        return egress and ingress

    def isolated(self, pod: Endpoint, direction: str) -> bool:
        return bool(self._selecting(pod, direction))
