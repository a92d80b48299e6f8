//! The payments service through its generated client, on a real server in-process.

use contracts::common::v1::Money;
use contracts::payments::v1::payment_service_client::PaymentServiceClient;
use contracts::payments::v1::{
    ChargeRequest, GetPaymentRequest, ListPaymentsRequest, PaymentStatus, RefundRequest,
};
use shared::testing::{TestServer, violated_fields};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

type Client = PaymentServiceClient<Channel>;

async fn spawn() -> (TestServer, Client) {
    let env = shared::testing::env([]);
    let config = payments::Config::from_env(&env).expect("valid test config");
    let server = TestServer::start(payments::build(config).await.expect("server binds"));
    let client = PaymentServiceClient::new(server.channel.clone());
    (server, client)
}

fn charge(request_id: &str, order_id: &str, cents: i64, card_token: &str) -> ChargeRequest {
    ChargeRequest {
        request_id: request_id.into(),
        order_id: order_id.into(),
        customer_id: "cus_42".into(),
        amount: Some(Money {
            currency_code: "USD".into(),
            amount_minor: cents,
        }),
        card_token: card_token.into(),
    }
}

#[tokio::test]
async fn charge_captures_and_a_retry_returns_the_same_payment() {
    let (_server, mut client) = spawn().await;
    let first = client
        .charge(charge("req-1", "ord_1", 2400, "tok_visa"))
        .await
        .unwrap()
        .into_inner();
    let payment = first.payment.unwrap();
    assert_eq!(payment.status(), PaymentStatus::Captured);
    assert!(payment.payment_id.starts_with("pay_"));
    assert_eq!(payment.amount.as_ref().unwrap().amount_minor, 2400);

    let retry = client
        .charge(charge("req-1", "ord_1", 2400, "tok_visa"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retry.payment.unwrap(), payment);
    let listed = client
        .list_payments(ListPaymentsRequest {
            order_id: "ord_1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.payments.len(),
        1,
        "a retried charge never charges twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_retries_charge_once() {
    let (_server, client) = spawn().await;
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .charge(charge("race", "ord_r", 100, "tok_visa"))
                    .await
            })
        })
        .collect();
    let mut ids = Vec::new();
    for call in calls {
        ids.push(
            call.await
                .unwrap()
                .unwrap()
                .into_inner()
                .payment
                .unwrap()
                .payment_id,
        );
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
}

#[tokio::test]
async fn a_declined_card_is_failed_precondition_with_the_payment_id() {
    let (_server, mut client) = spawn().await;
    let declined = client
        .charge(charge("req-d", "ord_d", 500, "tok_declined"))
        .await
        .unwrap_err();
    assert_eq!(declined.code(), Code::FailedPrecondition);
    let info = declined.get_details_error_info().expect("ErrorInfo detail");
    assert_eq!(info.reason, "CARD_DECLINED");
    assert_eq!(info.domain, "payments.v1");
    let payment_id = info.metadata["payment_id"].clone();

    let recorded = client
        .get_payment(GetPaymentRequest {
            payment_id: payment_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        recorded.into_inner().payment.unwrap().status(),
        PaymentStatus::Declined
    );
    let again = client
        .charge(charge("req-d", "ord_d", 500, "tok_declined"))
        .await
        .unwrap_err();
    assert_eq!(
        again.get_details_error_info().unwrap().metadata["payment_id"],
        payment_id
    );

    let refund = RefundRequest {
        payment_id,
        reason: String::new(),
    };
    assert_eq!(
        client.refund(refund).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
}

#[tokio::test]
async fn refund_is_idempotent() {
    let (_server, mut client) = spawn().await;
    let payment = client
        .charge(charge("req-r", "ord_r", 900, "tok_visa"))
        .await
        .unwrap();
    let payment_id = payment.into_inner().payment.unwrap().payment_id;
    let refund = RefundRequest {
        payment_id: payment_id.clone(),
        reason: "order failed".into(),
    };
    let refunded = client
        .refund(refund.clone())
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(refunded.status(), PaymentStatus::Refunded);
    assert_eq!(refunded.status_reason, "order failed");
    let again = client
        .refund(refund)
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(again, refunded);
}

#[tokio::test]
async fn charge_errors() {
    let (_server, mut client) = spawn().await;
    let mut bad = charge("", "ord_1", 0, "");
    bad.amount.as_mut().unwrap().currency_code = "dollars".into();
    assert_eq!(
        violated_fields(&client.charge(bad).await.unwrap_err()),
        [
            "request_id",
            "amount.currency_code",
            "amount.amount_minor",
            "card_token"
        ]
    );
    let mut no_amount = charge("req-x", "ord_1", 1, "tok_visa");
    no_amount.amount = None;
    assert_eq!(
        violated_fields(&client.charge(no_amount).await.unwrap_err()),
        ["amount"]
    );

    client
        .charge(charge("req-1", "ord_1", 100, "tok_visa"))
        .await
        .unwrap();
    let reused = client
        .charge(charge("req-1", "ord_1", 200, "tok_visa"))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn lookups_and_their_errors() {
    let (_server, mut client) = spawn().await;
    let missing = client
        .get_payment(GetPaymentRequest {
            payment_id: "pay_nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let blank = client
        .get_payment(GetPaymentRequest {
            payment_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&blank), ["payment_id"]);
    let refund = RefundRequest {
        payment_id: "pay_nope".into(),
        reason: String::new(),
    };
    assert_eq!(
        client.refund(refund).await.unwrap_err().code(),
        Code::NotFound
    );
    let long = RefundRequest {
        payment_id: "pay_x".into(),
        reason: "x".repeat(501),
    };
    assert_eq!(
        violated_fields(&client.refund(long).await.unwrap_err()),
        ["reason"]
    );
    let paging = ListPaymentsRequest {
        page_size: -3,
        ..Default::default()
    };
    assert_eq!(
        violated_fields(&client.list_payments(paging).await.unwrap_err()),
        ["page_size"]
    );
}

#[tokio::test]
async fn list_payments_pages_in_creation_order() {
    let (_server, mut client) = spawn().await;
    for i in 0..5 {
        client
            .charge(charge(
                &format!("req-{i}"),
                &format!("ord_{i}"),
                100,
                "tok_visa",
            ))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_payments(ListPaymentsRequest {
                page_size: 2,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.payments.into_iter().map(|p| p.request_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, ["req-0", "req-1", "req-2", "req-3", "req-4"]);
}

#[tokio::test]
async fn health_and_reflection() {
    let (server, _client) = spawn().await;
    for service in ["", "payments.v1.PaymentService"] {
        let request = HealthCheckRequest {
            service: service.into(),
        };
        let status = server
            .health()
            .check(request)
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    for report in [
        shared::testing::reflection_v1(server.channel.clone()).await,
        shared::testing::reflection_v1alpha(server.channel.clone()).await,
    ] {
        assert!(
            report
                .services
                .contains(&"payments.v1.PaymentService".to_owned())
        );
        assert!(
            !report
                .services
                .contains(&"inventory.v1.InventoryService".to_owned())
        );
        assert!(report.files.contains("payments/v1/payments.proto"));
        assert!(report.files.contains("google/protobuf/timestamp.proto"));
    }
}
