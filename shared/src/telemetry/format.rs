//! How log lines write the fields of spans: in JSON, one object per span, and in text,
//! byte for byte tracing-subscriber's format, each without its cost per call (every
//! call's spans are formatted when they are created, although no line is logged per
//! call at `info`). JSON lines also carry the OpenTelemetry trace and span ids.

use std::fmt::{self, Write as _};

use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::field::VisitOutput as _;
use tracing_subscriber::fmt::format::{DefaultVisitor, Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The fields of each span as one JSON object, which the JSON lines of events written
/// inside the span include (`with_current_span`). Replaces tracing-subscriber's
/// `JsonFields`, which builds a `BTreeMap` of `serde_json::Value`s for every span
/// and, on every `Span::record`, parses the object back and serializes it again: for a
/// call's server span (11 fields, then its status code recorded at the end) that was
/// about half of the instructions inventory spent per GetProduct, although no line is
/// logged per call at `info`. This writes each field straight into the object and
/// appends recorded fields before its closing brace. A field recorded twice appears
/// twice; the event formatter parses the object into a map, where the last one wins,
/// as with `JsonFields`. Field values are written as `JsonFields` writes them.
#[derive(Debug)]
pub(super) struct JsonSpanFields;

impl<'w> FormatFields<'w> for JsonSpanFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut batched = Batched::new(writer);
        let mut object = JsonObject::new(&mut batched);
        fields.record(&mut object);
        object.finish()?;
        batched.flush()
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        // What format_fields wrote: `{…}`. Reopen the object to append to it.
        let Some(open) = current.fields.strip_suffix('}') else {
            return self.format_fields(current.as_writer(), fields);
        };
        let empty = open == "{";
        current.fields.pop();
        let mut object = JsonObject {
            out: &mut current.fields,
            empty,
            result: Ok(()),
        };
        fields.record(&mut object);
        object.finish()
    }
}

/// The text format's fields, byte for byte what tracing-subscriber's `DefaultFields`
/// writes (`name=value`, space-separated; with colours, the name in italics and a
/// dimmed `=`), without its cost per field: `DefaultFields` styles each name through
/// `nu_ansi_term` and writes every string through `Debug`'s escaping, which made
/// formatting the fields of a call's spans (done when each span is created, although
/// no line is logged per call at `info`) a fifth of the instructions inventory spent
/// per GetProduct. Here the escape sequences are literals and a string that needs no
/// escaping is copied as it is; messages and errors, which `DefaultFields` sanitizes,
/// go to its own visitor.
#[derive(Debug)]
pub(super) struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = TextVisitor {
            ansi: writer.has_ansi_escapes(),
            out: Batched::new(writer),
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result?;
        visitor.out.flush()
    }
}

struct TextVisitor<'w> {
    out: Batched<Writer<'w>>,
    ansi: bool,
    /// Nothing written yet (no space before the next field).
    empty: bool,
    result: fmt::Result,
}

impl TextVisitor<'_> {
    /// `DefaultFields`' own way, for what it treats specially: `message` (its
    /// escaping of terminal sequences), errors (their sources) and `log.` fields
    /// (skipped when tracing-subscriber's `tracing-log` feature is on).
    fn special(name: &str) -> bool {
        name == "message" || name.starts_with("log.")
    }

    fn by_default(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        if let Err(error) = self.out.flush() {
            self.result = Err(error);
            return;
        }
        let mut visitor = DefaultVisitor::new(self.out.inner.by_ref(), self.empty);
        record(&mut visitor);
        self.result = visitor.finish();
        self.empty = false;
    }

    /// `name=` (styled as `DefaultFields` styles it), then `value`.
    fn field(&mut self, name: &str, value: impl FnOnce(&mut dyn fmt::Write) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let space = if self.empty { "" } else { " " };
        self.empty = false;
        let ansi = self.ansi;
        let writer = &mut self.out;
        self.result = (|| {
            writer.write_str(space)?;
            if ansi {
                // nu_ansi_term's italic and dimmed, as `DefaultFields` paints them.
                writer.write_str("\x1b[3m")?;
                writer.write_str(name)?;
                writer.write_str("\x1b[0m\x1b[2m=\x1b[0m")?;
            } else {
                writer.write_str(name)?;
                writer.write_char('=')?;
            }
            value(writer)
        })();
    }
}

