#!/usr/bin/env python3
"""Scaffolds a new gRPC service (`make new-service NAME=shipping`).

Writes, from scripts/templates/service/:
  proto/NAME/v1/NAME.proto        package NAME.v1, service <Name>Service, one example RPC
  services/NAME/                  the standard files and its tests (tests/it/)
  k8s/base/NAME.yaml              the same objects as every service, from the template
  fuzz/fuzz_targets/grpc_NAME.rs  its fuzz target, with a seed for GetItem (fuzz/seeds/)
and registers the service where the anchors `new-service:` say: the root Cargo.toml
([workspace.dependencies]), stack/Cargo.toml and stack/src/lib.rs (the stack launcher),
fuzz/Cargo.toml (its crate and its target), the gateway (its RPCs annotated with
google.api.http are routes: its local address in services/gateway/src/config.rs, its
NAME_ADDR in the stack's gateway and in k8s/base/gateway.yaml with the egress to it),
tests/system/acceptance/specs.rs (its acceptance spec, appended), plus
k8s/base/kustomization.yaml, the kind and production overlays' images, its Secret in
k8s/components/tls/identities.yaml, and the inline lists of every
service in k8s/ (`values: [gateway, orders, …]`), the README's services table (a row,
and NAME_ADDR among the gateway's upstreams), its NAME_ADDR row in
docs/configuration.md, and the grpcurl cookbook, docs/grpcurl.md (an example, run by
the acceptance tests). The spec and the
example are marked `remove-service: NAME`, so that `make remove-service` undoes it all. The service gets the next free local ports (gRPC 5005x, admin 910x).
Then the gateway's generator writes docs/openapi.json again, with the new route (cargo).

Everything is checked, and every file computed, before the first write: an invalid or
taken name, or a missing anchor, changes nothing. Python 3 standard library only.
Usage: scripts/new-service.py NAME
"""

from __future__ import annotations

import keyword
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "scripts" / "templates" / "service"
ANCHOR = "new-service:"

# Rust keywords (strict, reserved, and 2018+/2024 edition), any of which breaks `use NAME`.
RUST_KEYWORDS = set("""
as async await break const continue crate dyn else enum extern false fn for gen if impl in
let loop match mod move mut pub ref return self static struct super trait true type unsafe
use where while abstract become box do final macro override priv try typeof unsized virtual
yield union""".split())
# Names the template's own crates, folders, protos or tools already mean.
RESERVED = {
    "shared", "stack", "contracts", "tests", "test", "common", "proto", "services", "service",
    "k8s", "scripts", "src", "target", "build", "main", "lib", "bin", "examples", "benches",
    "google", "grpc", "std", "core", "alloc", "proc_macro", "tonic", "prost", "tokio",
    # The files of the services and tests: `make remove-service` deletes the files named
    # after a service (the gateway's routes onto it, its cross-service tests).
    "config", "domain", "store", "error", "server", "testing", "mod", "support", "http", "dto",
    "upstream", "events", "saga", "consumer", "acceptance", "processes", "stack", "metrics", "tracing",
    "system", "durable", "hostile", "resilience", "shutdown", "tls", "web", "it", "api", "auth",
    "binary", "postgres", "client", "jetstream",
}
NAME_RE = re.compile(r"^[a-z][a-z0-9]{1,29}$")


class Refused(Exception):
    """The request cannot be carried out; nothing was changed."""


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise Refused(
            f"invalid name {name!r}: use 2 to 30 lowercase letters and digits, starting with a "
            "letter (it is the folder, the Cargo package, the proto package NAME.v1 and the "
            "Kubernetes name, which allows no '_' and Rust no '-')")
    if name in RUST_KEYWORDS or keyword.iskeyword(name):
        raise Refused(f"invalid name {name!r}: it is a Rust keyword")
    if name in RESERVED:
        raise Refused(f"invalid name {name!r}: reserved by the template ({', '.join(sorted(RESERVED))})")


