"""Which environment variables a service binary reads, derived from its Rust source.

The rule (the manifests may set a variable only if it is in this set):

1. A variable is read where an `Env` method of shared/src/config.rs (`get`, `parse`,
   `parse_with`, `socket_addr`, `duration`, `positive_duration`, `flag`, `int_in`, `upstream`, `file`) is called
   with its name as first argument: an UPPER_SNAKE_CASE string literal, or a `const`
   of the same crate whose value is one (`const VAR: &str = "X"; env.get(VAR)`).
2. A service reads the variables of `services/<name>/src/**/*.rs` (rule 1), plus those
   of every `shared` function it calls by path — `ServerConfig::from_env(`,
   `ClientConfig::from_env(`, `telemetry::init(` — and, transitively, of the `shared`
   functions those call. A function inside `impl Type` is called `Type::fn`; a free
   function of shared/src/module.rs is `module::fn`.
3. Test code does not count: items under `#[cfg(test)]` are removed first, and the
   files of `#[cfg(test)] mod name;`.
4. Required (a manifest must set them): the variables read with `upstream`, whose
   defaults are loopback addresses, wrong in a pod.

What the rule cannot see, and so reports as not read (a loud failure, never a silent
pass): names built at run time, and shared functions reached through a method call
on a value (`config.load(env)`). Name the variable literally, or extend this file.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

ENV_METHODS = ("get", "parse", "parse_with", "socket_addr", "duration", "positive_duration", "flag", "int_in", "upstream", "file")
_NAME = r"[A-Z][A-Z0-9_]*"
_LITERAL_CALL = re.compile(r"\.(%s)\(\s*\"(%s)\"" % ("|".join(ENV_METHODS), _NAME))
_CONST_CALL = re.compile(r"\.(%s)\(\s*(%s)\s*[,)]" % ("|".join(ENV_METHODS), _NAME))
_CONST_DEF = re.compile(r"\bconst\s+(%s)\s*:\s*&(?:'static\s+)?str\s*=\s*\"(%s)\"\s*;" % (_NAME, _NAME))
_FN = re.compile(r"\bfn\s+([a-z_][a-z0-9_]*)")
_IMPL = re.compile(r"\bimpl\b")
_CFG_TEST = re.compile(r"#\[cfg\(test\)\]")


_TOKEN = re.compile(r"""//[^\n]*|/\*|(?<![\w])b?r(#*)"|b?"|'(?:\\u\{[0-9a-fA-F]+\}|\\.|[^\\'\n])'""")
_STRING_BODY = re.compile(r'(?:\\.|[^"\\])*"', re.S)


def mask(src: str) -> str:
    """The source with comments, strings and char literals blanked out (same length and
    offsets), so that braces can be matched and items found without being fooled."""
    out, pos = [], 0
    while True:
        m = _TOKEN.search(src, pos)
        if not m:
            out.append(src[pos:])
            return "".join(out)
        out.append(src[pos:m.start()])
        token = m.group(0)
        if token.startswith("/*"):
            depth, j = 1, m.end()
            while j < len(src) and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            end = j
        elif token.endswith('"') and m.group(1) is not None:  # raw string
            close = src.find('"' + m.group(1), m.end())
            end = len(src) if close < 0 else close + 1 + len(m.group(1))
        elif token.endswith('"'):
            body = _STRING_BODY.match(src, m.end())
            end = body.end() if body else len(src)
        else:  # a line comment or a char literal
            end = m.end()
        out.append(re.sub(r"[^\n]", " ", src[m.start():end]))
        pos = end


def matching_brace(src: str, open_index: int, masked: str | None = None) -> int:
    """The index of the `}` closing the `{` at open_index (strings and comments skipped)."""
    masked = mask(src) if masked is None else masked
    depth = 0
    for m in re.compile(r"[{}]").finditer(masked, open_index):
        depth += 1 if m.group(0) == "{" else -1
        if depth == 0:
            return m.start()
    raise ValueError(f"unbalanced braces from offset {open_index}")


@dataclass
class Source:
    """Rust source, and the same with comments and literals blanked (`mask`): items are
    found in `masked`, string literals read from `text`, at the same offsets."""

    text: str
    masked: str

    @staticmethod
    def of(text: str) -> "Source":
        return Source(text, mask(text))

    def cut(self, start: int, end: int) -> "Source":
        return Source(self.text[:start] + self.text[end:], self.masked[:start] + self.masked[end:])

    def in_code(self, index: int) -> bool:
        return self.masked[index] == self.text[index]


def strip_test_code(src: Source) -> tuple[Source, set[str]]:
    """The source without `#[cfg(test)]` items, and the names of `#[cfg(test)] mod x;`."""
    test_modules: set[str] = set()
    while True:
        m = _CFG_TEST.search(src.masked)
        if not m:
            return src, test_modules
        decl = re.compile(r"\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;").match(src.masked, m.end())
        if decl:
            test_modules.add(decl.group(1))
            src = src.cut(m.start(), decl.end())
            continue
        brace, semi = src.masked.find("{", m.end()), src.masked.find(";", m.end())
        if brace < 0 or (0 <= semi < brace):
            end = semi + 1  # a `use` or another item without a body
        else:
            end = matching_brace(src.text, brace, src.masked) + 1
        src = src.cut(m.start(), end)


def _reads(src: Source, consts: dict[str, str], methods=ENV_METHODS) -> set[str]:
    names = {m.group(2) for m in _LITERAL_CALL.finditer(src.text)
             if src.in_code(m.start()) and m.group(1) in methods}
    names |= {consts[m.group(2)] for m in _CONST_CALL.finditer(src.masked)
              if m.group(2) in consts and m.group(1) in methods}
    return names


