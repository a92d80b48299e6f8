use shared::Violations;
use shared::status::{self, Precondition};

use super::*;

fn json(error: ApiError) -> (u16, serde_json::Value) {
    (
        error.http_status().as_u16(),
        serde_json::to_value(error.body()).unwrap(),
    )
}

#[test]
fn every_code_has_its_http_status() {
    let expected = [
        (Code::InvalidArgument, 400),
        (Code::OutOfRange, 400),
        (Code::Unauthenticated, 401),
        (Code::PermissionDenied, 403),
        (Code::NotFound, 404),
        (Code::AlreadyExists, 409),
        (Code::Aborted, 409),
        (Code::FailedPrecondition, 409),
        (Code::ResourceExhausted, 429),
        (Code::Internal, 500),
        (Code::Unknown, 500),
        (Code::DataLoss, 500),
        (Code::Ok, 500),
        (Code::Unimplemented, 501),
        (Code::Unavailable, 503),
        (Code::DeadlineExceeded, 504),
        (Code::Cancelled, 504),
    ];
    for (code, http) in expected {
        let error = ApiError::from(Status::new(code, "x"));
        assert_eq!(error.http_status().as_u16(), http, "{code:?}");
    }
}

#[test]
fn field_violations_become_details() {
    let mut violations = Violations::new();
    violations.add("customer_id", "is required");
    violations.add("items[0].quantity", "must be from 1 to 10000");
    let status: Status = violations.finish().unwrap_err().into();
    let (http, body) = json(ApiError::from(status));
    assert_eq!(http, 400);
    assert_eq!(
        body,
        serde_json::json!({"error": {
            "code": 400,
            "status": "INVALID_ARGUMENT",
            "message": "invalid request: customer_id: is required; items[0].quantity: must be from 1 to 10000",
            "details": [
                {"field": "customer_id", "description": "is required"},
                {"field": "items[0].quantity", "description": "must be from 1 to 10000"},
            ],
        }})
    );
}

#[test]
fn renamed_fields_show_in_details_and_message() {
    let mut violations = Violations::new();
    violations.add("customer_id", "is required");
    let status: Status = violations.finish().unwrap_err().into();
    let error = ApiError::from(status).rename_fields(|f| f.to_uppercase());
    let (_, body) = json(error);
    assert_eq!(body["error"]["details"][0]["field"], "CUSTOMER_ID");
    assert_eq!(
        body["error"]["message"],
        "invalid request: CUSTOMER_ID: is required"
    );
}

#[test]
fn precondition_violations_become_details() {
    let status = status::failed_precondition(
        "not enough stock for SKU-008",
        &[Precondition {
            kind: "STOCK",
            subject: "SKU-008".into(),
            description: "requested 4, available 3".into(),
        }],
    );
    let (http, body) = json(ApiError::from(status));
    assert_eq!(http, 409);
    assert_eq!(body["error"]["status"], "FAILED_PRECONDITION");
    assert_eq!(
        body["error"]["details"],
        serde_json::json!([{"type": "STOCK", "subject": "SKU-008", "description": "requested 4, available 3"}])
    );
}

#[test]
fn server_side_messages_never_reach_the_caller() {
    for code in [
        Code::Internal,
        Code::Unknown,
        Code::Unavailable,
        Code::DeadlineExceeded,
    ] {
        let status = Status::new(
            code,
            "tcp connect error: 10.0.0.7:50051: connection refused",
        );
        let (_, body) = json(ApiError::from(status));
        let message = body["error"]["message"].as_str().unwrap();
        assert!(!message.contains("10.0.0.7"), "{code:?}: {message}");
        assert!(body["error"].get("details").is_none());
    }
}
