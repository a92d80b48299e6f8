//! The call layers and the trace context carriers, on calls and headers made here.

use opentelemetry::propagation::{Extractor, Injector};

use super::*;

#[test]
fn pairs_carry_headers_case_insensitively_without_duplicates() {
    let mut headers = vec![
        ("Traceparent".to_owned(), "old".to_owned()),
        ("other".to_owned(), "kept".to_owned()),
    ];
    PairsInjector(&mut headers).set("traceparent", "new".to_owned());
    assert_eq!(
        headers,
        [
            ("other".to_owned(), "kept".to_owned()),
            ("traceparent".to_owned(), "new".to_owned())
        ]
    );
    let extractor = PairsExtractor(&headers);
    assert_eq!(extractor.get("TRACEPARENT"), Some("new"));
    assert_eq!(extractor.get("tracestate"), None);
    assert_eq!(extractor.keys(), ["other", "traceparent"]);
}

#[test]
fn trace_context_goes_into_headers_by_any_name() {
    let mut headers = HeaderMap::new();
    let mut injector = HeaderInjector(&mut headers);
    injector.set(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
    );
    injector.set("x-other", "kept".into());
    injector.set("baggage", "bad\nvalue".into());
    assert_eq!(
        headers["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(headers["x-other"], "kept");
    assert!(
        !headers.contains_key("baggage"),
        "an invalid value is left out"
    );
}

#[test]
fn paths_split_into_service_and_method() {
    assert_eq!(
        split_path("/inventory.v1.InventoryService/GetProduct"),
        (
            "inventory.v1.InventoryService/GetProduct",
            "inventory.v1.InventoryService",
            "GetProduct"
        )
    );
    assert_eq!(split_path("/"), ("", "", ""));
    assert_eq!(split_path("/nomethod"), ("nomethod", "nomethod", ""));
}

#[test]
fn status_is_read_from_headers_or_trailers() {
    let mut headers = HeaderMap::new();
    assert_eq!(grpc_status(&headers), None);
    headers.insert("grpc-status", "5".parse().unwrap());
    assert_eq!(grpc_status(&headers), Some(5));
    headers.insert("grpc-status", "five".parse().unwrap());
    assert_eq!(grpc_status(&headers), None);
}

/// A response body of one message, then a panic on the next poll.
struct PanicsAfterOneFrame(bool);

impl Body for PanicsAfterOneFrame {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        assert!(!self.0, "a bug in the stream");
        self.0 = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"message")))))
    }
}

fn status_of(headers: &HeaderMap) -> (Option<i32>, Option<&str>) {
    let message = headers.get("grpc-message").and_then(|m| m.to_str().ok());
    (grpc_status(headers), message)
}

fn grpc_request(path: &str) -> http::Request<()> {
    http::Request::builder()
        .uri(path)
        .header(CONTENT_TYPE, "application/grpc")
        .body(())
        .unwrap()
}

#[tokio::test]
async fn a_panicking_handler_ends_its_call_with_internal() {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    let before_answering = tower::service_fn(|request: http::Request<()>| async move {
        tokio::task::yield_now().await;
        assert_ne!(request.uri().path(), "/x.v1.S/M", "a bug in the handler");
        Ok::<_, std::convert::Infallible>(http::Response::new(PanicsAfterOneFrame(false)))
    });
    let rpc = ServerLayer::new("test", [("x.v1.S", ["M"])]).layer(before_answering);
    let request = grpc_request("/x.v1.S/M");
    let response = rpc.oneshot(request).await.expect("an answer, not a panic");
    assert_eq!(
        status_of(response.headers()),
        (Some(INTERNAL), Some("internal error"))
    );
    assert_eq!(response.headers()[CONTENT_TYPE], "application/grpc");
    let body = response.into_body().collect().await.unwrap();
    assert!(body.to_bytes().is_empty());

    let while_streaming = tower::service_fn(|_: http::Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(PanicsAfterOneFrame(false)))
    });
    let rpc = ServerLayer::new("test", [("x.v1.S", ["M"])]).layer(while_streaming);
    let request = grpc_request("/x.v1.S/M");
    let mut body = rpc.oneshot(request).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "message");
    let last = body.frame().await.unwrap().unwrap();
    let trailers = last.into_trailers().expect("trailers after the panic");
    assert_eq!(
        status_of(&trailers),
        (Some(INTERNAL), Some("internal error"))
    );
    assert!(body.frame().await.is_none() && body.is_end_stream());
}

#[tokio::test]
async fn requests_that_are_not_grpc_are_not_calls() {
    use tower::ServiceExt as _;

    let answer = tower::service_fn(|request: http::Request<()>| async move {
        let mut response = http::Response::new(http_body_util::Empty::<Bytes>::new());
        if request.headers().contains_key(CONTENT_TYPE) {
            response
                .headers_mut()
                .insert("grpc-status", HeaderValue::from(0));
        } else {
            *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
        }
        Ok::<_, std::convert::Infallible>(response)
    });
    let rpc = ServerLayer::new("test", [("x.v1.S", ["NotGrpc"])]).layer(answer);
    let path = "/x.v1.S/NotGrpc";
    let request = http::Request::builder().uri(path).body(()).unwrap();
    let response = rpc.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
    drop(response);
    assert!(!metrics::render().contains("NotGrpc"));

    drop(rpc.oneshot(grpc_request(path)).await.unwrap());
    assert!(metrics::render().contains("NotGrpc"), "a call");
}

#[test]
fn interned_names_are_reused() {
    let a = intern("x.v1.Service");
    let b = intern(&String::from("x.v1.Service"));
    assert!(std::ptr::eq(a, b));
}
