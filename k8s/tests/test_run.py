"""The pure parts of run.py: how a container's env and volumes become a local process's."""

import unittest
from pathlib import Path

import run
from manifests import Manifests
from test_check import render


class EnvTest(unittest.TestCase):
    def test_secrets_and_expansion_as_the_kubelet_does(self):
        c = {"env": [{"name": "DATABASE_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "orders"}}},
                     {"name": "DATABASE_URL", "value": "postgres://orders:$(DATABASE_PASSWORD)@postgres:5432/orders"},
                     {"name": "LATE", "value": "$(LATER)"}, {"name": "LATER", "value": "x"}]}
        env = run.container_env("orders", c, {("creds", "orders"): "c0ffee"})
        self.assertEqual(env["DATABASE_URL"], "postgres://orders:c0ffee@postgres:5432/orders")
        self.assertEqual(env["LATE"], "$(LATER)", "only earlier variables expand")

    def test_other_sources_are_refused(self):
        c = {"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}
        with self.assertRaises(run.RunFailure):
            run.container_env("orders", c, {})

    def test_every_secret_key_gets_a_url_safe_value(self):
        m = Manifests("kind", render())
        values = run.generated_secrets(m)
        self.assertIn(("postgres-credentials", "orders-password"), values)
        self.assertIn(("postgres-credentials", "postgres-password"), values)
        for value in values.values():
            self.assertRegex(value, r"^[0-9a-f]{48}$")


class RewriteTest(unittest.TestCase):
    ADDRESSES = {"nats": "127.0.0.14", "postgres": "127.0.0.19", "orders": "127.0.0.16"}

    def test_hosts_of_urls_with_and_without_credentials(self):
        own = "127.0.0.16"
        self.assertEqual(run.rewrite("nats://nats:4222", own, self.ADDRESSES), "nats://127.0.0.14:4222")
        self.assertEqual(run.rewrite("postgres://orders:pw@postgres:5432/orders", own, self.ADDRESSES),
                         "postgres://orders:pw@127.0.0.19:5432/orders")
        self.assertEqual(run.rewrite("http://orders:50051", own, self.ADDRESSES), "http://127.0.0.16:50051")
        self.assertEqual(run.rewrite("0.0.0.0:50051", own, self.ADDRESSES), "127.0.0.16:50051")
        self.assertEqual(run.rewrite("postgres://u:pw@elsewhere:5432/d", own, self.ADDRESSES),
                         "postgres://u:pw@elsewhere:5432/d")

    def test_passwords_are_not_reported(self):
        self.assertEqual(run.masked("postgres://orders:s3cret@127.0.0.19:5432/orders"),
                         "postgres://orders:***@127.0.0.19:5432/orders")
        self.assertEqual(run.masked("nats://127.0.0.14:4222"), "nats://127.0.0.14:4222")

    def test_volume_paths(self):
        mounts = {"/data": Path("/tmp/v/data"), "/var/lib/postgresql/data": Path("/tmp/v/pg")}
        self.assertEqual(run.rewrite_paths("--store_dir=/data/jetstream", mounts), "--store_dir=/tmp/v/data/jetstream")
        self.assertEqual(run.rewrite_paths("/var/lib/postgresql/data/pgdata", mounts), "/tmp/v/pg/pgdata")
        self.assertEqual(run.rewrite_paths("/database", mounts), "/database", "a prefix of a name is not a path")


if __name__ == "__main__":
    unittest.main()
