//! Calling an RPC with grpcurl or `buf curl`, and reading back what the tool printed:
//! the response messages, or the status with its google.rpc error details.

use std::net::SocketAddr;

use prost::Message as _;
use serde_json::{Map, Value, json};
use tonic::Code;
use tonic_types::pb;

use super::json::parse_values;
use super::tools::{Invocation, Output, Tools};

/// The two reflection clients of the suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tool {
    /// grpcurl (1.8.6 pinned: server reflection v1alpha only).
    Grpcurl,
    /// `buf curl`, forced to server reflection v1 and the gRPC protocol.
    Buf,
}

/// How a call ended, as the tool printed it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Reply {
    /// The response messages: one for a unary call, any number for a stream.
    Messages(Vec<Value>),
    /// An error status; `details` in protobuf JSON with `@type`, as grpcurl prints them.
    Status {
        /// Stream messages received before the error.
        messages: Vec<Value>,
        code: Code,
        message: String,
        details: Vec<Value>,
    },
}

/// One call to make.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rpc<'a> {
    /// `pkg.Service/Method`.
    pub(crate) method: &'a str,
    /// One JSON body, or several for a client stream.
    pub(crate) requests: &'a [Value],
    pub(crate) client_streaming: bool,
    /// `-v` / `--verbose`.
    pub(crate) verbose: bool,
}

/// Flags that make `buf curl` speak gRPC over plain-text HTTP/2 and use reflection v1
/// only. Without `--reflect-protocol`, buf silently falls back to v1alpha, which would
/// hide a server that lacks v1.
pub(crate) const BUF_FLAGS: [&str; 5] = [
    "--protocol",
    "grpc",
    "--http2-prior-knowledge",
    "--reflect-protocol",
    "grpc-v1",
];

impl Tool {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Grpcurl => "grpcurl",
            Self::Buf => "buf curl",
        }
    }

    /// The invocation that makes `rpc` on the service at `addr`.
    pub(crate) fn call(self, tools: &Tools, addr: SocketAddr, rpc: &Rpc<'_>) -> Invocation {
        let (program, mut args, verbose, from_stdin, target) = match self {
            Self::Grpcurl => (
                &tools.grpcurl,
                vec!["-plaintext".to_owned()],
                "-v",
                "@",
                vec![addr.to_string(), rpc.method.to_owned()],
            ),
            Self::Buf => (
                &tools.buf,
                ["curl"]
                    .into_iter()
                    .chain(BUF_FLAGS)
                    .map(str::to_owned)
                    .collect(),
                "--verbose",
                "@-",
                vec![format!("http://{addr}/{}", rpc.method)],
            ),
        };
        if rpc.verbose {
            args.push(verbose.to_owned());
        }
        let bodies: Vec<String> = rpc.requests.iter().map(Value::to_string).collect();
        let bodies = bodies.join("\n");
        // The messages of a client stream come on stdin, as a user would pipe them.
        let (data, stdin) = if rpc.client_streaming {
            (from_stdin.to_owned(), Some(bodies))
        } else {
            (bodies, None)
        };
        args.extend(["-d".to_owned(), data]);
        args.extend(target);
        let invocation = Invocation::new(program, args);
        match stdin {
            Some(input) => invocation.stdin(input),
            None => invocation,
        }
    }

    /// Reads what the tool printed. `Err` for anything that is not a clean reply: a
    /// tool failure (reflection, connection, usage), noise on stderr, output that does
    /// not parse, or an exit code that disagrees with the printed status.
    pub(crate) fn reply(self, output: &Output, verbose: bool) -> Result<Reply, String> {
        let code = output.code.ok_or("the tool did not exit")?;
        if code == 0 {
            if verbose {
                return Err("verbose output is only read for errors".into());
            }
            if !output.stderr.trim().is_empty() {
                return Err("the call succeeded but the tool printed to stderr".into());
            }
            return parse_values(&output.stdout).map(Reply::Messages);
        }
        // grpcurl reports a status with exit code 64 + code, buf with code << 3; any
        // other exit code is the tool failing (reflection, connection, usage).
        let is_status = match self {
            Self::Grpcurl => (64..=80).contains(&code),
            Self::Buf => code >= 8 && code % 8 == 0 && code <= 16 << 3,
        };
        if !is_status {
            return Err(format!(
                "{} failed before or outside the call (exit code {code})",
                self.name()
            ));
        }
        let reply = match self {
            Self::Grpcurl => grpcurl_status(output, verbose)?,
            Self::Buf => buf_status(output)?,
        };
        let Reply::Status { code: status, .. } = &reply else {
            unreachable!("parsed a status");
        };
        let expected_exit = match self {
            Self::Grpcurl => 64 + *status as i32,
            Self::Buf => (*status as i32) << 3,
        };
        if code != expected_exit {
            return Err(format!(
                "printed status {status:?} but exited with {code}, not {expected_exit}"
            ));
        }
        Ok(reply)
    }
}

