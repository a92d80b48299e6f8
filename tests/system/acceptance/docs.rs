//! What README.md, docs/*.md and k8s/README.md name must exist, so that moving a file cannot leave
//! the docs pointing at nothing:
//!
//! - every relative link `[text](path#anchor)`: the file (relative to the page), and
//!   for a Markdown page the heading the anchor names (GitHub's slug);
//! - every repository path in backticks (`` `shared/src/limit.rs` ``): a word with a
//!   `/` whose first part is an entry of the repository's root;
//! - in shell blocks, every `scripts/…` a command runs and every `make <target>`.
//!
//! And [`configuration`]: docs/configuration.md lists every environment variable the
//! services read (`env.duration("NAME", …)` and the other readers of `shared::Env`),
//! and no variable that no code names.
//!
//! Left alone: paths with placeholders (`services/<name>/`, `fuzz/artifacts/<target>/`,
//! `{…}`, `*`, `…`, `$VAR`), the example service the docs scaffold
//! ([`EXAMPLE_SERVICE`]), and what builds and tools make (`target/`, `.tools/`).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

/// The name `make new-service NAME=shipping` uses in the docs: its paths do not exist.
pub(crate) const EXAMPLE_SERVICE: &str = "shipping";

/// Made by builds and `scripts/tools.sh`, git-ignored.
const GENERATED: [&str; 2] = ["target", ".tools"];

/// Every problem of README.md, docs/*.md and k8s/README.md in the repository at `root`.
pub(crate) fn problems(root: &Path) -> Vec<String> {
    let mut pages = vec![PathBuf::from("README.md"), PathBuf::from("k8s/README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ is readable")
        .map(|entry| entry.expect("a docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .map(|path| PathBuf::from("docs").join(path.file_name().expect("a file name")))
        .collect();
    docs.sort();
    pages.extend(docs);
    let targets = make_targets(root);
    pages
        .iter()
        .flat_map(|page| {
            let text = std::fs::read_to_string(root.join(page))
                .unwrap_or_else(|e| panic!("{}: {e}", page.display()));
            check(root, page, &text, &targets)
        })
        .collect()
}

/// The readers of `shared::Env` (`shared/src/config.rs`) whose first argument is the
/// variable's name.
const ENV_READERS: [&str; 10] = [
    "get",
    "parse",
    "parse_with",
    "socket_addr",
    "duration",
    "positive_duration",
    "flag",
    "int_in",
    "file",
    "upstream",
];

/// The configuration page.
const CONFIGURATION: &str = "docs/configuration.md";

/// The problems of docs/configuration.md: a variable the code reads that it does not
/// list, or one it lists (a row of its table) that no code names.
pub(crate) fn configuration(root: &Path) -> Vec<String> {
    let page = std::fs::read_to_string(root.join(CONFIGURATION)).expect("the configuration page");
    let listed: BTreeSet<&str> = page
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(name, _)| name)
        .collect();
    let sources = sources(root);
    let mut read = BTreeSet::new();
    for (_, code) in &sources {
        read.extend(variables_read(code));
    }
    let mut problems: Vec<String> = read
        .iter()
        .filter(|name| !listed.contains(name.as_str()))
        .map(|name| {
            format!("{CONFIGURATION}: the code reads {name}, which the table does not list")
        })
        .collect();
    problems.extend(
        listed
            .iter()
            .filter(|name| {
                !sources
                    .iter()
                    .any(|(_, code)| code.contains(&format!("\"{name}\"")))
            })
            .map(|name| format!("{CONFIGURATION}: {name} is listed, but no code names \"{name}\"")),
    );
    problems
}

/// The Rust sources of the services, `shared` and `stack` but their tests: each file
/// up to its `#[cfg(test)]`, and no file of tests (`tests.rs`, `*_tests.rs`, `testing`).
fn sources(root: &Path) -> Vec<(PathBuf, String)> {
    let mut dirs = vec![root.join("shared/src"), root.join("stack/src")];
    for service in std::fs::read_dir(root.join("services")).expect("services/") {
        dirs.push(service.expect("a service").path().join("src"));
    }
    let mut files = Vec::new();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("an entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let test =
                name == "tests.rs" || name.ends_with("_tests.rs") || name.starts_with("testing");
            if path.is_dir() && !test {
                dirs.push(path);
            } else if name.ends_with(".rs") && !test {
                let text = std::fs::read_to_string(&path).expect("a source file");
                let code = text
                    .split("#[cfg(test)]")
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                files.push((path, code));
            }
        }
    }
    files
}

/// The names of the variables `code` reads with a literal name (`env.int_in(\n "NAME"`).
fn variables_read(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    for reader in ENV_READERS {
        let call = format!(".{reader}(");
        for (at, _) in code.match_indices(&call) {
            let rest = code[at + call.len()..].trim_start();
            let Some(rest) = rest.strip_prefix('"') else {
                continue;
            };
            let name = &rest[..rest.find('"').unwrap_or(0)];
            let variable = !name.is_empty()
                && name.contains('_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if variable {
                names.push(name.to_owned());
            }
        }
    }
    names
}

/// The targets of the Makefile (`name: … ## help`).
fn make_targets(root: &Path) -> BTreeSet<String> {
    let makefile = std::fs::read_to_string(root.join("Makefile")).expect("the Makefile");
    makefile
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, _)| name)
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
        .map(str::to_owned)
        .collect()
}

