"""scripts/kind-up.sh's whole flow, with docker, kind and kubectl faked (fake_cluster.py)
and the smoke test stubbed: in a copy of the repository's scripts and manifests, a
first run builds, creates, loads, makes its Secrets and deploys; a second run after no
change deploys the very same images (nothing to roll); a third adds a password the
Secret lacks; no password is ever on a command line; a failing run leaves no
temporary file behind; without curl, nothing starts."""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from manifests import ROOT

HERE = Path(__file__).resolve().parent
SERVICES = sorted(d.name for d in (ROOT / "services").iterdir() if (d / "src").is_dir())


class KindUpTest(unittest.TestCase):
    def setUp(self):
        self.dir = Path(tempfile.mkdtemp(prefix="kind-up-test-"))
        self.addCleanup(shutil.rmtree, self.dir)
        self.root = self.dir / "repo"
        (self.root / "scripts").mkdir(parents=True)
        for script in ("kind-up.sh", "dev-jwt.sh", "tls-certs.sh"):
            shutil.copy2(ROOT / "scripts" / script, self.root / "scripts" / script)
        shutil.copytree(ROOT / "k8s", self.root / "k8s", ignore=shutil.ignore_patterns("tests"))
        for service in SERVICES:
            (self.root / "services" / service).mkdir(parents=True)
        smoke = self.root / "scripts" / "kind-smoke.sh"
        smoke.write_text('#!/bin/sh\necho "$KIND_CLUSTER" >>"$FAKE_CLUSTER_STATE/smoke"\n')
        smoke.chmod(0o755)
        self.state = self.dir / "state"
        self.state.mkdir()
        self.tmp = self.dir / "tmp"  # TMPDIR: what kind-up leaves there
        self.tmp.mkdir()
        bindir = self.dir / "bin"
        bindir.mkdir()
        for tool in ("docker", "kind", "kubectl"):
            wrapper = bindir / tool
            wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "fake_cluster.py"}" {tool} "$@"\n')
            wrapper.chmod(0o755)
        self.env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(self.dir), "TMPDIR": str(self.tmp),
                    "FAKE_CLUSTER_STATE": str(self.state), "FAKE_CLUSTER_SERVICES": json.dumps(SERVICES)}

    def kind_up(self, fail: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(self.root / "scripts" / "kind-up.sh")], cwd=self.root,
                              env={**self.env, "FAKE_CLUSTER_FAIL": fail}, capture_output=True, text=True, timeout=120)

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in (self.state / "calls.jsonl").read_text().splitlines()]

    def data(self) -> dict:
        return json.loads((self.state / "state.json").read_text())

    def assertRan(self, run: subprocess.CompletedProcess):
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)

    def test_first_run_then_a_rerun_that_changes_nothing(self):
        self.assertRan(self.kind_up())
        first, calls = self.data(), self.calls()
        self.assertEqual(first["clusters"], ["grpc-template"])
        builds = [c for c in calls if c[:2] == ["docker", "build"] and "--help" not in c]
        self.assertEqual(len(builds), len(SERVICES))
        # Every image is built before the kind node starts, which would take memory
        # from the release build's compilers.
        create = calls.index(next(c for c in calls if c[:3] == ["kind", "create", "cluster"]))
        self.assertLess(max(i for i, c in enumerate(calls) if c in builds), create)
        self.assertTrue(all("--provenance=false" in c and "--load" in c for c in builds), builds)
        self.assertEqual(sorted(first["loaded"]), sorted(f"{s}:{first['images'][f'{s}:dev'][:12]}" for s in SERVICES))
        self.assertEqual(sorted(first["secrets"]), ["gateway-jwt-keys", "gateway-jwt-signer", "postgres-credentials"])
        keys = re.search(r"db_secret_keys=\(([^)]*)\)", (ROOT / "scripts" / "kind-up.sh").read_text())
        self.assertEqual(sorted(first["secrets"]["postgres-credentials"]), sorted(keys.group(1).split()))
        self.assertEqual(len(first["applied"]), 1)
        self.assertEqual((self.state / "smoke").read_text(), "grpc-template\n")
        waited = [c[-3] for c in calls if c[:1] == ["kubectl"] and "rollout" in c and "status" in c]
        self.assertEqual(waited[:2], ["statefulset.apps/nats", "statefulset.apps/postgres"])
        self.assertIn("deployment.apps/jaeger", waited)  # the observability stack too

        self.assertRan(self.kind_up())
        second = self.data()
        rerun = self.calls()[len(calls):]
        self.assertFalse([c for c in rerun if c[:3] == ["kind", "create", "cluster"]], rerun)
        # The same images under the same tags: the apply changes nothing, nothing rolls.
        self.assertEqual(second["applied"][1], second["applied"][0])
        self.assertFalse([c for c in rerun if "restart" in c], rerun)
        self.assertEqual(second["secrets"], first["secrets"])

        # A Secret from an older checkout, without one service's password: kind-up adds
        # it, and no password is ever on a command line.
        state = self.data()
        del state["secrets"]["postgres-credentials"]["payments-password"]
        (self.state / "state.json").write_text(json.dumps(state))
        self.assertRan(self.kind_up())
        secrets = self.data()["secrets"]
        self.assertIn("payments-password", secrets["postgres-credentials"])
        values = [base64.b64decode(v).decode(errors="replace") for secret in secrets.values() for v in secret.values()]
        for call in self.calls():
            for value in values:
                for arg in call:
                    self.assertNotIn(value.strip()[:32], arg, f"a secret on the command line: {call[:4]}")
        self.assertEqual(list(self.tmp.rglob("*")), [])

    def test_a_failed_run_leaves_no_secret_behind(self):
        # Applying the first Secret fails: its passwords were in files of TMPDIR then.
        run = self.kind_up(fail="secret")
        self.assertNotEqual(run.returncode, 0)
        self.assertEqual(list(self.tmp.rglob("*")), [], "left in TMPDIR after a failed run")

    def test_only_docker_kind_kubectl_curl_openssl(self):
        # Without curl on PATH, kind-up stops before it does anything, and says so.
        bare = self.dir / "bare"
        bare.mkdir()
        for tool in ("bash", "sh", "dirname", "basename", "mktemp", "rm", "cat", "grep", "sed", "head", "sort",
                     "od", "tr", "mkdir", "printf", "awk", "openssl", "env", "date", "tail"):
            path = shutil.which(tool, path="/usr/bin:/bin")
            if path:
                (bare / tool).symlink_to(path)
        for tool in ("docker", "kind", "kubectl"):
            shutil.copy2(self.dir / "bin" / tool, bare / tool)
        run = subprocess.run([str(bare / "bash"), str(self.root / "scripts" / "kind-up.sh")], cwd=self.root,
                             env={**self.env, "PATH": str(bare)}, capture_output=True, text=True, timeout=60)
        self.assertNotEqual(run.returncode, 0)
        self.assertIn("curl not found", run.stderr)
        self.assertFalse((self.state / "state.json").exists(), "it went on without curl")


if __name__ == "__main__":
    unittest.main()