/// grpcurl's error report on stderr:
///
/// ```text
/// ERROR:
///   Code: NotFound
///   Message: product "SKU-404" not found
///   Details:
///   1)<TAB>{"@type":"type.googleapis.com/google.rpc.ResourceInfo", …}
/// ```
fn grpcurl_status(output: &Output, verbose: bool) -> Result<Reply, String> {
    let messages = if verbose {
        // -v prints the method, metadata and trailers first; make sure it did.
        if !output.stdout.contains("Resolved method descriptor:")
            || !output.stdout.contains("Response trailers received:")
        {
            return Err("grpcurl -v printed no verbose report on stdout".into());
        }
        Vec::new()
    } else {
        parse_values(&output.stdout)?
    };
    let mut lines = output.stderr.lines();
    if lines.next() != Some("ERROR:") {
        return Err("stderr does not start with grpcurl's ERROR: report".into());
    }
    let field = |line: Option<&str>, name: &str| {
        line.and_then(|l| l.strip_prefix(&format!("  {name}: ")))
            .map(str::to_owned)
            .ok_or_else(|| format!("no `{name}:` line in grpcurl's error report"))
    };
    let code = field(lines.next(), "Code")?;
    let code = code_named(&code).ok_or_else(|| format!("unknown code {code:?}"))?;
    let message = field(lines.next(), "Message")?;
    let mut details = Vec::new();
    match lines.next() {
        None => {}
        Some("  Details:") => {
            for (i, line) in lines.enumerate() {
                let json = line
                    .strip_prefix(&format!("  {})\t", i + 1))
                    .ok_or_else(|| format!("unexpected line in the details: {line:?}"))?;
                details
                    .push(serde_json::from_str(json).map_err(|e| format!("detail {json:?}: {e}"))?);
            }
        }
        Some(other) => {
            return Err(format!(
                "unexpected line in grpcurl's error report: {other:?}"
            ));
        }
    }
    Ok(Reply::Status {
        messages,
        code,
        message,
        details,
    })
}

/// buf's error report on stderr: the Connect JSON error,
/// `{"code": "not_found", "message": …, "details": [{"type": …, "value": <base64>}]}`,
/// after the `buf: ` lines of `--verbose`.
fn buf_status(output: &Output) -> Result<Reply, String> {
    let report: String = output
        .stderr
        .lines()
        .filter(|l| !l.starts_with("buf: "))
        .collect::<Vec<_>>()
        .join("\n");
    let report: Value = serde_json::from_str(&report)
        .map_err(|e| format!("stderr is not buf's JSON error report ({e})"))?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    let code_name = text(report.get("code"));
    let code = code_named(&code_name).ok_or_else(|| format!("unknown code {code_name:?}"))?;
    let mut details = Vec::new();
    for detail in report
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let type_name = text(detail.get("type"));
        let bytes = base64_decode(&text(detail.get("value")))?;
        details.push(detail_json(&type_name, &bytes)?);
    }
    Ok(Reply::Status {
        messages: parse_values(&output.stdout)?,
        code,
        message: text(report.get("message")),
        details,
    })
}