/// The problems of one page (`page` relative to `root`, its contents `text`).
pub(crate) fn check(
    root: &Path,
    page: &Path,
    text: &str,
    targets: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let dir = page.parent().unwrap_or(Path::new(""));
    let mut fence: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let at = format!("{}:{}", page.display(), i + 1);
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(info.trim().to_owned()),
            };
            continue;
        }
        match fence.as_deref() {
            Some("sh") => {
                problems.extend(check_shell(root, line, targets).map(|p| format!("{at}: {p}")))
            }
            Some(_) => {}
            None => {
                for link in links(line) {
                    if let Err(e) = check_link(root, dir, page, text, link) {
                        problems.push(format!("{at}: {e}"));
                    }
                }
                for word in code_spans(line).flat_map(str::split_whitespace) {
                    if let Some(path) = repo_path(root, word)
                        && !root.join(path).exists()
                    {
                        problems.push(format!("{at}: `{path}` does not exist"));
                    }
                }
            }
        }
    }
    problems
}

/// The targets of `](…)` on a line, but URLs.
fn links(line: &str) -> impl Iterator<Item = &str> {
    line.split("](").skip(1).filter_map(|rest| {
        let target = &rest[..rest.find(')')?];
        let external = ["http://", "https://", "mailto:"]
            .iter()
            .any(|scheme| target.starts_with(scheme));
        (!external).then_some(target)
    })
}

fn check_link(root: &Path, dir: &Path, page: &Path, text: &str, link: &str) -> Result<(), String> {
    let (file, anchor) = link.split_once('#').unwrap_or((link, ""));
    let (target, contents) = if file.is_empty() {
        (page.to_path_buf(), text.to_owned())
    } else {
        let target = normalize(&dir.join(file))
            .ok_or_else(|| format!("the link ({link}) leaves the repository"))?;
        if !root.join(&target).exists() {
            return Err(format!(
                "the link ({link}): {} does not exist",
                target.display()
            ));
        }
        let contents = if target.extension().is_some_and(|e| e == "md") {
            std::fs::read_to_string(root.join(&target)).unwrap_or_default()
        } else {
            String::new()
        };
        (target, contents)
    };
    if !anchor.is_empty() && target.extension().is_some_and(|e| e == "md") {
        let known = headings(&contents).any(|heading| slug(heading) == anchor);
        if !known {
            return Err(format!(
                "the link ({link}): {} has no heading #{anchor}",
                target.display()
            ));
        }
    }
    Ok(())
}

/// `a/../b` → `b`; `None` for a path out of the repository.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// The headings of a Markdown text, outside code blocks.
fn headings(text: &str) -> impl Iterator<Item = &str> {
    let mut in_fence = false;
    text.lines().filter_map(move |line| {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            return None;
        }
        let heading = line.trim_start_matches('#');
        (!in_fence && heading.len() < line.len() && heading.starts_with(' '))
            .then(|| heading.trim())
    })
}

/// GitHub's anchor of a heading: lower case, spaces to `-`, punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// The inline code spans of a line.
fn code_spans(line: &str) -> impl Iterator<Item = &str> {
    line.split('`').skip(1).step_by(2)
}

