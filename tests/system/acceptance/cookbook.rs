//! The docs' examples, executable: the grpcurl cookbook (`docs/grpcurl.md`) and the
//! README's quick start (three curl calls through the gateway).
//!
//! Each lives between a `<!-- BEGIN … -->` and an `<!-- END … -->` marker ([`Doc`]).
//! Each example is a ```` ```sh ```` block right after a marker line:
//!
//! - `<!-- acceptance: grpcurl -->` (`curl` in the quick start): the block must exit 0
//!   and print nothing on stderr;
//! - `<!-- acceptance: grpcurl, fails with NotFound -->`: the block must end with
//!   grpcurl's error for that code (exit code 64 + code, `Code: NotFound` on stderr).
//!
//! A shell block of the section that mentions the tool but has no marker is an error,
//! and so is a marker the suite does not know: no example escapes the tests.
//!
//! Each block runs as one POSIX `sh -eu` script, exactly as printed, with the pinned
//! tools first on `PATH` (as the Makefile does) and `localhost:<local port>` rewritten
//! to the address of that service in the test's stack. A shell rather than a word
//! splitter, because examples use what readers type: `'…'` quoting, heredocs for
//! client streams, and `$(…)` to pass a server-assigned id to the next command.

use std::net::SocketAddr;

use tonic::Code;

/// A file of the repository with a section of marked examples of one tool.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Doc {
    /// Relative to the repository's root.
    pub(crate) path: &'static str,
    pub(crate) begin: &'static str,
    pub(crate) end: &'static str,
    /// The command the examples run; a block naming it must be marked.
    pub(crate) tool: &'static str,
}

/// The grpcurl cookbook. `scripts/new-service.py` adds a new service's example before
/// its end marker, `scripts/remove-service.py` takes a service's examples out.
pub(crate) const COOKBOOK: Doc = Doc {
    path: "docs/grpcurl.md",
    begin: "<!-- BEGIN grpcurl cookbook -->",
    end: "<!-- END grpcurl cookbook -->",
    tool: "grpcurl",
};

/// The README's three calls through the gateway.
pub(crate) const QUICK_START: Doc = Doc {
    path: "README.md",
    begin: "<!-- BEGIN quick start -->",
    end: "<!-- END quick start -->",
    tool: "curl",
};

/// One marked example.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Example {
    /// 1-based line of the file where the block's code starts.
    pub(crate) line: usize,
    pub(crate) script: String,
    /// `Some(code)` for an example that shows an error.
    pub(crate) fails_with: Option<Code>,
}

/// The section of `text` (the contents of `doc`) between its markers, with the line
/// number of its begin marker, or why there is none.
pub(crate) fn section(doc: Doc, text: &str) -> Result<(usize, &str), String> {
    let Doc {
        path, begin, end, ..
    } = doc;
    let count = |marker| text.matches(marker).count();
    if count(begin) != 1 || count(end) != 1 {
        return Err(format!("{path} must have {begin} and {end} once each"));
    }
    let start = text.find(begin).expect("counted") + begin.len();
    let stop = text.find(end).expect("counted");
    if stop < start {
        return Err(format!("{path}: {end} comes before {begin}"));
    }
    let first_line = text[..start].lines().count();
    Ok((first_line, &text[start..stop]))
}

/// Every marked example of the section of `text` (the contents of `doc`), in order.
pub(crate) fn examples(doc: Doc, text: &str) -> Result<Vec<Example>, String> {
    let (offset, section) = section(doc, text)?;
    let path = doc.path;
    let marker_prefix = format!("<!-- acceptance: {}", doc.tool);
    let lines: Vec<&str> = section.lines().collect();
    let mut examples = Vec::new();
    let mut pending: Option<(usize, Option<Code>)> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        let number = offset + i;
        if line.starts_with("<!-- acceptance") {
            pending = Some((
                number,
                parse_marker(&marker_prefix, line).map_err(|e| format!("{path}:{number}: {e}"))?,
            ));
        } else if let Some(fence) = line.strip_prefix("```") {
            let start = i + 1;
            let len = lines[start..]
                .iter()
                .position(|l| l.trim() == "```")
                .ok_or_else(|| format!("{path}:{number}: unclosed code block"))?;
            let code = lines[start..start + len].join("\n");
            match pending.take() {
                Some((_, fails_with)) if fence == "sh" => examples.push(Example {
                    line: number + 1,
                    script: code,
                    fails_with,
                }),
                Some((marker, _)) => {
                    return Err(format!(
                        "{path}:{marker}: the marked block must be ```sh, not ```{fence}"
                    ));
                }
                None if code.contains(doc.tool) => {
                    return Err(format!(
                        "{path}:{number}: a {} example without a marker; put `{marker_prefix} -->` on the line before",
                        doc.tool
                    ));
                }
                None => {}
            }
            i = start + len;
        } else if let Some((marker, _)) = pending.filter(|_| !line.is_empty()) {
            return Err(format!(
                "{path}:{marker}: the marker must be followed by a ```sh block"
            ));
        }
        i += 1;
    }
    if let Some((marker, _)) = pending {
        return Err(format!(
            "{path}:{marker}: the marker is not followed by a code block"
        ));
    }
    Ok(examples)
}

