#!/usr/bin/env python3
"""Removes a service (`make remove-service NAME=notifications`), the reverse of
scripts/new-service.py:

  - proto/NAME/, services/NAME/, k8s/base/NAME.yaml, and the files of other crates
    that exist only for NAME, named after it: services/*/src/NAME.rs (e.g. the gateway's
    routes onto NAME), services/*/tests/it/NAME.rs, stack/src/NAME.rs, tests/system/NAME.rs;
  - its entries: root Cargo.toml [workspace.dependencies], stack/Cargo.toml, the stack
    launcher's standard registration (stack/src/lib.rs), the list of acceptance specs
    (tests/system/acceptance/specs.rs), k8s/base/kustomization.yaml, the kind overlay's
    images, the README's services table;
  - in other manifests: the `NAME_ADDR` env entries and NetworkPolicy rules naming it,
    NAME in inline label lists (`values: [gateway, NAME]`) and in call-graph comments
    (`# gateway → orders:50051, NAME:50054`);
  - code of other crates marked for it: a line ending in `// remove-service: NAME`
    (`#` in TOML/YAML), with the `///` doc comment right above it, and blocks from a
    line containing `remove-service: NAME {` to one containing `remove-service: NAME }`
    (`<!-- … -->` in Markdown): the `mod` and route lines of those files, the stack's
    event wiring, its acceptance spec and grpcurl cookbook examples, …;
  - README.md and docs/*.md: commands calling NAME (NAME.v1 in the grpcurl cookbook,
    docs/grpcurl.md, the path /NAME anywhere; a block left empty goes with its marker),
    its row of the README's services table, table rows naming a file of services/NAME/
    (the pattern index), the row of `NAME_ADDR` in the configuration table
    (docs/configuration.md) and its mentions;
  - docs/openapi.json: the HTTP routes of NAME's services and NAME.v1's schemas.

It refuses, changing nothing, when another service still depends on NAME after all of
that: its source reads `NAME_ADDR` or uses `contracts::NAME`, or its Cargo.toml depends
on NAME. Every file is computed before the first write. Python 3 standard library only.
Usage: scripts/remove-service.py NAME
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".git", "target", ".tools", "__pycache__", "node_modules"}
SUFFIXES = {".rs", ".toml", ".yaml", ".yml", ".md"}
# Pages of docs/ that a program writes (`make bench`): left as they are.
GENERATED_DOCS = {"docs/benchmarks.md"}


class Refused(Exception):
    pass


# Files every crate may have (scripts/new-service.py reserves these names): never
# deleted as "the file named after the service".
STANDARD_FILES = {"main", "lib", "config", "grpc", "domain", "store", "error", "server", "testing", "mod",
                  "support", "http", "dto", "upstream", "events", "saga", "consumer"}


def strip_markers(rel: str, text: str, name: str) -> str:
    out, depth = [], 0
    # `-->` ends the markers in Markdown: `<!-- remove-service: NAME { -->`.
    begin = re.compile(rf"remove-service: {re.escape(name)} \{{(\s*-->)?\s*$")
    end = re.compile(rf"remove-service: {re.escape(name)} \}}(\s*-->)?\s*$")
    line_marker = re.compile(rf"(//|#) remove-service: {re.escape(name)}\s*$")
    for n, line in enumerate(text.splitlines(keepends=True), 1):
        if begin.search(line):
            depth += 1
        elif end.search(line):
            if depth == 0:
                raise Refused(f"{rel}:{n}: 'remove-service: {name} }}' without its '{{'")
            depth -= 1
        elif depth == 0 and line_marker.search(line):
            # The doc comment of a marked field or item goes with it.
            while out and out[-1].lstrip().startswith("///"):
                out.pop()
        elif depth == 0:
            out.append(line)
    if depth:
        raise Refused(f"{rel}: 'remove-service: {name} {{' never closed")
    return "".join(out)


def remove_yaml_items(text: str, name: str) -> str:
    """Drops env entries `- name: NAME_ADDR` (with their value) and NetworkPolicy
    `- to:`/`- from:` items that select app.kubernetes.io/name: NAME."""
    lines = text.splitlines(keepends=True)
    upper = name.upper()
    drop: set[int] = set()
    for i, line in enumerate(lines):
        stripped = line.strip()
        target = (stripped == f"- name: {upper}_ADDR"
                  or (stripped == f"app.kubernetes.io/name: {name}" and is_peer(lines, i)))
        if not target:
            continue
        # The list item holding this line: the nearest `- ` line above at a lower indent
        # (or this very line), up to the next line at its indent or less.
        start = i
        indent = len(line) - len(line.lstrip())
        if not stripped.startswith("- "):
            while start > 0:
                start -= 1
                s = lines[start]
                ind = len(s) - len(s.lstrip())
                if s.strip().startswith("- ") and ind < indent and s.strip()[2:].rstrip(":") in ("to", "from"):
                    break
            indent = len(lines[start]) - len(lines[start].lstrip())
        stop = start + 1
        while stop < len(lines) and (not lines[stop].strip() or
                                     len(lines[stop]) - len(lines[stop].lstrip()) > indent):
            stop += 1
        drop.update(range(start, stop))
    return "".join(line for i, line in enumerate(lines) if i not in drop)


def is_peer(lines: list[str], i: int) -> bool:
    """Whether line i is inside a NetworkPolicy peer (a `- to:`/`- from:` item)."""
    indent = len(lines[i]) - len(lines[i].lstrip())
    for j in range(i - 1, -1, -1):
        s = lines[j]
        ind = len(s) - len(s.lstrip())
        if s.strip() and ind < indent:
            if s.strip() in ("- to:", "- from:"):
                return True
            if ind == 0 or s.strip() in ("spec:", "template:", "selector:", "podSelector:"):
                return False
            indent = ind
    return False


def remove_cookbook_calls(text: str, name: str) -> str:
    """Drops shell commands (with their continuation lines) that call NAME from the
    sh blocks of a page of the docs: in the grpcurl cookbook, those naming NAME.v1 or a
    path /NAME; elsewhere (e.g. the README's curl calls, or "Add a service", whose
    example is NAME), only a path /NAME. A block left empty goes with its acceptance
    marker."""
    begin, end = "<!-- BEGIN grpcurl cookbook -->", "<!-- END grpcurl cookbook -->"
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        return rewrite_blocks(text, (f"/{name}",))
    return (rewrite_blocks(text[:i], (f"/{name}",))
            + rewrite_blocks(text[i:j], (f"{name}.v1.", f"/{name}"))
            + rewrite_blocks(text[j:], (f"/{name}",)))


def rewrite_blocks(text: str, calls: tuple[str, ...]) -> str:
    return re.sub(r"(<!-- acceptance:[^\n]*-->\n)?```sh\n(.*?)```\n",
                  lambda m: rewrite_block(m, calls), text, flags=re.S)


def rewrite_block(m: re.Match, calls: tuple[str, ...]) -> str:
    body = m.group(2)
    commands, current = [], []
    for line in body.splitlines(keepends=True):
        current.append(line)
        if not line.rstrip("\n").endswith("\\"):
            commands.append("".join(current))
            current = []
    if current:
        commands.append("".join(current))
    kept = [c for c in commands if not any(call in c for call in calls)]
    if len(kept) == len(commands):
        return m.group(0)
    if not "".join(kept).strip():
        return ""
    return (m.group(1) or "") + "```sh\n" + "".join(kept) + "```\n"


def remove_openapi_routes(text: str, name: str) -> str:
    """docs/openapi.json without the routes of NAME.v1's services and its schemas: the
    document the gateway makes once NAME's protos are gone (sorted keys, two-space
    indent, as serde_json writes it; the gateway's test compares them byte for byte)."""
    doc = json.loads(text)
    ours = f"{name}.v1."
    for path, operations in list(doc.get("paths", {}).items()):
        for verb, operation in list(operations.items()):
            if any(tag.startswith(ours) for tag in operation.get("tags", [])):
                del operations[verb]
        if not operations:
            del doc["paths"][path]
    doc["tags"] = [t for t in doc.get("tags", []) if not t["name"].startswith(ours)]
    schemas = doc.get("components", {}).get("schemas", {})
    for schema in [s for s in schemas if s.startswith(ours)]:
        del schemas[schema]
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def plan(name: str) -> tuple[dict[Path, str], list[Path]]:
    if not re.fullmatch(r"[a-z][a-z0-9]*", name) or not (ROOT / "services" / name / "Cargo.toml").exists():
        have = sorted(p.parent.name for p in ROOT.glob("services/*/Cargo.toml"))
        raise Refused(f"there is no service {name!r} (services: {', '.join(have)})")
    if name in STANDARD_FILES:
        raise Refused(f"{name!r} is also the name of a standard file of every crate ({name}.rs): "
                      "remove it by hand")
    upper = name.upper()
    changes: dict[Path, str] = {}
    delete = [p for p in (ROOT / "proto" / name, ROOT / "services" / name, ROOT / "k8s" / "base" / f"{name}.yaml")
              if p.exists()]
    for pattern in (f"services/*/src/{name}.rs", f"services/*/tests/it/{name}.rs", f"stack/src/{name}.rs",
                    f"tests/system/{name}.rs", f"fuzz/fuzz_targets/grpc_{name}.rs", f"fuzz/seeds/grpc_{name}"):
        delete.extend(p for p in sorted(ROOT.glob(pattern)) if p.parts[-3:-1] != ("services", name))
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if (any(part in SKIP_DIRS for part in rel.parts) or not path.is_file() or path.suffix not in SUFFIXES
                or any(path == d or d in path.parents for d in delete)):
            continue
        text = path.read_text()
        new = strip_markers(str(rel), text, name)
        r = str(rel)
        if r == "Cargo.toml":
            new = re.sub(rf'^{name} = \{{ path = "services/{name}" \}}\n', "", new, flags=re.M)
        if path.name == "Cargo.toml":
            new = re.sub(rf"^{name}\.workspace = true\n", "", new, flags=re.M)
        if r == "stack/src/lib.rs":
            new = re.sub(rf"        let config = {name}::Config::from_env\(&listen\(\n(?:.*\n){{0,3}}?        \)\)\?;\n"
                         rf"        let {name} = {name}::build\(config\)\.await\?;\n", "", new)
            new = re.sub(rf"^ *\({name}::NAME, Bound::Grpc\({name}\)\),\n", "", new, flags=re.M)
        if r == "tests/system/acceptance/specs.rs":
            new = re.sub(rf"^ *{name}\(\),\n", "", new, flags=re.M)
        if r == "k8s/base/kustomization.yaml":
            new = re.sub(rf"^  - {name}\.yaml\n", "", new, flags=re.M)
        if rel.parts[0] == "k8s" and path.suffix == ".yaml":
            new = re.sub(rf"^  - name: {name}\n    newTag: \S+\n", "", new, flags=re.M)
            new = re.sub(rf"^  - name: {name}\n    newName: \S+\n    digest: \S+\n", "", new, flags=re.M)
            new = remove_yaml_items(new, name)
            # Label values listed inline (`values: [gateway, NAME]`), and call-graph
            # comments (`#   gateway → orders:50051, NAME:50054`).
            new = re.sub(rf"(values: \[[^\]\n]*?)(, {name}\b|\b{name}, )", r"\1", new)
            new = re.sub(rf"^(#.*?)(, {name}:\d+\b|\b{name}:\d+, )", r"\1", new, flags=re.M)
        if r == "README.md" or (rel.parts[0] == "docs" and path.suffix == ".md" and r not in GENERATED_DOCS):
            new = re.sub(rf"^\| {name} \|.*\n", "", new, flags=re.M)
            # Rows of a table naming a file of NAME (the README's pattern index).
            new = re.sub(rf"^\|.*\bservices/{name}/.*\n", "", new, flags=re.M)
            new = re.sub(rf"^\| `{upper}_ADDR` \|.*\n", "", new, flags=re.M)
            new = re.sub(rf", `{upper}_ADDR`|`{upper}_ADDR`, ", "", new)
            new = remove_cookbook_calls(new, name)
        if new != text and not new.strip():
            # A file that was all about the service (every line marked) goes with it.
            delete.append(path)
        elif new != text:
            changes[path] = new
    openapi = ROOT / "docs" / "openapi.json"
    if openapi.exists():
        text = openapi.read_text()
        new = remove_openapi_routes(text, name)
        if new != text:
            changes[openapi] = new

    # What still depends on it, once all of the above is gone.
    users: dict[str, list[str]] = {}
    uses = re.compile(rf"\b{upper}_ADDR\b|\bcontracts::{name}\b|^\s*{name}(\.workspace|\s*=)|\b{name}::")
    for path in sorted(ROOT.glob("services/*/**/*")) + sorted(ROOT.glob("stack/**/*")) + sorted(ROOT.glob("tests/**/*")):
        rel = path.relative_to(ROOT)
        if not path.is_file() or path.suffix not in (".rs", ".toml") or any(
                path == d or d in path.parents for d in delete):
            continue
        text = changes.get(path, path.read_text())
        for n, line in enumerate(text.splitlines(), 1):
            if uses.search(line):
                who = rel.parts[1] if rel.parts[0] == "services" else str(rel)
                users.setdefault(who, []).append(f"{rel}:{n}: {line.strip()}")
    if users:
        detail = "\n".join(f"  {u}" for lines in users.values() for u in lines[:3])
        raise Refused(f"{name} is still used by {', '.join(sorted(users))} "
                      f"(remove those first, or mark their code with 'remove-service: {name}'):\n{detail}")
    return changes, delete


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].strip():
        print("usage: make remove-service NAME=<service>   (e.g. make remove-service NAME=notifications)", file=sys.stderr)
        return 2
    name = argv[0].strip()
    try:
        changes, delete = plan(name)
    except Refused as e:
        print(f"remove-service: refused, nothing changed: {e}", file=sys.stderr)
        return 1
    for path, text in changes.items():
        path.write_text(text)
        print(f"remove-service: updated {path.relative_to(ROOT)}")
    for path in delete:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        print(f"remove-service: deleted {path.relative_to(ROOT)}")
    rustfmt = shutil.which("rustfmt")
    rust = [str(p) for p in changes if p.suffix == ".rs"]
    if rustfmt and rust:
        subprocess.run([rustfmt, "--edition", "2024", *rust], check=False)
    print(f"remove-service: {name} removed. Check with: make test")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