@dataclass
class SharedFunction:
    reads: set[str] = field(default_factory=set)
    required: set[str] = field(default_factory=set)
    # the function's code, comments and literals blanked: where its calls are found
    code: str = ""


def _rust_files(src_dir: Path) -> dict[Path, Source]:
    """Every non-test .rs file under src_dir, test items stripped."""
    stripped: dict[Path, Source] = {}
    test_modules: set[Path] = set()
    for path in sorted(src_dir.rglob("*.rs")):
        source, tests = strip_test_code(Source.of(path.read_text()))
        stripped[path] = source
        for name in tests:
            test_modules |= {path.parent / f"{name}.rs", path.parent / name / "mod.rs"}
    return {p: t for p, t in stripped.items() if p not in test_modules}


def _consts(files: dict[Path, Source]) -> dict[str, str]:
    return {k: v for src in files.values() for k, v in _CONST_DEF.findall(src.text)}


@functools.lru_cache(maxsize=None)
def shared_functions(shared_src: Path) -> dict[str, SharedFunction]:
    """Each function of the shared crate, as `Type::fn` or `module::fn`, with the
    variables it reads directly."""
    files = _rust_files(shared_src)
    consts = _consts(files)
    functions: dict[str, SharedFunction] = {}
    for path, src in files.items():
        impls = list(_impl_blocks(src))
        for m in _FN.finditer(src.masked):
            brace, semi = src.masked.find("{", m.end()), src.masked.find(";", m.end())
            if brace < 0 or (0 <= semi < brace):
                continue  # a declaration without a body (trait method)
            end = matching_brace(src.text, brace, src.masked) + 1
            body = Source(src.text[brace:end], src.masked[brace:end])
            owners = [(start, name) for start, end_, name in impls if start < m.start() < end_]
            owner = max(owners)[1] if owners else None
            module = path.stem if path.stem not in ("lib", "mod") else path.parent.name
            key = f"{owner}::{m.group(1)}" if owner else f"{module}::{m.group(1)}"
            function = functions.setdefault(key, SharedFunction())
            function.reads |= _reads(body, consts)
            function.required |= _reads(body, consts, methods=("upstream",))
            function.code += body.masked
    return functions


def _impl_blocks(src: Source):
    """(start, end, type) of each `impl … {` block: `impl Type`, `impl<T> Trait for Type<T>`."""
    for m in _IMPL.finditer(src.masked):
        brace = src.masked.find("{", m.end())
        if brace < 0:
            continue
        header = src.masked[m.end():brace]
        header = re.split(r"\bwhere\b", header)[0].strip()
        if header.startswith("<"):  # the impl's own generic parameters
            depth = 0
            for i, c in enumerate(header):
                depth += {"<": 1, ">": -1}.get(c, 0)
                if depth == 0:
                    header = header[i + 1:].strip()
                    break
        target = re.split(r"\s+for\s+", header)[-1]
        target = re.sub(r"<.*", "", target, flags=re.S).replace("&", "").strip()
        name = target.split("::")[-1].strip()
        if re.fullmatch(r"[A-Za-z_]\w*", name):
            yield brace, matching_brace(src.text, brace, src.masked), name


def _called(code: str, functions: dict[str, SharedFunction]) -> set[str]:
    return {key for key in functions if re.search(r"(?<!\w)%s\s*\(" % re.escape(key), code)}


@dataclass
class ServiceEnv:
    reads: set[str]
    required: set[str]
    shared_calls: set[str]


@functools.lru_cache(maxsize=None)
def service_env(service_src: Path, shared_src: Path) -> ServiceEnv:
    """The variables the binary of `services/<name>/src` reads, and those it needs set."""
    functions = shared_functions(shared_src)
    files = _rust_files(service_src)
    consts = _consts(files)
    reads, required, calls, todo = set(), set(), set(), set()
    for src in files.values():
        reads |= _reads(src, consts)
        required |= _reads(src, consts, methods=("upstream",))
        todo |= _called(src.masked, functions)
    while todo:
        key = todo.pop()
        calls.add(key)
        reads |= functions[key].reads
        required |= functions[key].required
        todo |= _called(functions[key].code, functions) - calls
    return ServiceEnv(reads=reads, required=required, shared_calls=calls)


def listen_defaults(service_src: Path) -> dict[str, int]:
    """`LISTEN_ADDR` → `const PORT`, `X_LISTEN_ADDR` → `const X_PORT` of config.rs: the
    ports a binary listens on when the variables are unset."""
    config = service_src / "config.rs"
    if not config.exists():
        return {}
    out = {}
    for prefix, port in re.findall(r"\bconst\s+([A-Z0-9_]*?)_?PORT\s*:\s*u16\s*=\s*(\d+)\s*;", config.read_text()):
        out[f"{prefix}_LISTEN_ADDR" if prefix else "LISTEN_ADDR"] = int(port)
    return out


def duration_default(shared_src: Path, name: str) -> float | None:
    """The default, in seconds, of the duration variable `name` in shared/src/config.rs."""
    text = strip_test_code(Source.of((shared_src / "config.rs").read_text()))[0].text
    m = re.search(r"\"%s\"\s*,\s*Duration::(ZERO|from_secs\((\d+)\)|from_millis\((\d+)\))" % re.escape(name), text)
    if not m:
        return None
    if m.group(1) == "ZERO":
        return 0.0
    return float(m.group(2)) if m.group(2) else int(m.group(3)) / 1000


def parse_duration(value: str) -> float | None:
    """A duration as shared/src/config.rs parses it: `10s`, `500ms`, `2m`, `1h`, `7`."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", value.strip())
    if not m:
        return None
    n = int(m.group(1))
    return {"ms": n / 1000, "s": n, None: n, "m": n * 60, "h": n * 3600}[m.group(2)]
