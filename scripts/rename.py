#!/usr/bin/env python3
"""Renames the project (`make rename NAME=acme-shop`).

The template's name appears in two forms, both replaced by NAME:
  - the project name, `grpc-rust-template` today: the README title, the Kubernetes label
    `app.kubernetes.io/part-of` (k8s/base/kustomization.yaml), the image labels of the
    Dockerfile and the CI workflow's name;
  - the short name, `grpc-template` today: the kind cluster (k8s/kind-config.yaml,
    scripts/kind-*.sh, so the context becomes kind-NAME) and the Kubernetes namespace.
There is no crate prefix, proto package prefix or image registry prefix to rename:
crates, protos and images are named by service (`orders`, `orders.v1`, `orders:dev`).

The current names are read from the tree (the part-of label and the kind cluster's
name), so a second run, with the same or another NAME, works from what the first left.
Python 3 standard library only. Usage: scripts/rename.py NAME
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME_RE = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")
SKIP_DIRS = {".git", "target", ".tools", "node_modules", "__pycache__"}
SKIP_FILES = {"Cargo.lock", "rename.py"}
TEXT_SUFFIXES = {".md", ".yaml", ".yml", ".json", ".sh", ".py", ".toml", ".rs", ".proto", ".txt", ""}


def current_names() -> tuple[str, str]:
    kustomization = (ROOT / "k8s/base/kustomization.yaml").read_text()
    kind = (ROOT / "k8s/kind-config.yaml").read_text()
    project = re.search(r"^\s*app\.kubernetes\.io/part-of:\s*(\S+)\s*$", kustomization, re.M)
    cluster = re.search(r"^name:\s*(\S+)\s*$", kind, re.M)
    if not project or not cluster:
        raise SystemExit("rename: cannot find the current names (app.kubernetes.io/part-of in "
                         "k8s/base/kustomization.yaml, name: in k8s/kind-config.yaml); nothing changed")
    return project.group(1), cluster.group(1)


def files() -> list[Path]:
    out = []
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS for part in rel.parts) or not path.is_file() or path.name in SKIP_FILES:
            continue
        if path.suffix in TEXT_SUFFIXES or path.name in ("Makefile", "Dockerfile", ".dockerignore"):
            out.append(path)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: make rename NAME=<name>   (e.g. make rename NAME=acme-shop)", file=sys.stderr)
        return 2
    name = argv[0].strip()
    if not NAME_RE.match(name):
        print(f"rename: refused, nothing changed: invalid name {name!r}: use lowercase letters, digits "
              "and '-', starting with a letter, at most 40 (it becomes a Kubernetes namespace and "
              "label value, and the kind cluster's name)", file=sys.stderr)
        return 1
    project, short = current_names()
    if project == name and short == name:
        print(f"rename: the project is already named {name}: nothing to do")
        return 0
    # Longest first, and never inside a longer word (`grpc-template` in `grpc-templates`);
    # a prefix stays (`kind-grpc-template`, the kubectl context, becomes `kind-NAME`).
    patterns = [re.compile(rf"(?<!\w){re.escape(old)}(?![\w-])")
                for old in sorted({project, short}, key=len, reverse=True)]
    changed = {}
    for path in files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        new = text
        for pattern in patterns:
            new = pattern.sub(name, new)
        if new != text:
            changed[path] = new
    for path, text in changed.items():
        path.write_text(text)
        print(f"rename: updated {path.relative_to(ROOT)}")
    print(f"rename: {project} / {short} → {name} in {len(changed)} files (kind cluster and context "
          f"kind-{name}, namespace {name}). A cluster made under the old name stays: "
          f"KIND_CLUSTER={short} make kind-down deletes it.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