/// The code named `name`, as grpcurl (`NotFound`) or Connect (`not_found`) spells it.
fn code_named(name: &str) -> Option<Code> {
    let wanted = name
        .replace('_', "")
        .to_ascii_lowercase()
        .replace("canceled", "cancelled");
    (0..=16)
        .map(Code::from_i32)
        .find(|code| format!("{code:?}").to_ascii_lowercase() == wanted)
}

/// An error detail in protobuf JSON, as grpcurl prints it, for the google.rpc types
/// the services send.
fn detail_json(type_name: &str, bytes: &[u8]) -> Result<Value, String> {
    let decode_error = |e: prost::DecodeError| format!("{type_name}: {e}");
    let fields = match type_name {
        "google.rpc.BadRequest" => {
            let detail = pb::BadRequest::decode(bytes).map_err(decode_error)?;
            let violations = detail.field_violations.iter().map(|v| {
                object([
                    ("field", json!(v.field)),
                    ("description", json!(v.description)),
                    ("reason", json!(v.reason)),
                ])
            });
            object([("fieldViolations", violations.collect())])
        }
        "google.rpc.ResourceInfo" => {
            let detail = pb::ResourceInfo::decode(bytes).map_err(decode_error)?;
            object([
                ("resourceType", json!(detail.resource_type)),
                ("resourceName", json!(detail.resource_name)),
                ("owner", json!(detail.owner)),
                ("description", json!(detail.description)),
            ])
        }
        "google.rpc.ErrorInfo" => {
            let detail = pb::ErrorInfo::decode(bytes).map_err(decode_error)?;
            object([
                ("reason", json!(detail.reason)),
                ("domain", json!(detail.domain)),
                ("metadata", json!(detail.metadata)),
            ])
        }
        "google.rpc.PreconditionFailure" => {
            let detail = pb::PreconditionFailure::decode(bytes).map_err(decode_error)?;
            let violations = detail.violations.iter().map(|v| {
                object([
                    ("type", json!(v.r#type)),
                    ("subject", json!(v.subject)),
                    ("description", json!(v.description)),
                ])
            });
            object([("violations", violations.collect())])
        }
        other => {
            return Err(format!(
                "the suite cannot read error details of type {other}"
            ));
        }
    };
    let mut with_type = Map::new();
    with_type.insert(
        "@type".into(),
        json!(format!("type.googleapis.com/{type_name}")),
    );
    with_type.extend(fields.as_object().cloned().unwrap_or_default());
    Ok(Value::Object(with_type))
}

/// A JSON object without the fields protobuf JSON leaves out (empty strings, lists, maps).
fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    let is_default = |v: &Value| match v {
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    Value::Object(
        fields
            .into_iter()
            .filter(|(_, v)| !is_default(v))
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

/// Standard or URL-safe base64, padded or not (Connect writes it unpadded).
fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let sextet = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0);
    for c in text.trim_end_matches('=').bytes() {
        let value = sextet(c).ok_or_else(|| format!("not base64: {text:?}"))?;
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_read_in_both_spellings() {
        assert_eq!(code_named("NotFound"), Some(Code::NotFound));
        assert_eq!(code_named("not_found"), Some(Code::NotFound));
        assert_eq!(code_named("Canceled"), Some(Code::Cancelled));
        assert_eq!(code_named("canceled"), Some(Code::Cancelled));
        assert_eq!(code_named("Nope"), None);
    }

    #[test]
    fn base64_round_trips_a_bad_request() {
        // What buf printed for INVALID_ARGUMENT with the violation `sku: is required`.
        let bytes = base64_decode("ChIKA3NrdRILaXMgcmVxdWlyZWQ").unwrap();
        assert_eq!(
            detail_json("google.rpc.BadRequest", &bytes).unwrap(),
            json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "sku", "description": "is required"}],
            })
        );
    }
}
