#!/usr/bin/env python3
"""The image's build context, as Docker computes it, checked without a container engine.
Usage: dockercontext.py [ROOT] (scripts/k8s-check.sh)

The context is the files of the checkout (`git ls-files --cached --others
--exclude-standard`: what a clone has, plus new files not yet committed) that
`.dockerignore` lets through, by Docker's rules (moby/patternmatcher, which BuildKit's
file sync and the classic builder both use):

- one pattern a line; a line starting with `#` is a comment; surrounding blanks are
  dropped; the pattern is cleaned like Go's `filepath.Clean` (`src/` is `src`, `./a`
  is `a`) and a leading `/` is dropped;
- `*` is any run of characters but `/`, `?` one such character, `[…]` a class, `\\`
  escapes; `**` is any number of directories (zero included), and a trailing `**`
  anything at all;
- a pattern matches a path when it matches the path itself or one of its parent
  directories (`target` excludes `target/debug/x`);
- patterns apply in order and the last one that matches decides: excluded, or, for a
  pattern starting with `!`, let back in — even inside a directory an earlier pattern
  excluded (unlike .gitignore).

In a copy of that context, the checks are what the Dockerfile's cargo steps need:
`cargo metadata --locked --offline` (for this machine's platform) loads every workspace member and resolves the lock
file as it is (what `cargo chef prepare` and `cargo build --locked` do first); every
target that `cargo build --workspace --bins` compiles (binaries, libraries, build
scripts) has its source file there; every service (a folder of services/) and the
`stack` launcher has its binary; and every local source of a `COPY`/`ADD` of the
Dockerfile exists in the context.

Then the Dockerfile's `RUN` steps are replayed there with `/bin/sh -c`, as Docker runs
them, in order, with a `cargo` that only records its arguments (and every
`COPY <file> /usr/local/bin/<name>` of the Dockerfile as the command <name>): its
`cargo chef cook` and `cargo build` must both build, in release with `--locked` and a
`--jobs` number, the binaries of exactly the services and `stack`.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from manifests import ROOT  # noqa: E402


@dataclass(frozen=True)
class Pattern:
    text: str  # cleaned, without the `!`
    exclusion: bool  # a `!` pattern: lets matching paths back in
    regex: re.Pattern

    def matches(self, path: str) -> bool:
        """The path itself or one of its parent directories matches."""
        parts = path.split("/")
        return any(self.regex.match("/".join(parts[:i])) for i in range(1, len(parts) + 1))


def clean(path: str) -> str:
    """Go's filepath.Clean on a slash path (posixpath.normpath, except that Go makes a
    leading `//` one `/`)."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def compile_pattern(pattern: str) -> re.Pattern:
    """patternmatcher's translation of a pattern into a regular expression."""
    out = "^"
    i = 0
    in_class = False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*" and pattern[i + 1:i + 2] == "*":
            leading = i == 0
            i += 2
            if pattern[i:i + 1] == "/":
                i += 1  # `**/` is `**`
            if i == len(pattern):
                out += ".*"  # a trailing `**`: anything
            elif leading and pattern[i - 1] != "/" and not re.search(r"[*?\[\]]", pattern[i:]):
                # patternmatcher's suffix match: a leading `**` then plain characters
                # is any path that ends with them.
                out += ".*"
            else:
                out += "(.*/)?"  # any number of directories, none included
            continue
        if ch == "*":
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\":
            if i + 1 < len(pattern):
                i += 1
                out += re.escape(pattern[i])
            else:
                out += re.escape("\\")
        elif ch in "[]":
            out += ch
            in_class = ch == "["
        elif in_class or ch not in ".+()|{}$^":
            out += ch
        else:
            out += "\\" + ch
        i += 1
    return re.compile(out + "$")


def parse(text: str) -> list[Pattern]:
    """The patterns of a .dockerignore, as moby's ignorefile.ReadAll reads them."""
    patterns = []
    for n, line in enumerate(text.splitlines()):
        if n == 0:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        if line:
            line = clean(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
        patterns.append(Pattern(line, exclusion, compile_pattern(line)))
    return patterns


def excluded(patterns: list[Pattern], path: str) -> bool:
    """Whether Docker leaves `path` (relative, with `/`) out of the context: the last
    pattern that matches it, or one of its directories, decides."""
    result = False
    for p in patterns:
        if p.matches(path):
            result = not p.exclusion
    return result


# Folders never worth walking outside git: build output, tools and git's own, which
# .dockerignore leaves out anyway (they are large: target/ holds gigabytes).
NOT_WALKED = {"target", ".git", ".tools"}


def checkout_files(root: Path) -> list[str]:
    """The files of the checkout: git's view (tracked, and untracked but not ignored)
    when root is a repository's top; elsewhere (a copy, as scripts/template-check.sh
    makes, or an unpacked archive) every file below root but in NOT_WALKED folders."""
    top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if top.returncode == 0 and Path(top.stdout.strip()).resolve() == root.resolve():
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], check=True, capture_output=True).stdout
        # Tracked files deleted in the work tree are not sent.
        return sorted(p for p in out.decode().split("\0") if p and (root / p).is_file())
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in NOT_WALKED]
        files += [(Path(folder) / name).relative_to(root).as_posix() for name in names]
    return sorted(files)


