//! The field formatters against tracing-subscriber's own, on the same spans.

use std::sync::Arc;

use tracing_subscriber::layer::SubscriberExt as _;

use super::*;

/// What the JSON event formatter gets from a span's fields: the same object as
/// tracing-subscriber's `JsonFields` writes, also after fields are recorded.
#[test]
fn span_fields_are_a_json_object() {
    use tracing_subscriber::fmt::format::JsonFields;
    use tracing_subscriber::registry::SpanData as _;

    fn fields<F>(format: F) -> serde_json::Value
    where
        F: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let captured = Arc::new(std::sync::Mutex::new(None));
        let sink = Arc::clone(&captured);
        let layer = tracing_subscriber::fmt::layer()
            .fmt_fields(format)
            .with_writer(std::io::sink);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let long = "long ".repeat(60);
            let span = tracing::info_span!(
                "call",
                long = long.as_str(),
                text = "a \"quoted\"\\ line\nnext\u{1}",
                number = -3_i64,
                count = 7_u64,
                ratio = 0.5,
                flag = true,
                addr = %std::net::Ipv4Addr::LOCALHOST,
                debug = ?("tuple", 1),
                r#type = "raw",
                later = tracing::field::Empty,
                again = tracing::field::Empty,
            );
            span.record("later", 14);
            span.record("again", "x");
            span.record("again", "y");
            span.with_subscriber(|(id, dispatch)| {
                let registry = dispatch
                    .downcast_ref::<tracing_subscriber::Registry>()
                    .unwrap();
                let data = registry.span_data(id).unwrap();
                let extensions = data.extensions();
                let text = &extensions.get::<FormattedFields<F>>().unwrap().fields;
                *sink.lock().unwrap() = Some(serde_json::from_str(text).unwrap());
            });
        });
        captured.lock().unwrap().take().unwrap()
    }

    let ours = fields(JsonSpanFields);
    assert_eq!(ours, fields(JsonFields::new()));
    assert_eq!(ours["text"], "a \"quoted\"\\ line\nnext\u{1}");
    assert_eq!(ours["again"], "y");
    assert_eq!(ours["type"], "raw");
}

/// The text format's lines are what they were with tracing-subscriber's
/// `DefaultFields`, byte for byte, with and without colours: span fields of
/// every kind (recorded later too), event fields, a message that `DefaultFields`
/// sanitizes, an error with its source.
#[test]
fn text_fields_write_what_default_fields_writes() {
    use tracing_subscriber::fmt::format::DefaultFields;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer failed")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn lines<F>(format: F, ansi: bool) -> String
    where
        F: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let out = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = Arc::clone(&out);
        let layer = tracing_subscriber::fmt::layer()
            .fmt_fields(format)
            .with_ansi(ansi)
            .without_time()
            .with_writer(move || TestWriter(Arc::clone(&sink)));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            // Longer than the buffer of `Batched`.
            let long = "long ".repeat(60);
            let span = tracing::info_span!(
                "rpc",
                long = long.as_str(),
                otel.name = "inventory.v1.InventoryService/GetProduct",
                quoted = "a \"quoted\"\\ line\nnext\u{1b}[31m é",
                number = -3_i64,
                count = 7_u64,
                ratio = 0.5,
                flag = false,
                addr = %std::net::Ipv4Addr::LOCALHOST,
                debug = ?("tuple", 1),
                r#type = "raw",
                empty = "",
                later = tracing::field::Empty,
                "log.target" = "kept",
            );
            span.record("later", 14);
            let _entered = span.enter();
            let inner = tracing::info_span!("handler");
            let _inner = inner.enter();
            tracing::info!(sku = "SKU-005", n = 2_u64, "message with \u{1b}[2J escape");
            let error = Outer(std::io::Error::other("inner cause"));
            tracing::warn!(error = &error as &dyn std::error::Error, "failed");
            tracing::error!(message = "as a field", r#loop = true);
        });
        let bytes = out.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    for ansi in [false, true] {
        let ours = lines(TextFields, ansi);
        assert_eq!(ours, lines(DefaultFields::new(), ansi), "ansi: {ansi}");
        assert_eq!(ours.lines().count(), 3, "{ours}");
        assert_eq!(ours.contains('\u{1b}'), ansi, "{ours}");
    }
}

struct TestWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for TestWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