def check_free(name: str) -> None:
    taken = []
    for path in (f"services/{name}", f"proto/{name}", f"k8s/base/{name}.yaml"):
        if (ROOT / path).exists():
            taken.append(f"{path} exists")
    cargo = (ROOT / "Cargo.toml").read_text()
    if re.search(rf"^{re.escape(name)}\s*=", cargo, re.M):
        taken.append(f"{name!r} is already a key of [workspace.dependencies] in Cargo.toml")
    lock = ROOT / "Cargo.lock"
    # A dependency from a registry or git (a package with a `source`); a former
    # workspace member (no source) goes from the lock at the next build.
    if lock.exists() and re.search(rf'^name = "{re.escape(name)}"\nversion = "[^"\n]*"\nsource = ',
                                   lock.read_text(), re.M):
        taken.append(f"a crate named {name!r} is already in Cargo.lock (a dependency would clash)")
    if taken:
        raise Refused(f"name {name!r} is taken: " + "; ".join(taken))


def next_port(pattern: str, low: int, high: int) -> int:
    """One more than the highest port in low..high that a services/*/src/config.rs declares."""
    used = [low - 1]
    for config in sorted(ROOT.glob("services/*/src/config.rs")):
        for m in re.finditer(pattern, config.read_text(), re.M):
            port = int(m.group(1))
            if low <= port <= high:
                used.append(port)
    port = max(used) + 1
    if port > high:
        raise Refused(f"no free port left in {low}..{high}")
    return port


