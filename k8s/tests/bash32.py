#!/usr/bin/env python3
"""A lint for scripts that users run on their own machines (scripts/kind-up.sh and the
scripts it runs): nothing bash 3.2 lacks — macOS ships bash 3.2 as /bin/bash, and
`#!/usr/bin/env bash` finds it unless the user installed another — and none of the
GNU-only options macOS's BSD tools reject. shellcheck cannot tell: it checks against
bash in general. Usage: bash32.py SCRIPT... (scripts/k8s-check.sh)

Each rule is a pattern over the script's code, with comments, single-quoted strings
and here-documents' bodies left out (they are text, not code). A line can opt out of
one rule with a trailing `# bash32: <rule> — <why it holds>`.

The one rule that is not a feature: under `set -u`, bash before 4.4 calls an empty
array unbound, so `"${a[@]}"` of an array that can be empty stops the script. An array
assigned empty (`a=()`) must be expanded guarded, `${a[@]+"${a[@]}"}`, or its
assignment carries `# bash32: empty-array — <why it is filled before use>`.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern
    message: str
    # Read single-quoted strings too (a printf format is one).
    strings: bool = False


def rule(name: str, pattern: str, message: str, strings: bool = False) -> Rule:
    return Rule(name, re.compile(pattern), message, strings)


RULES = [
    rule("mapfile", r"(?<![\w-])(mapfile|readarray)(?![\w-])",
         "mapfile/readarray is bash 4: `while IFS= read -r line; do a+=(\"$line\"); done < <(cmd)`"),
    rule("declare-flags", r"(?<![\w-])(declare|local|typeset)\s+(-[a-zA-Z]*[AnluNg][a-zA-Z]*)",
         "declare/local -A (associative), -n (nameref), -l/-u (case), -g are bash 4"),
    rule("case-modification", r"\$\{[#!]?[\w@*]+(\[[^]]*\])?(\^\^?|,,?)",
         "${x^^}, ${x,,}, ${x^}, ${x,} are bash 4: `tr '[:lower:]' '[:upper:]'`"),
    rule("transformation", r"\$\{[\w@*]+(\[[^]]*\])?@[QEPAKaULuk]\}", "${x@Q} and the other @ transformations are bash 4.4"),
    rule("append-both", r"&>>", "&>> is bash 4: `>>file 2>&1`"),
    rule("pipe-both", r"\|&", "|& is bash 4: `2>&1 |`"),
    rule("coproc", r"(?<![\w-])coproc(?![\w-])", "coproc is bash 4"),
    rule("negative-subscript", r"(\$\{#?\w+\[\s*-\s*\d|(?<![\w$])\w+\[\s*-\s*\d+\s*\]\+?=)",
         "negative array subscripts are bash 4.3: `${a[${#a[@]}-1]}`"),
    rule("case-fallthrough", r";;&|(?<![;&]);&", ";& and ;;& in case are bash 4"),
    rule("test-v", r"(\[\[|\[|(?<![\w-])test)\s+(!\s+)?-v\s", "[[ -v name ]] is bash 4.2: `[[ -n ${name+set} ]]`"),
    rule("wait-n", r"(?<![\w-])wait\s+-[a-zA-Z]*[nfp]", "wait -n/-f/-p are bash 4.3 and later"),
    rule("named-fd", r"\{[A-Za-z_]\w*\}[<>]", "{fd}> (a file descriptor in a variable) is bash 4.1"),
    rule("shopt-4", r"shopt\s+-s\s+.*\b(globstar|lastpipe|autocd|dirspell|checkjobs|direxpand|globasciiranges|"
                    r"inherit_errexit|localvar_inherit|assoc_expand_once|compat\d+)\b", "this shopt option is bash 4 or later"),
    rule("bash4-variables", r"\$\{?(EPOCHSECONDS|EPOCHREALTIME|BASHPID|SRANDOM|BASH_ARGV0)\b",
         "EPOCHSECONDS, EPOCHREALTIME, BASHPID, SRANDOM, BASH_ARGV0 are bash 4 or 5"),
    rule("brace-step", r"\{-?\w+\.\.-?\w+\.\.-?\d+\}|\{-?0\d+\.\.", "{a..b..step} and zero-padded {01..10} are bash 4"),
    rule("read-flags", r"(?<![\w-])read(\s+[^;|&\s]+)*?\s+-[a-zA-Z]*[Ni]\b", "read -N and read -i are bash 4"),
    rule("printf-time", r"(?<![\w-])printf\s.*%\([^)]*\)T", "printf's %(…)T is bash 4.2: `date`", strings=True),
    # GNU-only options of the tools macOS ships in BSD versions.
    rule("gnu-sed-i", r"(?<![\w-])sed\s+(-\w+\s+)*-i(\s|$)", "sed -i without a suffix is GNU: macOS's takes `-i ''`; write a new file"),
    rule("gnu-readlink-f", r"(?<![\w-])readlink\s+-f", "readlink -f is GNU (macOS before 12.3 lacks it): `cd … && pwd`"),
    rule("gnu-timeout", r"(?<![\w.-])timeout\s+-?\d", "timeout is GNU coreutils: macOS has none"),
    rule("gnu-base64-d", r"(?<!openssl )(?<![\w-])base64\s+(-\w+\s+)*(-d|--decode)\b",
         "macOS's base64 before 13 decodes with -D: `openssl base64 -d -A`"),
    rule("gnu-date-d", r"(?<![\w-])date\s+(-\w+\s+)*-d\s", "date -d is GNU: macOS's date reads a date with -j -f"),
    rule("gnu-stat-c", r"(?<![\w-])stat\s+(-\w+\s+)*-c\s", "stat -c is GNU: macOS's is stat -f"),
    rule("gnu-grep-p", r"(?<![\w-])grep\s+(-\w+\s+)*-\w*P", "grep -P is GNU: macOS's grep has no Perl regex"),
    rule("gnu-xargs-r", r"(?<![\w-])xargs\s+(-\w+\s+)*-\w*r\b", "xargs -r is GNU"),
]
EMPTY_ARRAY = "empty-array"
OPT_OUT = re.compile(r"#\s*bash32:\s*([\w-]+)\s+\S")
HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_]\w*)\1")


def code_lines(text: str) -> list[tuple[int, str, str]]:
    """(line number, code, comment) of each line that is code: single-quoted strings
    emptied (marked by \\x00 … \\x01 around their text, which `strip` drops), the
    comment split off, here-documents' bodies skipped. Quoting nests as in
    bash: `"$(cmd "arg")"` and `"${x%'y'}"` open a context of their own."""
    out = []
    heredoc_end = None
    # Contexts: "code" (top level, or inside $( )), "dq" (double quotes), "brace"
    # (inside ${ }), "sq" (single quotes), "ansi" ($'…'). The stack spans lines.
    stack = ["code"]
    for n, line in enumerate(text.splitlines(), 1):
        if heredoc_end is not None:
            if line.strip() == heredoc_end:
                heredoc_end = None
            continue
        code, comment, i = "\x00" if stack[-1] in ("sq", "ansi") else "", "", 0
        while i < len(line):
            ch, top = line[i], stack[-1]
            two = line[i:i + 2]
            if top in ("sq", "ansi"):
                if top == "ansi" and ch == "\\":
                    code += line[i:i + 2]
                    i += 2
                    continue
                if ch == "'":
                    stack.pop()
                    code += "\x01'"
                else:
                    code += ch
                i += 1
                continue
            if ch == "\\":
                code += two
                i += 2
                continue
            if top == "dq":
                if ch == '"':
                    stack.pop()
                elif two == "$(":
                    stack.append("code")
                    code += two
                    i += 2
                    continue
                elif two == "${":
                    stack.append("brace")
                    code += two
                    i += 2
                    continue
                code += ch
                i += 1
                continue
            # code or brace
            m = HEREDOC.match(line, i) if two == "<<" and top == "code" else None
            if m:
                heredoc_end = m.group(2)
                code += m.group(0)
                i = m.end()
                continue
            if two == "$'":
                stack.append("ansi")
                code += two + "\x00"
                i += 2
                continue
            if ch == "'":
                stack.append("sq")
                code += "'\x00"
                i += 1
                continue
            if ch == '"':
                stack.append("dq")
            elif two in ("$(", "${"):
                stack.append("code" if two == "$(" else "brace")
                code += two
                i += 2
                continue
            elif ch == "(" and top == "code":
                stack.append("code")
            elif (ch == ")" and top == "code" or ch == "}" and top == "brace") and len(stack) > 1:
                stack.pop()
            elif ch == "{" and top == "brace":
                stack.append("brace")
            elif ch == "#" and top == "code" and (i == 0 or line[i - 1] in " \t;|&("):
                comment = line[i:]
                break
            code += ch
            i += 1
        out.append((n, code, comment))
    return out


def strip(code: str) -> str:
    """The code without the text of its single-quoted strings."""
    return re.sub("\x00[^\x01]*\x01?", "", code)


def lint(text: str) -> list[tuple[int, str, str]]:
    """(line, rule, message) of every bash-4 feature or GNU-only option in a script."""
    found = []
    with_strings = code_lines(text)
    lines = [(n, strip(code), comment) for n, code, comment in with_strings]
    opted = {(n, m.group(1)) for n, _, comment in lines for m in [OPT_OUT.search(comment)] if m}
    for (n, code, _), (_, raw, _) in zip(lines, with_strings):
        for r in RULES:
            if r.pattern.search(raw.replace("\x00", "").replace("\x01", "") if r.strings else code) \
                    and (n, r.name) not in opted:
                found.append((n, r.name, r.message))
    # Arrays assigned empty, and their unguarded expansions.
    empty = {}  # name: the first line that assigns it () without opting out
    for n, code, _ in lines:
        for m in re.finditer(r"(?<![\w$])([A-Za-z_]\w*)=\(\s*\)", code):
            if (n, EMPTY_ARRAY) not in opted:
                empty.setdefault(m.group(1), n)
    guarded = re.compile(r'\$\{(\w+)\[([@*])\]\+"\$\{\1\[\2\]\}"\}')
    for n, code, _ in lines:
        for m in re.finditer(r"\$\{([A-Za-z_]\w*)\[[@*]\](:?[-+])?", guarded.sub("", code)):
            # ${a[@]+…}, ${a[*]-default}: tested for being set, never unbound.
            name, tested = m.group(1), m.group(2)
            if name in empty and not tested and (n, EMPTY_ARRAY) not in opted:
                found.append((n, EMPTY_ARRAY,
                              f"{name} can be empty (assigned () on line {empty[name]}): bash before 4.4 calls "
                              f"\"${{{name}[@]}}\" unbound under set -u; expand it as ${{{name}[@]+\"${{{name}[@]}}\"}}, or "
                              f"mark its assignment `# bash32: {EMPTY_ARRAY} — <why it is filled first>`"))
    return sorted(found)


def main(paths: list[str]) -> int:
    if not paths:
        print("usage: bash32.py SCRIPT...", file=sys.stderr)
        return 2
    failures = [(path, *f) for path in paths for f in lint(Path(path).read_text())]
    for path, n, name, message in failures:
        print(f"{path}:{n}: [{name}] {message}", file=sys.stderr)
    if failures:
        print(f"k8s-check: {len(failures)} use(s) of what macOS's bash 3.2 or BSD tools lack (above)", file=sys.stderr)
        return 1
    print(f"k8s-check: bash 3.2 and BSD tools: {len(paths)} scripts, nothing they lack")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
