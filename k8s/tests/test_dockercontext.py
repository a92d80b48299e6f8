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
        self.assertEqual(failures, ["Dockerfile: COPY/ADD source 'docs/' is not in the build context (.dockerignore)"])


if __name__ == "__main__":
    unittest.main()