def context_files(root: Path, dockerignore: str | None = None) -> list[str]:
    """The files Docker sends: those of the checkout that `dockerignore` (by default the
    text of root/.dockerignore) lets through."""
    if dockerignore is None:
        ignore = root / ".dockerignore"
        dockerignore = ignore.read_text() if ignore.exists() else ""
    patterns = parse(dockerignore)
    return [p for p in checkout_files(root) if not excluded(patterns, p)]


def dockerfile_lines(dockerfile: str) -> list[tuple[str, str]]:
    """(instruction, the rest) of every instruction of a Dockerfile: continuation lines
    joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(ln for ln in dockerfile.splitlines() if not ln.lstrip().startswith("#")))
    lines = []
    for line in text.splitlines():
        words = line.strip().split(None, 1)
        if len(words) == 2:
            lines.append((words[0].upper(), words[1].strip()))
    return lines


def copy_args(rest: str) -> list[str]:
    """The arguments of a COPY or ADD: its JSON (exec) form or its shell-like words."""
    return json.loads(rest) if rest.startswith("[") else shlex.split(rest)


def copy_sources(dockerfile: str) -> list[str]:
    """The local sources of every COPY and ADD (not `--from=`, not URLs), in order."""
    sources = []
    for instruction, rest in dockerfile_lines(dockerfile):
        if instruction not in ("COPY", "ADD"):
            continue
        args = copy_args(rest)
        flags = [a for a in args if a.startswith("--")]
        if any(f.startswith("--from=") for f in flags):
            continue
        args = [a for a in args if not a.startswith("--")]
        sources += [a for a in args[:-1] if not re.match(r"^[a-z]+://", a)]
    return sources


def source_exists(context: list[str], source: str) -> bool:
    """A COPY source (a path or a glob, relative to the context) names something in it."""
    source = clean(source).lstrip("/")
    if source == ".":
        return bool(context)
    regex = compile_pattern(source)
    return any(regex.match(p) or p.startswith(source + "/") for p in context) or any(
        regex.match("/".join(p.split("/")[:i])) for p in context for i in range(1, p.count("/") + 1))


def replay_cargo_steps(context: Path, dockerfile: str) -> list[list[str]]:
    """Runs the Dockerfile's shell-form `RUN` steps in `context` (a copy of the build
    context, standing for the image's working directory) with /bin/sh -c, in order,
    with a `cargo` that records its arguments and does nothing else; every
    `COPY <file> /usr/local/bin/<name>` is the command <name>. Returns cargo's calls."""
    bindir = context / ".replay-bin"
    bindir.mkdir()
    log = context / ".replay-cargo"
    (bindir / "cargo").write_text('#!/bin/sh\nprintf \'%s \' "$@" >>"$REPLAY_CARGO_LOG"\necho >>"$REPLAY_CARGO_LOG"\n')
    (bindir / "cargo").chmod(0o755)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(context), "REPLAY_CARGO_LOG": str(log)}
    lines = dockerfile_lines(dockerfile)
    # Up to the end of the stage that builds: the later ones pick and package a binary.
    builds = [i for i, (instruction, rest) in enumerate(lines) if instruction == "RUN" and "cargo build" in rest]
    if builds:
        later = [i for i, (instruction, _) in enumerate(lines) if instruction == "FROM" and i > builds[-1]]
        lines = lines[:later[0]] if later else lines
    for instruction, rest in lines:
        if instruction == "COPY":
            args = copy_args(rest)
            if len(args) == 2 and args[1].startswith("/usr/local/bin/") and (context / args[0]).is_file():
                (bindir / args[1].rsplit("/", 1)[1]).symlink_to(context / args[0])
        elif instruction == "RUN" and not rest.startswith(("[", "--")):
            run = subprocess.run(["/bin/sh", "-c", rest], cwd=context, env=env, capture_output=True, text=True)
            if run.returncode != 0:
                raise RuntimeError(f"RUN {rest}\n    exits with {run.returncode}: {run.stderr.strip()}")
    calls = log.read_text().splitlines() if log.exists() else []
    return [call.split() for call in calls]


