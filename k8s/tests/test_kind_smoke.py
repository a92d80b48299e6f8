"""scripts/kind-smoke.sh's `kubectl port-forward` step on a busy machine: the background
job's output file appears only when that job gets to run, which can be after the script
first looks for it. With a kubectl that is late to create it (faked below), the script
must wait for the `Forwarding from` line, not stop at the first look with `sed: can't
read` and no message of its own (as a run under load once did)."""

import shutil
import socket
import subprocess
import tempfile
import unittest
from pathlib import Path

from manifests import ROOT

# Answers what kind-smoke.sh asks before its first gRPC call. `port-forward` removes the
# file its output goes to (as if the job had not started yet), and writes kubectl's line
# there a second later: a port nothing listens on, so the script fails at the next step.
FAKE_KUBECTL = r"""#!/usr/bin/env bash
args="$*"
case "$args" in
  *"get namespace"*) exit 0 ;;
  *"get services"*) echo "inventory 50052"; exit 0 ;;
  *"get deployment"*) exit 0 ;;
  *port-forward*)
    out="$(readlink /proc/$$/fd/1)"
    rm -f "$out"
    sleep 1
    echo "Forwarding from 127.0.0.1:$FAKE_PORT -> 50052" >>"$out"
    exec sleep 60 ;;
esac
echo "fake kubectl: unexpected: $args" >&2
exit 2
"""


class PortForwardTest(unittest.TestCase):
    def test_an_output_file_that_appears_late_is_waited_for(self):
        work = Path(tempfile.mkdtemp(prefix="kind-smoke-test-"))
        self.addCleanup(shutil.rmtree, work)
        bindir = work / "bin"
        bindir.mkdir()
        kubectl = bindir / "kubectl"
        kubectl.write_text(FAKE_KUBECTL)
        kubectl.chmod(0o755)
        # A port bound but not listening: connections to it are refused, and no
        # parallel test's server can take it meanwhile.
        closed = socket.socket()
        self.addCleanup(closed.close)
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / "kind-smoke.sh")],
            env={"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work),
                 "FAKE_PORT": str(port)},
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        self.assertNotIn("can't read", done.stderr)
        # Past the port-forward: the script read the port and called it.
        self.assertIn("kind-smoke: FAILED: inventory lists no service of its own through reflection",
                      done.stderr, done.stdout + done.stderr)
        self.assertEqual(done.returncode, 1)


if __name__ == "__main__":
    unittest.main()
