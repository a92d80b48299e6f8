#!/usr/bin/env python3
"""Circles of imports between the files of one crate.

A file imports another when it names one of that file's modules: through `use`
(`use crate::store::Store;`, `use super::{domain, error::Error};`) or a path in code
(`crate::error::code_name(..)`, `super::retry::Budget`, `store::MemoryStore` from the
crate root). A path is resolved to the longest prefix that is a module of the crate,
then to the file that module sits in; inline modules (`mod tests { .. }`) belong to
their file. Declaring a child (`mod tests;`) is not an import, so a parent and the
`tests.rs` beside it that says `use super::*` make no circle. A re-export (`pub use`)
is no import either: a path through it leads to the file that defines the item, so
`crate::Error` imports `error.rs`, not `lib.rs`.

The crate root (`lib.rs`) is left out: it declares and wires every module, and the
constants it holds for all of them (`NAME`) are read everywhere. Circles are looked
for between the other files, test code included (a test module is part of its file).

It reads text, not the compiler's view: a glob re-export (`pub use x::*`) is not
followed, and macros are not expanded (`$crate::` paths in their bodies count as
written). Comments and string literals are skipped.

Usage: scripts/module-cycles.py [CRATE_OR_DIR ...]   (default: services/* and shared)
Prints each circle with the lines that close it; exits 1 when there is one.
"""

import re
import sys
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
RAW = re.compile(r'b?r(#*)"')
CHAR = re.compile(r"'(\\.[^']*|[^\\'])'")


def strip(text):
    """The source without comments, string and char literals (same line numbers)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    out.append("\n" if text[i] == "\n" else "")
                    i += 1
        elif m := RAW.match(text, i):
            end = text.find('"' + m.group(1), m.end())
            end = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""' + "\n" * text.count("\n", i, end))
            i = end
        elif c == '"' or text.startswith('b"', i):
            j = i + (2 if c == "b" else 1)
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and (m := CHAR.match(text, i)):
            out.append("' '")
            i = m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e] (as lists of segments)."""
    tree = re.sub(r"\s+as\s+", "@", tree.strip())
    tree = re.sub(r"\s+", "", tree)
    brace = tree.find("{")
    if brace < 0:
        path, _, alias = tree.partition("@")
        segments = [s for s in path.split("::") if s]
        if segments and segments[-1] == "self":
            segments = segments[:-1]
        name = alias or (segments[-1] if segments else "")
        return [(segments, "" if name == "*" else name)]
    prefix = [s for s in tree[:brace].split("::") if s]
    inner, depth, parts, start = tree[brace + 1 : tree.rfind("}")], 0, [], 0
    for k, ch in enumerate(inner):
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            parts.append(inner[start:k])
            start = k + 1
    parts.append(inner[start:])
    return [(prefix + sub, name) for part in parts if part for sub, name in expand(part)]


