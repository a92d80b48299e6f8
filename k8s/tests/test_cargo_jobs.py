"""scripts/cargo-jobs.sh, which the Dockerfile runs (with the image's /bin/sh) to choose
how many jobs cargo runs: one per CPU, at most one per 1.5 GiB of available memory, or
CARGO_BUILD_JOBS."""

import os
import subprocess
import tempfile
import unittest
from pathlib import Path

from manifests import ROOT

SCRIPT = ROOT / "scripts" / "cargo-jobs.sh"
GIB_KIB = 1024 * 1024


class CargoJobsTest(unittest.TestCase):
    def jobs(self, meminfo: str, cpus: int, **env: str) -> subprocess.CompletedProcess:
        with tempfile.NamedTemporaryFile("w", suffix=".meminfo", delete=False) as f:
            f.write(meminfo)
        self.addCleanup(os.unlink, f.name)
        return subprocess.run(["/bin/sh", str(SCRIPT), f.name, str(cpus)], capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", **env})

    def assertJobs(self, meminfo: str, cpus: int, expected: int, **env: str):
        run = self.jobs(meminfo, cpus, **env)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stdout, f"{expected}\n", run.stderr)
        self.assertIn(f"cargo-jobs: {expected} jobs", run.stderr)

    @staticmethod
    def meminfo(available_kib: int) -> str:
        return f"MemTotal:       33554432 kB\nMemFree:         1000000 kB\nMemAvailable:   {available_kib} kB\n"

    def test_one_job_per_one_and_a_half_gib_available(self):
        self.assertJobs(self.meminfo(4 * GIB_KIB), 8, 2)  # a 4 GiB Docker on an 8-CPU laptop
        self.assertJobs(self.meminfo(3 * GIB_KIB - 1), 8, 1)
        self.assertJobs(self.meminfo(12 * GIB_KIB), 16, 8)

    def test_never_fewer_than_one_nor_more_than_the_cpus(self):
        self.assertJobs(self.meminfo(512 * 1024), 4, 1)
        self.assertJobs(self.meminfo(64 * GIB_KIB), 2, 2)

    def test_without_memavailable_one_per_cpu(self):
        self.assertJobs("MemTotal: 1000 kB\n", 6, 6)

    def test_cargo_build_jobs_decides(self):
        self.assertJobs(self.meminfo(64 * GIB_KIB), 8, 3, CARGO_BUILD_JOBS="3")
        self.assertJobs(self.meminfo(4 * GIB_KIB), 8, 2, CARGO_BUILD_JOBS="")

    def test_a_bad_cargo_build_jobs_is_an_error_naming_it(self):
        for bad in ("0", "-1", "two", "2.5", "02"):
            run = self.jobs(self.meminfo(4 * GIB_KIB), 8, CARGO_BUILD_JOBS=bad)
            self.assertEqual(run.returncode, 1, bad)
            self.assertEqual(run.stdout, "")
            self.assertIn(f"CARGO_BUILD_JOBS is a positive number of jobs, not '{bad}'", run.stderr)

    def test_this_machine(self):
        run = subprocess.run(["/bin/sh", str(SCRIPT)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertGreaterEqual(int(run.stdout), 1)
        self.assertLessEqual(int(run.stdout), os.cpu_count())


if __name__ == "__main__":
    unittest.main()
