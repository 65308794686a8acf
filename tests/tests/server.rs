//! The server as a client sees it: health, reflection, graceful shutdown.

use std::time::Duration;

use spineledger_e2e::Harness;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[tokio::test]
async fn health_reports_serving_once_ready() {
    let harness = Harness::start().await;
    let mut health = HealthClient::new(harness.channel().await);
    for service in ["", "spineledger.v1.ClinicalRecordsService"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
    harness.stop().await;
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_spineledger_services() {
    use tokio_stream::StreamExt;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    };
    use tonic_reflection::pb::v1alpha;

    let harness = Harness::start().await;
    let mut v1 = ServerReflectionClient::new(harness.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = v1
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection v1")
        .into_inner();
    let response = responses.next().await.expect("a response").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"spineledger.v1.ClinicalRecordsService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    let mut alpha =
        v1alpha::server_reflection_client::ServerReflectionClient::new(harness.channel().await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = alpha
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    let response = responses.next().await.expect("a response").expect("ok");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected reflection response");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "spineledger.v1.ClinicalRecordsService")
    );
    harness.stop().await;
}

#[tokio::test]
async fn shutdown_drains_and_stops_the_server() {
    let harness = Harness::start().await;
    let address = harness.address();
    tokio::time::timeout(Duration::from_secs(10), harness.stop())
        .await
        .expect("the server stops promptly");
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "still listening"
    );
}
