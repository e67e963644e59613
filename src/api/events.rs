//! `events.subscribe` / `events.unsubscribe`: the hub as a JSON-RPC subscription.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::error::{Error, Result};
use crate::events::{Delivery, Filter, Outlet, SubscribeError, Subscriber};
use crate::gateway::{Ctx as CallContext, Table as MethodTable};
use crate::protocol::{EventEnvelope, SubscribeParams};
use crate::rpc::{
    DuplicateMethod, Example, Scope, Subscription, SubscriptionSink, SubscriptionTask,
};

/// `events.subscribe`.
pub struct Subscribe;
impl Subscription for Subscribe {
    const NAME: &'static str = "events.subscribe";
    const UNSUBSCRIBE: &'static str = "events.unsubscribe";
    const NOTIFICATION: &'static str = "events.event";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str = "Streams event envelopes matching a filter, optionally replaying those after afterSeq first.";
    type Params = SubscribeParams;
    type Item = EventEnvelope;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "sessions and chat of one session, resuming",
            params: json!({"events": ["sessions.*", "chat"], "sessionKey": "main", "afterSeq": 41, "epoch": "5f0c..."}),
            result: json!("3c5a1f0e9b2d4a77"),
        }]
    }
}

/// How long a node waits to consume the shared stream as far as a client's `afterSeq`.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);

/// Registers `events.subscribe` and `events.unsubscribe`.
pub fn register(table: &mut MethodTable) -> Result<(), DuplicateMethod> {
    table.subscription::<Subscribe, _, _>(|ctx: CallContext, params: SubscribeParams| async move {
        // Cluster mode: a client resuming here from another node may be ahead of what this
        // node has consumed of the shared stream; it is given a moment to catch up.
        let hub = ctx.gateway.hub();
        if let Some(after) = params.after_seq
            && hub.relayed()
            && after > hub.seq()
            && params.epoch.as_deref() == Some(&*hub.epoch())
        {
            hub.wait_for_seq(after, CATCH_UP).await;
        }
        subscribe(ctx, params)
    })
}

fn subscribe(ctx: CallContext, params: SubscribeParams) -> Result<SubscriptionTask> {
    if params.after_seq.is_some_and(|s| s > 0) && params.epoch.is_none() {
        return Err(Error::invalid_params(
            "epoch",
            "afterSeq needs the epoch it belongs to (from gateway.hello or any envelope): without it a restart would go unnoticed",
        ));
    }
    let filter = Filter::new(
        params.events.as_deref(),
        params.session_key.map(String::from),
    )
    .map_err(|path| {
        Error::invalid_params(
            path,
            "expected an event name or a prefix ending in `.*` (\"sessions.*\")",
        )
    })?;
    let sub = ctx
        .gateway
        .hub()
        .subscribe(filter, params.after_seq, params.epoch.as_deref())
        .map_err(|err| match err {
            SubscribeError::AheadOfLatest { .. } => {
                Error::invalid_params("afterSeq", err.to_string())
            }
        })?;
    Ok(Box::new(move |sink: SubscriptionSink| {
        Box::pin(pump(sub, sink))
    }))
}

/// Delivers a hub subscriber's stream into a subscription until either ends.
///
/// What is queued (the replay, or what piled up while the connection was full) is sent from
/// here, waiting for room; once caught up, the hub writes into the connection itself and this
/// task only waits for the end (unsubscribe, the run's last event, or shutdown).
pub(crate) async fn pump(mut sub: Subscriber, sink: SubscriptionSink) {
    let sink = Arc::new(sink);
    let outlet: Arc<dyn Outlet> = sink.clone();
    loop {
        sub.go_direct(&outlet);
        let delivery = tokio::select! {
            biased;
            _ = sink.closed() => return,
            d = sub.next() => d,
        };
        match delivery {
            Some(Delivery::Event(env)) => {
                if sink.send_raw(&env.json).await.is_err() {
                    return;
                }
            }
            Some(Delivery::Shutdown(env)) => {
                sink.send_final(&env.json, Duration::from_secs(2)).await;
                return;
            }
            None => return,
        }
    }
}