def cargo_step_failures(context: Path, dockerfile: str, wanted: set[str]) -> list[str]:
    """What is wrong with the cargo steps of the Dockerfile (replay_cargo_steps): the
    cook and the build must build the binaries of exactly `wanted`, the same packages
    in both, in release, --locked, with a number of jobs."""
    try:
        calls = replay_cargo_steps(context, dockerfile)
    except RuntimeError as e:
        return [f"Dockerfile: {e}"]
    failures = []
    for name, prefix in (("cargo chef cook", ["chef", "cook"]), ("cargo build", ["build"])):
        found = [c for c in calls if c[:len(prefix)] == prefix]
        if len(found) != 1:
            failures.append(f"Dockerfile: {len(found)} `{name}` steps, not one")
            continue
        args = found[0]
        packages = {args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--package", "-p")}
        if "--workspace" in args:
            packages = {"the whole workspace"}
        if packages != wanted:
            failures.append(f"Dockerfile: `{name}` builds the packages {sorted(packages)}, "
                            f"not the services and stack {sorted(wanted)}")
        jobs = args[args.index("--jobs") + 1] if "--jobs" in args[:-1] else ""
        if not jobs.isdigit() or int(jobs) < 1:
            failures.append(f"Dockerfile: `{name}` has no --jobs number (cargo-jobs): {' '.join(args)}")
        for flag in ("--release", "--locked", "--bins"):
            if flag not in args:
                failures.append(f"Dockerfile: `{name}` lacks {flag}: {' '.join(args)}")
    return failures


def targets(metadata: dict) -> set[tuple[str, str, str, str]]:
    """(package, kind, name, source relative to the workspace) of every target of the
    workspace's members that `cargo build --workspace --bins` compiles: binaries,
    libraries, build scripts."""
    members = set(metadata["workspace_members"])
    root = Path(metadata["workspace_root"])
    return {(p["name"], kind, t["name"], str(Path(t["src_path"]).relative_to(root)))
            for p in metadata["packages"] if p["id"] in members
            for t in p["targets"] for kind in t["kind"] if kind in ("bin", "lib", "custom-build", "proc-macro")}


def check(root: Path, dockerignore: str | None = None, dockerfile: str | None = None) -> list[str]:
    """What is wrong with the build context of `root`: one message per problem. The
    texts of .dockerignore and the Dockerfile are root's unless given."""
    failures = []
    files = context_files(root, dockerignore)
    if dockerfile is None:
        dockerfile = (root / "Dockerfile").read_text()
    for source in copy_sources(dockerfile):
        if not source_exists(files, source):
            failures.append(f"Dockerfile: COPY/ADD source {source!r} is not in the build context (.dockerignore)")
    with tempfile.TemporaryDirectory(prefix="docker-context-") as tmp:
        copy = Path(tmp)
        for p in files:
            (copy / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / p, copy / p)
        # The registry index and sources cached by earlier builds: offline, this checks
        # the context and the lock file, not the network. For this machine's platform,
        # whose dependencies those builds fetched (the image's is Linux as well).
        host = re.search(r"^host: (\S+)$", subprocess.run(["rustc", "-vV"], check=True, capture_output=True,
                                                            text=True).stdout, re.M).group(1)
        run = subprocess.run(["cargo", "metadata", "--locked", "--offline", "--format-version", "1",
                              "--filter-platform", host], cwd=copy, capture_output=True, text=True)
        if run.returncode != 0:
            error = "\n    ".join(run.stderr.strip().replace(tmp, "<context>").splitlines())
            return failures + [f"cargo metadata --locked --offline fails in the build context:\n    {error}"]
        # A target declared with its path (`[[bin]] path = "src/main.rs"`) stays in the
        # metadata when its file is left out: only those whose file is there are built.
        built = {t for t in targets(json.loads(run.stdout)) if (copy / t[3]).is_file()}
        wanted = {d.name for d in (root / "services").iterdir() if (d / "Cargo.toml").is_file()} | {"stack"}
        failures += cargo_step_failures(copy, dockerfile, wanted)
    # Against the checkout's own workspace: a file left out can make cargo drop a target
    # it discovers by its path (src/main.rs, build.rs) without an error.
    run = subprocess.run(["cargo", "metadata", "--locked", "--offline", "--no-deps", "--format-version", "1"],
                         cwd=root, capture_output=True, text=True, check=True)
    for package, kind, name, source in sorted(targets(json.loads(run.stdout)) - built):
        failures.append(f"{package}: its {kind} target {name} ({source}) is not in the build context")
    bins = {name for _, kind, name, _ in built if kind == "bin"}
    for name in sorted(wanted - bins):
        failures.append(f"no binary {name} in the build context's workspace: docker build --build-arg SERVICE={name} fails")
    return failures


def main(args: list[str]) -> int:
    root = Path(args[0]).resolve() if args else ROOT
    failures = check(root)
    if failures:
        print(f"k8s-check: the image's build context ({len(failures)} problem(s)):", file=sys.stderr)
        for message in failures:
            print(f"  - {message}", file=sys.stderr)
        return 1
    files = context_files(root)
    print(f"k8s-check: build context: {len(files)} files "
          f"({sum((root / p).stat().st_size for p in files) / 1e6:.1f} MB); cargo metadata --locked --offline "
          f"loads the workspace; every service's binary and every COPY source is there; its cargo steps "
          f"build the services and stack")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