/// `<!-- acceptance: grpcurl -->` or `<!-- acceptance: grpcurl, fails with NotFound -->`
/// (`marker` is `<!-- acceptance: grpcurl`).
fn parse_marker(marker: &str, line: &str) -> Result<Option<Code>, String> {
    let inner = line
        .strip_prefix(marker)
        .and_then(|rest| rest.strip_suffix("-->"))
        .map(str::trim)
        .ok_or_else(|| format!("unknown marker {line:?}: expected `{marker} -->`"))?;
    if inner.is_empty() {
        return Ok(None);
    }
    let name = inner.strip_prefix(", fails with ").ok_or_else(|| {
        format!("unknown marker {line:?}: expected `{marker}, fails with <Code> -->`")
    })?;
    (1..=16)
        .map(Code::from_i32)
        .find(|code| format!("{code:?}") == name)
        .map(Some)
        .ok_or_else(|| {
            format!("unknown status code {name:?} in {line:?} (write it as grpcurl does: NotFound)")
        })
}

/// Rewrites every `localhost:<port>` of `script` to the stack's address of the
/// service with that local port; fails on a port no service of the stack has.
pub(crate) fn rewrite(script: &str, ports: &[(u16, SocketAddr)]) -> Result<String, String> {
    const HOST: &str = "localhost:";
    let mut out = String::with_capacity(script.len());
    let mut rest = script;
    while let Some(at) = rest.find(HOST) {
        out.push_str(&rest[..at]);
        let after = &rest[at + HOST.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let port: u16 = after[..digits]
            .parse()
            .map_err(|_| format!("`{HOST}` without a port in {script:?}"))?;
        let addr = ports
            .iter()
            .find(|(local, _)| *local == port)
            .map(|(_, addr)| addr)
            .ok_or_else(|| format!("localhost:{port} is no service of the stack"))?;
        out.push_str(&addr.to_string());
        rest = &after[digits..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readme(cookbook: &str) -> String {
        format!(
            "# Title\n\n{}\n{cookbook}\n{}\n",
            COOKBOOK.begin, COOKBOOK.end
        )
    }

    #[test]
    fn marked_blocks_are_found_with_their_lines_and_expectations() {
        let text = readme(
            "Intro.\n\n<!-- acceptance: grpcurl -->\n```sh\ngrpcurl -plaintext localhost:50052 list\n```\n\n\
             <!-- acceptance: grpcurl, fails with NotFound -->\n```sh\ngrpcurl a\ngrpcurl b\n```\n\n```json\n{}\n```\n",
        );
        let found = examples(COOKBOOK, &text).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].line, found[0].fails_with), (8, None));
        assert_eq!(found[0].script, "grpcurl -plaintext localhost:50052 list");
        assert_eq!(
            (found[1].line, found[1].fails_with),
            (13, Some(Code::NotFound))
        );
        assert_eq!(found[1].script, "grpcurl a\ngrpcurl b");
    }

    #[test]
    fn unmarked_examples_and_unknown_markers_are_errors() {
        let unmarked = readme("```sh\ngrpcurl -plaintext localhost:50052 list\n```\n");
        assert!(
            examples(COOKBOOK, &unmarked)
                .unwrap_err()
                .contains("without a marker")
        );
        let unknown =
            readme("<!-- acceptance: grpcurl, fails with Nope -->\n```sh\ngrpcurl x\n```\n");
        assert!(
            examples(COOKBOOK, &unknown)
                .unwrap_err()
                .contains("unknown status code")
        );
        let dangling = readme("<!-- acceptance: grpcurl -->\nSome text.\n```sh\ngrpcurl x\n```\n");
        assert!(
            examples(COOKBOOK, &dangling)
                .unwrap_err()
                .contains("followed by a ```sh block")
        );
        assert!(
            examples(COOKBOOK, "no cookbook")
                .unwrap_err()
                .contains("once each")
        );
    }

    #[test]
    fn the_quick_start_is_curl_calls_in_the_readme() {
        let (begin, end) = (QUICK_START.begin, QUICK_START.end);
        let marked = format!(
            "# T\n{begin}\n<!-- acceptance: curl -->\n```sh\ncurl -s http://localhost:8080/x\n```\n{end}\n"
        );
        let found = examples(QUICK_START, &marked).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].script, "curl -s http://localhost:8080/x");
        let unmarked = format!("{begin}\n```sh\ncurl -s http://localhost:8080/x\n```\n{end}\n");
        let error = examples(QUICK_START, &unmarked).unwrap_err();
        assert!(
            error.starts_with("README.md:2: a curl example without a marker"),
            "{error}"
        );
    }

    #[test]
    fn local_ports_become_stack_addresses() {
        let ports = [(50052, "127.0.0.1:41234".parse().unwrap())];
        assert_eq!(
            rewrite("grpcurl -plaintext localhost:50052 list", &ports).unwrap(),
            "grpcurl -plaintext 127.0.0.1:41234 list"
        );
        assert!(
            rewrite("grpcurl localhost:50059 list", &ports)
                .unwrap_err()
                .contains("50059")
        );
    }
}