impl Visit for TextVisitor<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        if Self::special(field.name()) {
            return self.by_default(|v| v.record_i64(field, value));
        }
        self.field(field.name(), |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if Self::special(field.name()) {
            return self.by_default(|v| v.record_u64(field, value));
        }
        self.field(field.name(), |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if Self::special(field.name()) {
            return self.by_default(|v| v.record_bool(field, value));
        }
        self.field(field.name(), |w| {
            w.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if Self::special(field.name()) {
            return self.by_default(|v| v.record_str(field, value));
        }
        self.field(field.name(), |w| {
            // `Debug` of a str changes nothing but quotes and backslashes in
            // printable ASCII.
            let plain = value
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
            if plain {
                w.write_char('"')?;
                w.write_str(value)?;
                w.write_char('"')
            } else {
                write!(w, "{value:?}")
            }
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.by_default(|v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if Self::special(field.name()) {
            return self.by_default(|v| v.record_debug(field, value));
        }
        self.field(field.name(), |w| write!(w, "{value:?}"));
    }
}

/// Gathers small writes in a buffer on the stack and passes them on in larger ones: the
/// fields of a span reach its `String` in one write (one allocation) instead of one
/// per field and value (a reallocation each time the string doubles).
struct Batched<W> {
    inner: W,
    buffer: [u8; 256],
    len: usize,
}

impl<W: fmt::Write> Batched<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            buffer: [0; 256],
            len: 0,
        }
    }

    /// Passes on what is buffered.
    fn flush(&mut self) -> fmt::Result {
        if self.len > 0 {
            // Whole `str`s only were copied in, so this is UTF-8.
            let buffered = std::str::from_utf8(&self.buffer[..self.len]).map_err(|_| fmt::Error)?;
            self.inner.write_str(buffered)?;
            self.len = 0;
        }
        Ok(())
    }
}

impl<W: fmt::Write> fmt::Write for Batched<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.len + s.len() > self.buffer.len() {
            self.flush()?;
            if s.len() > self.buffer.len() {
                return self.inner.write_str(s);
            }
        }
        self.buffer[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

/// Writes visited fields as the members of a JSON object.
struct JsonObject<'a> {
    out: &'a mut dyn fmt::Write,
    /// No member written yet (no comma before the next one).
    empty: bool,
    result: fmt::Result,
}

impl<'a> JsonObject<'a> {
    fn new(out: &'a mut dyn fmt::Write) -> Self {
        let result = out.write_char('{');
        Self {
            out,
            empty: true,
            result,
        }
    }

    fn finish(self) -> fmt::Result {
        self.result?;
        self.out.write_char('}')
    }

    /// Writes `"name":` and then the value with `value`.
    fn member(&mut self, name: &str, value: impl FnOnce(&mut dyn fmt::Write) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let comma = if self.empty { "" } else { "," };
        self.empty = false;
        self.result = (|| {
            self.out.write_str(comma)?;
            self.out.write_char('"')?;
            JsonEscaped(&mut *self.out).write_str(name)?;
            self.out.write_str("\":")?;
            value(&mut *self.out)
        })();
    }
}

impl Visit for JsonObject<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // Debug keeps a fraction (`1.0`) and uses exponents (`1e300`), as JSON
        // allows; JSON has no NaN or infinity (serde_json writes null).
        self.member(field.name(), |out| {
            if value.is_finite() {
                write!(out, "{value:?}")
            } else {
                out.write_str("null")
            }
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field.name(), |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field.name(), |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field.name(), |out| write!(out, "{value}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field.name(), |out| {
            out.write_char('"')?;
            JsonEscaped(&mut *out).write_str(value)?;
            out.write_char('"')
        });
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        // An array of numbers, as serde_json writes a byte slice.
        self.member(field.name(), |out| {
            out.write_char('[')?;
            for (i, byte) in value.iter().enumerate() {
                let comma = if i == 0 { "" } else { "," };
                write!(out, "{comma}{byte}")?;
            }
            out.write_char(']')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field.name(), |out| {
            out.write_char('"')?;
            write!(JsonEscaped(&mut *out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

/// Escapes what is written through it as the inside of a JSON string.
struct JsonEscaped<'a>(&'a mut dyn fmt::Write);

impl fmt::Write for JsonEscaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        /// The bytes JSON escapes: control characters, quote and backslash.
        const ESCAPED: [bool; 256] = {
            let mut escaped = [false; 256];
            let mut byte = 0;
            while byte < 0x20 {
                escaped[byte] = true;
                byte += 1;
            }
            escaped[b'"' as usize] = true;
            escaped[b'\\' as usize] = true;
            escaped
        };
        let bytes = s.as_bytes();
        let mut plain = 0;
        // A table lookup per byte, and plain runs written whole: most values (names,
        // paths, addresses) have nothing to escape.
        while let Some(offset) = bytes[plain..].iter().position(|&b| ESCAPED[usize::from(b)]) {
            let at = plain + offset;
            self.0.write_str(&s[plain..at])?;
            match bytes[at] {
                b'"' => self.0.write_str("\\\"")?,
                b'\\' => self.0.write_str("\\\\")?,
                b'\n' => self.0.write_str("\\n")?,
                b'\r' => self.0.write_str("\\r")?,
                b'\t' => self.0.write_str("\\t")?,
                control => write!(self.0, "\\u{control:04x}")?,
            }
            plain = at + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

/// tracing-subscriber's JSON lines, plus the OpenTelemetry `trace_id` and `span_id`
/// of the span the event happened in, so logs and traces can be joined.
pub(super) struct JsonWithTraceIds(pub(super) Format<Json>);

impl<S, N> FormatEvent<S, N> for JsonWithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let ids = ctx
            .lookup_current()
            .and_then(|span| super::otel::span_context_of(&span));
        match (ids, line.trim_end().strip_suffix('}')) {
            (Some(ids), Some(object)) => writeln!(
                writer,
                "{object},\"trace_id\":\"{}\",\"span_id\":\"{}\"}}",
                ids.trace_id(),
                ids.span_id()
            ),
            _ => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests;