class Crate:
    def __init__(self, src):
        self.src = src
        self.modules = {}  # module path (tuple) -> file
        self.files = {}  # file -> module path of the file
        self.root = src / "lib.rs" if (src / "lib.rs").exists() else src / "main.rs"
        if self.root.exists():
            self.walk(self.root, ())
        # What `use` brings into each module, so that a path through a re-export
        # (`crate::Error`, `super::Thing`) leads to the file that defines it.
        self.aliases = {}
        for file, path in self.files.items():
            text = strip(file.read_text())
            for m in re.finditer(r"\buse\s+([^;]+);", text):
                module = self.module_at(text, path, m.start())
                for segments, name in expand(m.group(1)):
                    if name:
                        self.aliases[(module, name)] = (module, segments)

    def walk(self, file, path):
        self.files[file] = path
        self.modules[path] = file
        text = strip(file.read_text())
        # Children in files: `mod x;`, at any inline depth.
        for inline, name in self.declared(text, path):
            if inline is None:
                continue
            base = self.child_dir(file, inline, path)
            for candidate in (base / f"{name}.rs", base / name / "mod.rs"):
                if candidate.exists():
                    self.walk(candidate, inline + (name,))
                    break

    def child_dir(self, file, module, file_module):
        """Where the files of `module`'s children sit (`module` inside `file`)."""
        if file.name in ("lib.rs", "main.rs", "mod.rs"):
            base = file.parent
        else:
            base = file.parent / file.stem
        for seg in module[len(file_module) :]:
            base = base / seg
        return base

    def declared(self, text, path):
        """(module containing the declaration, child name) for each `mod x;`; inline
        modules are registered as they are met."""
        found, stack, depth = [], [(path, -1)], 0
        for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*([;{])|[{}]", text):
            tok = m.group(0)
            if tok == "{":
                depth += 1
            elif tok == "}":
                depth -= 1
                if stack[-1][1] == depth:
                    stack.pop()
            elif m.group(2) == ";":
                found.append((stack[-1][0], m.group(1)))
            else:
                inner = stack[-1][0] + (m.group(1),)
                self.modules.setdefault(inner, None)
                stack.append((inner, depth))
                depth += 1
        return found

    def module_at(self, text, path, offset):
        stack, depth = [(path, -1)], 0
        for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*\{|[{}]", text[:offset]):
            tok = m.group(0)
            if tok == "{":
                depth += 1
            elif tok == "}":
                depth -= 1
                if stack[-1][1] == depth:
                    stack.pop()
            else:
                stack.append((stack[-1][0] + (m.group(1),), depth))
                depth += 1
        return stack[-1][0]

    def resolve(self, current, segments, hops=0):
        """The file a path written in module `current` leads to, or None."""
        if not segments or hops > 16:
            return None
        head, rest = segments[0], segments[1:]
        if head in ("crate", "$crate"):
            base = ()
        elif head == "self":
            base = current
        elif head == "super":
            base = current[:-1]
            while rest and rest[0] == "super":
                base, rest = base[:-1], rest[1:]
        elif current + (head,) in self.modules:
            base, rest = current + (head,), rest
        else:
            return None
        module = base
        for k, seg in enumerate(rest):
            if module + (seg,) in self.modules:
                module = module + (seg,)
            elif (module, seg) in self.aliases and (module, seg) != (current, segments[-1]):
                at, target = self.aliases[(module, seg)]
                found = self.resolve(at, target + rest[k + 1 :], hops + 1)
                if found is not None:
                    return found
                break
            else:
                break
        while self.modules.get(module) is None and module:
            module = module[:-1]
        return self.modules.get(module)

    def edges(self):
        """file -> {imported file: [line numbers]}"""
        graph = {}
        for file, path in self.files.items():
            text = strip(file.read_text())
            targets = graph.setdefault(file, {})
            if file == self.root:
                continue
            for line, module, segments in self.paths(text, path):
                target = self.resolve(module, segments)
                if target not in (None, file, self.root):
                    targets.setdefault(target, []).append(line)
        return graph

    def paths(self, text, path):
        """(line, module it is written in, segments) for every path worth resolving."""
        stack, depth = [(path, -1)], 0
        scope = []  # module in effect at each offset: (offset, module)
        for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*\{|[{}]", text):
            tok = m.group(0)
            if tok == "{":
                depth += 1
            elif tok == "}":
                depth -= 1
                if stack[-1][1] == depth:
                    stack.pop()
                    scope.append((m.end(), stack[-1][0]))
            else:
                stack.append((stack[-1][0] + (m.group(1),), depth))
                depth += 1
                scope.append((m.end(), stack[-1][0]))

        def module_at(offset):
            current = path
            for at, module in scope:
                if at > offset:
                    break
                current = module
            return current

        def line_of(offset):
            return text.count("\n", 0, offset) + 1

        for m in re.finditer(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", text):
            if m.group(1):
                continue  # a re-export: followed by those who go through it
            module = module_at(m.start())
            for segments, _ in expand(m.group(2)):
                yield line_of(m.start()), module, [s for s in segments if s != "*"]
        # Paths in code (and in `pub use` already handled above).
        use_spans = [(m.start(), m.end()) for m in re.finditer(r"\buse\s+[^;]+;", text)]
        for m in re.finditer(
            r"(?<![\w:])((?:\$?crate|super|self|" + IDENT + r")(?:\s*::\s*" + IDENT + r")+)",
            text,
        ):
            if any(a <= m.start() < b for a, b in use_spans):
                continue
            segments = re.sub(r"\s+", "", m.group(1)).split("::")
            yield line_of(m.start()), module_at(m.start()), segments


def cycles(graph):
    """Strongly connected components of more than one file (Tarjan)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def main(args):
    root = Path(__file__).resolve().parent.parent
    targets = [Path(a) for a in args] or sorted(root.glob("services/*")) + [root / "shared"]
    found = 0
    for target in targets:
        for cargo in sorted(Path(target).glob("**/Cargo.toml")):
            src = cargo.parent / "src"
            if "target" in cargo.parts or not src.is_dir():
                continue
            crate = Crate(src)
            graph = crate.edges()
            for component in cycles(graph):
                found += 1
                names = [str(f.relative_to(src)) for f in component]
                print(f"{cargo.parent.relative_to(root) if cargo.parent.is_relative_to(root) else cargo.parent}: {' ↔ '.join(names)}")
                for a in component:
                    for b in component:
                        if b in graph.get(a, {}):
                            lines = ",".join(map(str, graph[a][b][:5]))
                            print(f"    {a.relative_to(src)}:{lines} → {b.relative_to(src)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
