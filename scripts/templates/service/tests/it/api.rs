//! The {{name}} service through its generated client, on a real server in-process.

use contracts::{{name}}::v1::GetItemRequest;
use contracts::{{name}}::v1::{{name}}_service_client::{{Name}}ServiceClient;
use shared::testing::TestServer;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

type Client = {{Name}}ServiceClient<Channel>;

async fn spawn() -> (TestServer, Client) {
    let env = shared::testing::env([]);
    let config = {{name}}::Config::from_env(&env).expect("valid test config");
    let server = TestServer::start({{name}}::build(config).await.expect("server binds"));
    let client = {{Name}}ServiceClient::new(server.channel.clone());
    (server, client)
}

fn get(id: &str) -> GetItemRequest {
    GetItemRequest { item_id: id.into() }
}

#[tokio::test]
async fn get_item_returns_the_example_item() {
    let (_server, mut client) = spawn().await;
    let item = client
        .get_item(get("item-1"))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(item.item_id, "item-1");
    assert!(!item.display_name.is_empty());
    assert!(item.create_time.is_some());
}

#[tokio::test]
async fn an_invalid_id_is_invalid_argument_naming_the_field() {
    let (_server, mut client) = spawn().await;
    let status = client.get_item(get("")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let fields: Vec<_> = status
        .get_details_bad_request()
        .expect("BadRequest detail")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["item_id"]);
}

#[tokio::test]
async fn an_unknown_item_is_not_found_with_resource_info() {
    let (_server, mut client) = spawn().await;
    let status = client.get_item(get("item-404")).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let info = status.get_details_resource_info().expect("ResourceInfo detail");
    assert_eq!(info.resource_name, "item-404");
}

#[tokio::test]
async fn health_and_reflection() {
    let (server, _client) = spawn().await;
    for service in ["", "{{name}}.v1.{{Name}}Service"] {
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
                .contains(&"{{name}}.v1.{{Name}}Service".to_owned())
        );
        assert!(report.files.contains("{{name}}/v1/{{name}}.proto"));
        assert!(report.files.contains("google/protobuf/timestamp.proto"));
    }
}
