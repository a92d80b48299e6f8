"""The build context check (dockercontext.py): Docker's .dockerignore rules, pattern by
pattern, and the check failing on the contexts that broke the image build."""

import unittest

import dockercontext
from dockercontext import compile_pattern, copy_sources, excluded, parse, source_exists
from manifests import ROOT


def sent(ignore: str, paths: list[str]) -> list[str]:
    patterns = parse(ignore)
    return [p for p in paths if not excluded(patterns, p)]


class PatternTest(unittest.TestCase):
    def test_star_stays_within_a_directory(self):
        r = compile_pattern("*.rs")
        self.assertTrue(r.match("main.rs"))
        self.assertFalse(r.match("src/main.rs"))
        self.assertTrue(compile_pattern("src/*.rs").match("src/main.rs"))
        self.assertTrue(compile_pattern("src/?.rs").match("src/a.rs"))
        self.assertFalse(compile_pattern("src/?.rs").match("src/ab.rs"))

    def test_double_star_is_any_number_of_directories(self):
        r = compile_pattern("**/target")
        for path in ("target", "shared/target", "a/b/target"):
            self.assertTrue(r.match(path), path)
        self.assertFalse(r.match("mytarget"))
        self.assertTrue(compile_pattern("a/**/b").match("a/b"))
        self.assertTrue(compile_pattern("a/**/b").match("a/x/y/b"))
        self.assertTrue(compile_pattern("docs/**").match("docs/x/y.md"))

    def test_escapes_and_classes(self):
        self.assertTrue(compile_pattern(r"a\*b").match("a*b"))
        self.assertFalse(compile_pattern(r"a\*b").match("axb"))
        self.assertTrue(compile_pattern("file[0-9].txt").match("file3.txt"))
        self.assertTrue(compile_pattern("a.b").match("a.b"))
        self.assertFalse(compile_pattern("a.b").match("axb"))

    def test_reading(self):
        patterns = parse("\ufeff# comment\n\n  /src/  \n!  ./docs//x/\n #not a comment\n")
        self.assertEqual([(p.text, p.exclusion) for p in patterns],
                         [("src", False), ("docs/x", True), ("#not a comment", False)])


class ContextTest(unittest.TestCase):
    paths = ["Cargo.toml", "README.md", "src/lib.rs", "bench/Cargo.toml", "target/debug/x",
             "shared/target/y", "services/orders/src/main.rs", "services/orders/tests/t.rs", ".git/HEAD"]

    def test_a_parent_directory_matches(self):
        self.assertEqual(sent("target\n.git\nservices", self.paths),
                         ["Cargo.toml", "README.md", "src/lib.rs", "bench/Cargo.toml", "shared/target/y"])

    def test_exclusions_let_paths_back_in_and_the_last_match_decides(self):
        self.assertEqual(sent("*\n!Cargo.toml\n!src/\n!services/\nservices/*/tests", self.paths),
                         ["Cargo.toml", "src/lib.rs", "services/orders/src/main.rs"])
        # Inside a directory excluded before (not so in .gitignore).
        self.assertEqual(sent("services\n!services/orders/src", self.paths)[-3:],
                         ["shared/target/y", "services/orders/src/main.rs", ".git/HEAD"])
        # A later exclusion undoes an earlier `!`.
        self.assertEqual(sent("*\n!src/\nsrc", self.paths), [])
        self.assertEqual(sent("*\n!**/target\n", self.paths), ["target/debug/x", "shared/target/y"])

    def test_copy_sources(self):
        dockerfile = ("FROM x AS a\nCOPY . .\n# COPY nothing/ here\nCOPY --from=a /b /c\n"
                      "ADD --chmod=644 conf/a.toml \\\n  conf/b.toml /etc/\nCOPY [\"x y\", \"/z\"]\n"
                      "ADD https://example.com/f /f\n")
        self.assertEqual(copy_sources(dockerfile), [".", "conf/a.toml", "conf/b.toml", "x y"])
        context = ["src/lib.rs", "conf/a.toml"]
        self.assertTrue(source_exists(context, "."))
        self.assertTrue(source_exists(context, "conf/"))
        self.assertTrue(source_exists(context, "conf/*.toml"))
        self.assertTrue(source_exists(context, "src"))
        self.assertFalse(source_exists(context, "conf/b.toml"))
        self.assertFalse(source_exists([], "."))


class RepositoryTest(unittest.TestCase):
    """The checks on this repository's build context; ROOT's .dockerignore passes
    (scripts/k8s-check.sh runs dockercontext.py on it), the broken ones do not."""

    @classmethod
    def setUpClass(cls):
        cls.ignore = (ROOT / ".dockerignore").read_text()

    def test_a_workspace_member_left_out_fails_cargo_metadata(self):
        broken = self.ignore.replace("!bench/\n", "")
        self.assertNotEqual(broken, self.ignore)
        failures = dockercontext.check(ROOT, dockerignore=broken)
        self.assertTrue(any("cargo metadata" in f and "bench" in f for f in failures), failures)

    def test_a_binary_left_out_fails(self):
        failures = dockercontext.check(ROOT, dockerignore=self.ignore + "services/orders/src/main.rs\n")
        self.assertTrue(any("no binary orders" in f for f in failures), failures)

    def test_a_build_script_left_out_fails(self):
        failures = dockercontext.check(ROOT, dockerignore=self.ignore + "/build.rs\n")
        self.assertTrue(any("build.rs" in f for f in failures), failures)

    def test_a_copy_source_left_out_fails(self):
        failures = dockercontext.check(ROOT, dockerfile="FROM x\nCOPY . .\nCOPY docs/ /docs/\n")
        self.assertIn("Dockerfile: COPY/ADD source 'docs/' is not in the build context (.dockerignore)", failures)

    def test_the_cargo_steps_build_the_services_and_stack_with_a_number_of_jobs(self):
        dockerfile = (ROOT / "Dockerfile").read_text()
        self.assertEqual(dockercontext.check(ROOT, dockerfile=dockerfile), [])
        # The whole workspace: the bench harness's binaries too, three more fat-LTO links.
        whole = dockerfile.replace("<packages", "--workspace")
        self.assertNotEqual(whole, dockerfile)
        failures = dockercontext.check(ROOT, dockerfile=whole)
        self.assertEqual(len([f for f in failures if "the whole workspace" in f]), 2, failures)
        # One job per CPU whatever the memory.
        unbounded = dockerfile.replace('--jobs "$jobs" ', "")
        failures = dockercontext.check(ROOT, dockerfile=unbounded)
        self.assertEqual(len([f for f in failures if "no --jobs number" in f]), 2, failures)
        # A cook of other packages than the build's rebuilds the dependencies.
        cook = dockerfile.replace("--recipe-path recipe.json <packages", "--recipe-path recipe.json -p gateway")
        failures = dockercontext.check(ROOT, dockerfile=cook)
        self.assertTrue(any("`cargo chef cook` builds the packages ['gateway']" in f for f in failures), failures)
        # A step that fails is reported with its output.
        failing = dockerfile.replace('jobs="$(cargo-jobs)"', 'jobs="$(CARGO_BUILD_JOBS=none cargo-jobs)"')
        failures = dockercontext.check(ROOT, dockerfile=failing)
        self.assertTrue(any(f.startswith("Dockerfile: RUN ") and "CARGO_BUILD_JOBS is a positive number" in f
                            for f in failures), failures)


if __name__ == "__main__":
    unittest.main()
