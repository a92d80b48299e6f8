//! The single calls the driver makes besides the load: readiness probes, sample
//! calls, the set-up of the chain (stock, one order) and `/metrics` scrapes.

use std::net::SocketAddr;
use std::time::Duration;

use bench::baseline;
use contracts::inventory::v1::inventory_service_client::InventoryServiceClient;
use contracts::inventory::v1::{GetProductRequest, RestockProductsRequest};
use http_body_util::{BodyExt as _, Full};
use prost::Message as _;

use crate::Error;

pub(crate) async fn http_status(uri: &str) -> Result<u16, Error> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let response = client.get(uri.parse()?).await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}

/// One GetProduct of [`baseline::SKU`]: the encoded size of the response, after
/// checking its grpc-status is 0 (tonic turns any other status into an error).
pub(crate) async fn get_product_size(uri: &str) -> Result<usize, Error> {
    let mut client = InventoryServiceClient::connect(uri.to_owned()).await?;
    let response = client
        .get_product(GetProductRequest {
            sku: baseline::SKU.into(),
        })
        .await?;
    Ok(response.get_ref().encoded_len())
}

/// Gives inventory stock for every order the run can place: 1000 deliveries of the
/// largest quantity allowed, through the client-streaming RestockProducts.
pub(crate) async fn restock(uri: &str) -> Result<(), Error> {
    let mut client = InventoryServiceClient::connect(uri.to_owned()).await?;
    let deliveries = (0..1000).map(|_| RestockProductsRequest {
        sku: baseline::SKU.into(),
        quantity: 10_000,
    });
    client
        .restock_products(tokio_stream::iter(deliveries))
        .await?;
    Ok(())
}

/// Places one order through the gateway; returns its path (`Location`).
pub(crate) async fn place_one_order(gateway: &str) -> Result<String, Error> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let body = serde_json::json!({
        "customerId": "bench",
        "items": [{ "sku": baseline::SKU, "quantity": 1 }],
        "cardToken": "tok_visa",
    });
    let request = http::Request::post(format!("{gateway}/v1/orders"))
        .header("content-type", "application/json")
        .header("idempotency-key", "bench-first-order")
        .body(Full::new(bytes::Bytes::from(body.to_string())))?;
    let response = client.request(request).await?;
    let location = response
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = response.status();
    response.into_body().collect().await?;
    location.ok_or_else(|| format!("POST /v1/orders answered {status} with no Location").into())
}

/// Scrapes `/metrics` of every admin address once a second, as Prometheus would
/// (more often than its usual 15 s), until aborted.
pub(crate) fn scrape_metrics(admins: Vec<SocketAddr>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            for admin in &admins {
                let _ = http_status(&format!("http://{admin}/metrics")).await;
            }
        }
    })
}

/// Server calls that ended with a grpc-status other than 0, from the services' own
/// `rpc_server_call_duration_seconds_count` series.
pub(crate) async fn server_errors(admins: &[SocketAddr]) -> u64 {
    let mut errors = 0;
    for admin in admins {
        let Ok(text) = http_text(&format!("http://{admin}/metrics")).await else {
            continue;
        };
        errors += text
            .lines()
            .filter(|l| l.starts_with("rpc_server_call_duration_seconds_count{"))
            .filter(|l| !l.contains("rpc_grpc_status_code=\"0\""))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>() as u64;
    }
    errors
}

pub(crate) async fn http_text(uri: &str) -> Result<String, Error> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let body = client
        .get(uri.parse()?)
        .await?
        .into_body()
        .collect()
        .await?;
    Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
}

/// Every server call the service counted (any method, any status).
pub(crate) async fn server_calls(admin: SocketAddr) -> u64 {
    let Ok(text) = http_text(&format!("http://{admin}/metrics")).await else {
        return 0;
    };
    text.lines()
        .filter(|l| l.starts_with("rpc_server_call_duration_seconds_count{"))
        .filter(|l| l.contains("GetProduct"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}
