//! Real peers through sluice: a tonic gRPC client and server over h2c, and a
//! WebSocket client and server (tokio-tungstenite).

use crate::support::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test]
async fn grpc_unary_and_streaming_over_h2c() {
    let (reporter, grpc_addr) = start_grpc_health().await;

    let m = Manifests::new();
    m.write(
        "grpc.yaml",
        &(service_yaml("grpc", &[grpc_addr])
            + &ingress_yaml(
                "grpc",
                None,
                &[("nginx.ingress.kubernetes.io/backend-protocol", "GRPC")],
                &[("/", "Prefix", "grpc")],
            )),
    );
    let sluice = start_sluice(m.path(), "").await;
    let channel = tonic::transport::Endpoint::try_from(format!("http://{}", sluice.http_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);

    // Unary.
    let reply = client
        .check(HealthCheckRequest {
            service: "shop.Cart".into(),
        })
        .await
        .unwrap();
    assert_eq!(reply.get_ref().status(), ServingStatus::Serving);

    // A gRPC error travels in trailers (here a trailers-only response).
    let status = client
        .check(HealthCheckRequest {
            service: "no.Such".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    // Server streaming: an update made while the stream is open reaches the client.
    let mut stream = client
        .watch(HealthCheckRequest {
            service: "shop.Cart".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    reporter
        .set_service_status("shop.Cart", tonic_health::ServingStatus::NotServing)
        .await;
    let second = stream.message().await.unwrap().unwrap();
    assert_eq!(second.status(), ServingStatus::NotServing);
}

#[tokio::test]
async fn websocket_echo_through_sluice() {
    let ws_addr = start_websocket_echo().await;
    let m = Manifests::new();
    m.write(
        "ws.yaml",
        &(service_yaml("ws", &[ws_addr])
            + &ingress_yaml("ws", None, &[], &[("/ws", "Prefix", "ws")])),
    );
    let sluice = start_sluice(m.path(), "").await;

    let (mut ws, response) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws/chat", sluice.http_addr))
            .await
            .unwrap();
    assert_eq!(response.status(), 101);
    for i in 0..5 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("hello {i}"))
        );
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    ws.close(None).await.unwrap();
}