/// The repository path a word of code names, if it names one: a `/` in it, its first
/// part an entry of the root, no placeholder; trailing punctuation and `:line` dropped.
fn repo_path<'a>(root: &Path, word: &'a str) -> Option<&'a str> {
    let word = word.trim_end_matches([',', ';', '.', ')', ':']);
    let word = match word.rsplit_once(':') {
        Some((path, line)) if line.chars().all(|c| c.is_ascii_digit()) => path,
        _ => word,
    };
    let (first, _) = word.split_once('/')?;
    let placeholder = ['<', '{', '*', '…', '$', '(', '=', '@', '\'', '"']
        .iter()
        .any(|c| word.contains(*c));
    let example = word
        .split(['/', '.', '_'])
        .any(|part| part == EXAMPLE_SERVICE);
    (!first.is_empty()
        && !placeholder
        && !example
        && !word.contains("://")
        && !GENERATED.contains(&first)
        && root.join(first).exists())
    .then_some(word)
}

/// A line of a shell block: the scripts it runs exist, its `make` targets are the
/// Makefile's.
fn check_shell<'a>(
    root: &'a Path,
    line: &'a str,
    targets: &'a BTreeSet<String>,
) -> impl Iterator<Item = String> + 'a {
    let code = line.split(" #").next().unwrap_or_default();
    let scripts = code.match_indices("scripts/").filter_map(move |(at, _)| {
        let path: String = code[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "/._-".contains(*c))
            .collect();
        (!root.join(&path).exists()).then(|| format!("`{path}` does not exist"))
    });
    let words: Vec<&str> = code.split_whitespace().collect();
    let makes = words
        .windows(2)
        .filter(|pair| pair[0] == "make")
        .map(|pair| pair[1])
        .filter(|target| !target.starts_with('-') && !target.contains('='))
        .filter(move |target| !targets.contains(*target))
        .map(|target| format!("`make {target}`: the Makefile has no such target"))
        .collect::<Vec<_>>();
    scripts.chain(makes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> &'static Path {
        super::super::tools::root()
    }

    fn problems_of(page: &str, text: &str) -> Vec<String> {
        let targets = ["run", "test"].map(str::to_owned).into();
        check(root(), Path::new(page), text, &targets)
    }

    #[test]
    fn variables_are_read_by_name_across_lines() {
        let code = "let a = env.int_in(\n    \"GATEWAY_X_Y\",\n 1)?; env.get(\"LOG_FORMAT\");\n\
                    map.get(\"key\"); env.duration(NAME, d); headers.get(\"X\");";
        assert_eq!(variables_read(code), ["LOG_FORMAT", "GATEWAY_X_Y"]);
    }

    #[test]
    fn headings_become_github_anchors() {
        assert_eq!(
            slug("What every service gets from `shared`"),
            "what-every-service-gets-from-shared"
        );
        assert_eq!(
            slug("Add a service, make it yours"),
            "add-a-service-make-it-yours"
        );
    }

    #[test]
    fn links_and_paths_that_exist_pass() {
        let text = "# Top\n\n[a](../README.md#two-commands), [b](#top), [c](https://x.test/y),\n\
                    `shared/src/server.rs`, `shared::client`, `services/<name>/`, `target/x/y`,\n\
                    `services/shipping/src/lib.rs`\n\n```sh\nmake run\nscripts/tools.sh # x\n```\n";
        assert_eq!(problems_of("docs/page.md", text), Vec::<String>::new());
    }

    #[test]
    fn missing_files_anchors_scripts_and_targets_are_named() {
        let text = "[a](gone.md) [b](../README.md#no-such-heading) [c](#nowhere)\n\
                    `shared/src/gone.rs:12`\n\n```sh\nmake nosuch\nTOKEN=$(scripts/gone.sh token)\n```\n\
                    ```text\nmake ignored\n```\n";
        let found = problems_of("docs/page.md", text);
        let expect = [
            "docs/page.md:1: the link (gone.md): docs/gone.md does not exist",
            "docs/page.md:1: the link (../README.md#no-such-heading): README.md has no heading #no-such-heading",
            "docs/page.md:1: the link (#nowhere): docs/page.md has no heading #nowhere",
            "docs/page.md:2: `shared/src/gone.rs` does not exist",
            "docs/page.md:5: `make nosuch`: the Makefile has no such target",
            "docs/page.md:6: `scripts/gone.sh` does not exist",
        ];
        assert_eq!(found, expect);
    }
}
