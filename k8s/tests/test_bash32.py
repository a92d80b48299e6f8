"""The bash 3.2 lint (bash32.py): each rule catches its feature and lets the bash 3.2
way of writing it pass; text that is not code is not read."""

import unittest

from bash32 import lint

# rule: (lines that use the feature, lines that must pass)
CASES = {
    "mapfile": (["mapfile -t lines < <(ls)", "readarray -t a <f", "x=1; mapfile a"],
                ["while IFS= read -r line; do lines+=(\"$line\"); done < <(ls)", "echo mapfile-like"]),
    "declare-flags": (["declare -A seen=()", "local -n ref=$1", "typeset -l lower", "declare -gA x", "local -u up"],
                      ["local -a list", "declare -r x=1", "local name=-A", "declare -i n"]),
    "case-modification": (['echo "${name,,}"', "x=${name^^}", 'y="${a[0]^}"', "z=${v,}"],
                          ['echo "${name}"', "x=${name:-a}", "n=${#name}", 'echo "${x//,/ }"']),
    "transformation": (['echo "${x@Q}"'], ['echo "${x}@Q"', 'echo "$@"']),
    "append-both": (["make &>>log"], ["make >>log 2>&1", "make &>log"]),
    "pipe-both": (["make |& tee log"], ["make 2>&1 | tee log", "a || b"]),
    "coproc": (["coproc cat", "coproc NAME { cat; }"], ["echo coprocess"]),
    "negative-subscript": (['echo "${a[-1]}"', "a[-1]=x", "n=${#a[ -1]}"],
                           ['echo "${a[${#a[@]}-1]}"', 'echo "${a[@]: -1}"', "echo $((a[1] - 1))"]),
    "case-fallthrough": (["a) echo a ;;&", "a) echo a ;&"], ["a) echo a ;;", "a && b", "x >/dev/null 2>&1;"]),
    "test-v": (["[[ -v HOME ]]", "if [[ ! -v X ]]; then :; fi", "test -v X", "[ -v X ]"],
               ["[[ -n ${HOME+set} ]]", "grep -v x", "sort -V"]),
    "wait-n": (["wait -n", "wait -n $pid"], ["wait", 'wait "$pid"']),
    "named-fd": (["exec {fd}>log", "exec {in}<file"], ["exec 3>log", 'echo "{}"> x']),
    "shopt-4": (["shopt -s globstar", "shopt -s nullglob lastpipe", "shopt -s inherit_errexit"],
                ["shopt -s nullglob", "shopt -s extglob"]),
    "bash4-variables": (["t=$EPOCHSECONDS", "echo ${BASHPID}", "r=$SRANDOM"], ["t=$SECONDS", "echo $$"]),
    "brace-step": (["for i in {1..10..2}; do :; done", "echo {01..10}"], ["echo {1..10}", "echo {a,b}"]),
    "read-flags": (["read -N 1 c", "read -r -i default -e x", "read -p x -i y"], ["read -r line", "read -t 5 -r x"]),
    "printf-time": (["printf '%(%F)T' -1"], ["date +%F", "printf '%s' x"]),
    "gnu-sed-i": (["sed -i 's/a/b/' f", "sed -E -i 's/a/b/' f"], ["sed -n 's/a/b/p' f", "sed -e x -e y"]),
    "gnu-readlink-f": (["readlink -f x"], ['cd "$(dirname "$0")" && pwd', "readlink x"]),
    "gnu-timeout": (["timeout 5 curl x"], ["curl --max-time 5 x", "kubectl rollout status x --timeout 5s"]),
    "gnu-base64-d": (["base64 -d <f", "x | base64 --decode"], ["openssl base64 -d -A <f", "base64 <f"]),
    "gnu-date-d": (["date -d tomorrow"], ["date -u +%s"]),
    "gnu-stat-c": (["stat -c %s f"], ["wc -c <f"]),
    "gnu-grep-p": (["grep -P '\\d' f", "grep -oP x f"], ["grep -E x f", "grep -qx x"]),
    "gnu-xargs-r": (["ls | xargs -r rm"], ["ls | xargs rm"]),
}


def rules(text: str) -> set[str]:
    return {name for _, name, _ in lint(text)}


class RuleTest(unittest.TestCase):
    def test_each_rule(self):
        for name, (bad, good) in CASES.items():
            for line in bad:
                self.assertIn(name, rules(line + "\n"), f"{name} misses: {line}")
            for line in good:
                self.assertNotIn(name, rules(line + "\n"), f"{name} flags: {line}")

    def test_every_rule_has_cases(self):
        import bash32
        self.assertEqual({r.name for r in bash32.RULES}, set(CASES))

    def test_empty_arrays(self):
        self.assertEqual(rules('a=()\nfor x in "${a[@]}"; do :; done\n'), {"empty-array"})
        self.assertEqual(rules('local k=(x) a=()\necho "${a[*]}"\n'), {"empty-array"})
        self.assertEqual(rules('a=()\ncmd ${a[@]+"${a[@]}"}\nn=${#a[@]}\necho "${a[*]-}" "${a[*]:-none}"\n'), set())
        self.assertEqual(rules('a=()\necho "${a[@]:1}"\n'), {"empty-array"})
        self.assertEqual(rules('a=() # bash32: empty-array — filled below or the script dies\necho "${a[@]}"\n'), set())
        self.assertEqual(rules('a=(x)\necho "${a[@]}"\n'), set())

    def test_text_that_is_not_code(self):
        text = ("# mapfile in a comment\n"
                "echo 'mapfile in single quotes |& ;;&'\n"
                "echo \"$(printf '%s' \"x\")\" # readarray\n"
                "cat <<EOF\nmapfile is text here; so is |&\nEOF\n"
                "cat <<'END'\ndeclare -A x\nEND\n"
                "x=\"${y%$'\\n'*}\"; y=\"${z#'a'}\"\n"
                "grep x <<<\"$y\"\n"
                "echo '\nmapfile across lines\n'\n")
        self.assertEqual(lint(text), [])
        # Code after those is still read.
        self.assertEqual(rules(text + "mapfile -t a <f\n"), {"mapfile"})
        self.assertEqual(rules('echo "$(mapfile -t a <f)"\n'), {"mapfile"})

    def test_the_opt_out_names_one_rule(self):
        self.assertEqual(rules("timeout 5 x # bash32: gnu-timeout — Linux-only path\n"), set())
        self.assertEqual(rules("timeout 5 x # bash32: mapfile — wrong rule\n"), {"gnu-timeout"})


if __name__ == "__main__":
    unittest.main()
