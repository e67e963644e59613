//! The Rust client, typed from the same declarations as the server.

use clawgate::api::chat::{Inject, Send, Stream};
use clawgate::api::events::Subscribe;
use clawgate::api::gateway::{HealthMethod, Hello};
use clawgate::api::sessions::Get;
use clawgate::client::GatewayClient;
use clawgate::protocol::{
    ChatInjectParams, ChatSendParams, ChatStreamParams, ClientInfo, HelloParams, InjectRole,
    NoParams, RunStatus, SessionKeyParams, SubscribeParams,
};

use crate::common::start;

#[tokio::test]
async fn typed_calls_subscriptions_and_errors() {
    let gw = start(|_| {}).await;
    let client = GatewayClient::connect(&gw.ws_url(), None)
        .await
        .expect("connects");
    let hello = client
        .call::<Hello>(&HelloParams {
            client: Some(ClientInfo {
                name: "rust".into(),
                version: None,
                platform: None,
                mode: None,
            }),
        })
        .await
        .expect("hello");
    assert_eq!(hello.protocol, 2);
    assert!(hello.methods.iter().any(|m| m == "chat.send"));
    assert!(
        client
            .call::<HealthMethod>(&NoParams {})
            .await
            .expect("health")
            .ok
    );

    let mut events = client
        .subscribe::<Subscribe>(&SubscribeParams {
            events: Some(vec!["chat".into()]),
            ..Default::default()
        })
        .await
        .expect("subscribes");
    let injected = client
        .call::<Inject>(&ChatInjectParams {
            session_key: "rc".parse().expect("a valid key"),
            role: InjectRole::System,
            content: "hi".parse().expect("a valid text"),
            label: None,
            agent: None,
        })
        .await
        .expect("inject");
    let env = events
        .next()
        .await
        .expect("an event")
        .expect("typed envelope");
    assert_eq!(env.event, "chat");
    assert_eq!(env.payload["message"]["id"], injected.message_id.as_str());

    let sent = client
        .call::<Send>(&ChatSendParams {
            session_key: Some("rc".parse().expect("a valid key")),
            message: "typed".parse().expect("a valid text"),
            idempotency_key: None,
            model: None,
            agent: None,
            mode: None,
        })
        .await
        .expect("send");
    assert_eq!(sent.status, RunStatus::Started);
    let mut stream = client
        .subscribe::<Stream>(&ChatStreamParams {
            session_key: Some("rc2".parse().expect("a valid key")),
            message: Some("streamed".parse().expect("a valid text")),
            idempotency_key: None,
            model: None,
            agent: None,
            mode: None,
            run_id: None,
        })
        .await
        .expect("stream");
    loop {
        let env = stream.next().await.expect("item").expect("typed");
        if env.payload["state"] == "final" {
            assert_eq!(env.payload["message"]["content"], "Echo: streamed");
            break;
        }
    }

    match client
        .call::<Get>(&SessionKeyParams {
            key: "missing".parse().expect("a valid key"),
        })
        .await
    {
        Err(jsonrpsee::core::client::Error::Call(obj)) => {
            assert_eq!(obj.code(), -32022);
            assert!(obj.data().is_some_and(|d| d.get().contains("not_found")));
        }
        other => panic!("expected a call error, got {other:?}"),
    }
}
