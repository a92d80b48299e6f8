"""The helpers of manifests.py that read env values as Kubernetes and the clients do."""

import unittest

from manifests import expand, parse_url, references, secret_refs


class ExpansionTest(unittest.TestCase):
    def test_earlier_variables_expand_others_stay(self):
        self.assertEqual(expand("postgres://u:$(P)@h:5432/d", {"P": "s3cret"}), "postgres://u:s3cret@h:5432/d")
        self.assertEqual(expand("$(UNSET) and $(P)", {"P": "x"}), "$(UNSET) and x")

    def test_double_dollar_escapes(self):
        self.assertEqual(expand("$$(P) costs $$5", {"P": "x"}), "$(P) costs $5")
        self.assertEqual(references("$$(P) $(Q)$(R)"), ["Q", "R"])

    def test_secret_refs(self):
        c = {"env": [{"name": "A", "value": "x"},
                     {"name": "P", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "p"}}}]}
        self.assertEqual(secret_refs(c), {"P": ("creds", "p")})


class UrlTest(unittest.TestCase):
    def test_broker_and_database_urls(self):
        self.assertEqual(parse_url("nats://nats:4222"), ("nats", "nats", 4222))
        self.assertEqual(parse_url("postgres://orders:pw@postgres:5432/orders?sslmode=disable"),
                         ("postgres", "postgres", 5432))
        self.assertEqual(parse_url("postgresql://postgres.ns.svc:5432/db"), ("postgresql", "postgres.ns.svc", 5432))

    def test_no_port_no_url(self):
        self.assertIsNone(parse_url("nats://nats"))
        self.assertIsNone(parse_url("nats:4222"))


if __name__ == "__main__":
    unittest.main()