def render(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    leftover = re.search(r"\{\{\w+\}\}", text)
    if leftover:
        raise Refused(f"template placeholder {leftover.group(0)} has no value")
    return text


def insert_before_anchor(path: str, text: str, lines: str, anchor_contains: str = ANCHOR) -> str:
    """`text` with `lines` inserted before the first line containing `anchor_contains`."""
    out, done = [], False
    for line in text.splitlines(keepends=True):
        if not done and anchor_contains in line:
            out.append(lines)
            done = True
        out.append(line)
    if not done:
        raise Refused(f"{path}: no anchor line containing {anchor_contains!r}; restore it (see "
                      "docs/scaffolding.md, 'Add a service') or add the service by hand")
    return "".join(out)


def insert_after_last(path: str, text: str, pattern: str, lines: str) -> str:
    matches = list(re.finditer(pattern, text, re.M))
    if not matches:
        raise Refused(f"{path}: found no line matching {pattern!r} to add the service after")
    end = matches[-1].end()
    end = text.index("\n", end) + 1 if "\n" in text[end:] else len(text)
    return text[:end] + lines + text[end:]


def plan(name: str) -> tuple[dict[Path, str | bytes], dict[str, str]]:
    check_name(name)
    check_free(name)
    values = {
        "name": name,
        "Name": name[0].upper() + name[1:],
        "NAME": name.upper(),
        "port": str(next_port(r"^pub const PORT: u16 = (\d+);", 50050, 50099)),
        "admin_port": str(next_port(r"^pub const ADMIN_PORT: u16 = (\d+);", 9100, 9199)),
    }
    files: dict[Path, str | bytes] = {}
    # New files from the templates.
    files[ROOT / "proto" / name / "v1" / f"{name}.proto"] = render((TEMPLATES / "service.proto").read_text(), values)
    files[ROOT / "k8s" / "base" / f"{name}.yaml"] = render((TEMPLATES / "k8s.yaml").read_text(), values)
    # Its fuzz target, and a seed: method 0 (GetItem), mode 0 (one message), then
    # GetItemRequest{item_id: "item-1"} (fuzz/src/lib.rs).
    files[ROOT / "fuzz" / "fuzz_targets" / f"grpc_{name}.rs"] = render((TEMPLATES / "fuzz.rs").read_text(), values)
    files[ROOT / "fuzz" / "seeds" / f"grpc_{name}" / "GetItem"] = b"\x00\x00\x0a\x06item-1"
    for template in sorted(TEMPLATES.rglob("*")):
        rel = template.relative_to(TEMPLATES)
        if template.is_file() and rel.parts[0] in ("src", "tests", "Cargo.toml"):
            files[ROOT / "services" / name / rel] = render(template.read_text(), values)

    # Registrations, at the anchors.
    def edit(rel: str, change) -> None:
        path = ROOT / rel
        if not path.exists():
            raise Refused(f"{rel} does not exist")
        files[path] = change(rel, path.read_text())

    edit("Cargo.toml", lambda p, t: insert_before_anchor(p, t, f'{name} = {{ path = "services/{name}" }}\n'))
    edit("stack/Cargo.toml", lambda p, t: insert_before_anchor(p, t, f"{name}.workspace = true\n"))
    fuzz_target = (f"# remove-service: {name} {{\n[[bin]]\nname = \"grpc_{name}\"\n"
                   f"path = \"fuzz_targets/grpc_{name}.rs\"\ntest = false\ndoc = false\nbench = false\n\n"
                   f"# remove-service: {name} }}\n")
    edit("fuzz/Cargo.toml", lambda p, t: insert_before_anchor(
        p, insert_before_anchor(p, t, f'{name} = {{ path = "../services/{name}" }} # remove-service: {name}\n',
                                f"{ANCHOR} `make new-service` adds each new service's crate"),
        fuzz_target, f"{ANCHOR} `make new-service` adds each new service's target"))

    def stack(p: str, t: str) -> str:
        t = insert_before_anchor(p, t, (
            f"        let config = {name}::Config::from_env(&listen(\n"
            f"            {name}::config::PORT,\n"
            f"            {name}::config::ADMIN_PORT,\n"
            f"        ))?;\n"
            f"        let {name} = {name}::build(config).await?;\n"), f"// {ANCHOR} `make new-service` binds")
        t = insert_before_anchor(p, t, f"                ({name}::NAME, Bound::Grpc({name})),\n",
                                 f"// {ANCHOR} and serves")
        # Its RPCs annotated with google.api.http are routes of the gateway, which
        # calls it at {NAME}_ADDR: the bound address here.
        return insert_before_anchor(p, t, (
            f"        // remove-service: {name} {{\n"
            f"        let gateway_env = gateway_env.with(\"{values['NAME']}_ADDR\", uri({name}.local_addr()));\n"
            f"        // remove-service: {name} }}\n"), f"// {ANCHOR} and the gateway reaches it")
    edit("stack/src/lib.rs", stack)
    # The gateway reads its address: NAME_ADDR, by default its local port.
    edit("services/gateway/src/config.rs", lambda p, t: insert_before_anchor(
        p, t, (f"        // remove-service: {name} {{\n"
               f'        ("{name}", env.upstream("{values["NAME"]}_ADDR", "http://127.0.0.1:{values["port"]}")?),\n'
               f"        // remove-service: {name} }}\n"),
        f"// {ANCHOR} `make new-service` adds each new service above this line."))
    # In Kubernetes, the gateway finds it by its Service's name, and may call it.
    def gateway_yaml(p: str, t: str) -> str:
        t = insert_after_last(p, t, r'^            - name: [A-Z0-9_]+_ADDR\n              value: "http://[a-z0-9-]+:\d+"$',
                              f'            - name: {values["NAME"]}_ADDR\n'
                              f'              value: "http://{name}:{values["port"]}"\n')
        return insert_before_anchor(p, t, (
            f"    - to:\n        - podSelector:\n            matchLabels:\n"
            f"              app.kubernetes.io/name: {name}\n"
            f"      ports:\n        - port: {values['port']}\n          protocol: TCP\n"),
            "    # Name resolution of the upstreams.")
    edit("k8s/base/gateway.yaml", gateway_yaml)
    edit("k8s/base/kustomization.yaml",
         lambda p, t: insert_after_last(p, t, r"^  - [a-z0-9-]+\.yaml$", f"  - {name}.yaml\n"))
    # Its own certificate's Secret in the TLS component (marked for remove-service).
    tls = "k8s/components/tls/identities.yaml"
    if (ROOT / tls).exists():
        identity = (f"# remove-service: {name} {{\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n"
                    f"  name: {name}\nspec:\n  template:\n    spec:\n      volumes:\n        - name: tls\n"
                    f"          secret:\n            secretName: {name}-tls\n            defaultMode: 288\n"
                    "            items:\n"
                    "              - key: tls.crt\n                path: tls.crt\n"
                    "              - key: tls.key\n                path: tls.key\n"
                    "              - key: ca.crt\n                path: ca.crt\n"
                    f"# remove-service: {name} }}\n")
        # The gateway calls it over TLS there: its NAME_ADDR in https://, beside the others.
        # One edit of the file (each edit reads the file as it was).
        def tls_component(p: str, t: str) -> str:
            t = insert_before_anchor(p, t, identity, f"{ANCHOR} `make new-service` adds each new")
            start = t.index("  name: gateway\n")
            end = t.find("\n---", start)
            end = len(t) if end < 0 else end
            block = insert_after_last(
                p, t[start:end], r"^            - name: [A-Z0-9_]+_ADDR.*\n              value: https://[a-z0-9-]+:\d+.*$",
                f"            - name: {values['NAME']}_ADDR # remove-service: {name}\n"
                f"              value: https://{name}:{values['port']} # remove-service: {name}\n")
            return t[:start] + block + t[end:]
        edit(tls, tls_component)
    production = "k8s/overlays/production/kustomization.yaml"
    if (ROOT / production).exists():
        def pin_image(p: str, t: str) -> str:
            # In the registry of the images listed before (the placeholder digest too).
            registries = re.findall(r"^    newName: (\S+)/[a-z0-9-]+$", t, re.M)
            registry = registries[-1] if registries else "registry.example.com"
            return insert_after_last(p, t, r"^    digest: sha256:[0-9a-f]+$",
                                     f"  - name: {name}\n    newName: {registry}/{name}\n"
                                     f"    digest: sha256:{'0' * 64}\n")
        edit(production, pin_image)
    kind = "k8s/overlays/kind/kustomization.yaml"
    if (ROOT / kind).exists():
        edit(kind, lambda p, t: insert_after_last(p, t, r"^    newTag: dev$", f"  - name: {name}\n    newTag: dev\n"))
    # Inline lists of every service (the observability overlay's NetworkPolicies select
    # `values: [gateway, orders, …]`) take the new one too.
    services = {p.parent.name for p in ROOT.glob("services/*/Cargo.toml")}

    def add_to_lists(m: re.Match) -> str:
        items = {item.strip() for item in m.group(2).split(",")}
        return f"{m.group(1)}{m.group(2)}, {name}]" if services <= items else m.group(0)
    for yaml in sorted(ROOT.glob("k8s/**/*.yaml")):
        text = files.get(yaml) or yaml.read_text()
        listed = re.sub(r"(values: \[)([^\]\n]*)\]", add_to_lists, text)
        if listed != text:
            files[yaml] = listed

    # The acceptance suite runs a spec of every service, and the grpcurl cookbook
    # (docs/grpcurl.md) an example of each (tests/system/acceptance.rs): both are marked for
    # `make remove-service`, which also knows the line that lists the spec.
    spec = render((TEMPLATES / "spec.rs").read_text(), values)
    edit("tests/system/acceptance/specs.rs", lambda p, t: insert_before_anchor(
        p, t, f"        {name}(),\n", f"// {ANCHOR} `make new-service` adds") + spec)
    readme = ROOT / "README.md"
    if readme.exists():
        row = (f"| {name} | `{name}.v1.{values['Name']}Service` | {values['port']} | — |\n")
        text = readme.read_text()
        # The gateway's upstreams (env) name the new one too.
        text = re.sub(r"^(\| gateway \|.*`[A-Z0-9_]+_ADDR`) \|$", rf"\1, `{values['NAME']}_ADDR` |", text,
                      count=1, flags=re.M)
        rows = list(re.finditer(r"^\| [a-z0-9]+ \| `[a-z0-9]+\.v1\.\w+` \| \d+ \| .* \|$", text, re.M))
        if rows:
            end = text.index("\n", rows[-1].end()) + 1
            files[readme] = text[:end] + row + text[end:]
    # docs/configuration.md lists every variable the code reads (tests/system/acceptance.rs
    # checks it): the gateway's NAME_ADDR, beside the other upstreams.
    configuration = ROOT / "docs" / "configuration.md"
    if configuration.exists():
        files[configuration] = insert_after_last(
            "docs/configuration.md", configuration.read_text(),
            r"^\| `[A-Z0-9_]+_ADDR` \| `http://127\.0\.0\.1:\d+` \|.*$",
            f"| `{values['NAME']}_ADDR` | `http://127.0.0.1:{values['port']}` | where {name} is | gateway |\n")
    cookbook = ROOT / "docs" / "grpcurl.md"
    if cookbook.exists():
        example = render((TEMPLATES / "cookbook.md").read_text(), values)
        example = f"<!-- remove-service: {name} {{ -->\n\n{example.strip()}\n<!-- remove-service: {name} }} -->\n"
        files[cookbook] = insert_before_anchor("docs/grpcurl.md", cookbook.read_text(), example,
                                               "<!-- END grpcurl cookbook -->")
    return files, values


def regenerate_openapi() -> None:
    """docs/openapi.json follows the protos: the gateway's generator writes it again,
    with the new service's annotated RPC (its own test, run with UPDATE_OPENAPI=1)."""
    doc = ROOT / "docs" / "openapi.json"
    cargo = shutil.which("cargo")
    command = ["cargo", "test", "--quiet", "-p", "gateway", "--lib", "openapi::tests::the_checked_in_document_is_current"]
    if cargo and doc.exists():
        print("new-service: writing docs/openapi.json (the gateway's OpenAPI document, with the new route)")
        done = subprocess.run(command, cwd=ROOT, env={**os.environ, "UPDATE_OPENAPI": "1"},
                              stdout=subprocess.DEVNULL, check=False)
        if done.returncode == 0:
            return
    print("new-service: docs/openapi.json is not updated: run UPDATE_OPENAPI=1 " + " ".join(command[1:]),
          file=sys.stderr)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].strip():
        print("usage: make new-service NAME=<name>   (e.g. make new-service NAME=shipping)", file=sys.stderr)
        return 2
    name = argv[0].strip()
    try:
        files, values = plan(name)
    except Refused as e:
        print(f"new-service: refused, nothing changed: {e}", file=sys.stderr)
        return 1
    existed = {path for path in files if path.exists()}
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    # The generated Rust is formatted as `cargo fmt` would (names change line lengths).
    rustfmt = shutil.which("rustfmt")
    if rustfmt:
        subprocess.run([rustfmt, "--edition", "2024", *(str(p) for p in files if p.suffix == ".rs")], check=False)
    for path in sorted(files):
        print(f"new-service: {'updated' if path in existed else 'wrote  '} {path.relative_to(ROOT)}")
    regenerate_openapi()
    n, service = values["name"], f"{values['name']}.v1.{values['Name']}Service"
    print(f"""
new-service: {n} is ready: {service} on gRPC port {values['port']} (admin {values['admin_port']}).
  cargo test -p {n}                       # its tests: the RPC, errors, health, reflection
  make run                                # the stack serves it too; then, in another shell:
  grpcurl -plaintext localhost:{values['port']} list
  grpcurl -plaintext -d '{{"item_id": "item-1"}}' localhost:{values['port']} {service}/GetItem
  make test                               # everything, including its Kubernetes manifests
Next: edit proto/{n}/v1/{n}.proto, then services/{n}/src/domain.rs and grpc.rs.""")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
