//! The connection of `clawgate chat`: connecting with a timeout, the event cursor `{epoch, seq}`,
//! subscribing to one session's `chat` events from that cursor, and the reconnect backoff.

use std::sync::Arc;
use std::time::Duration;

use jsonrpsee::core::client::{Error as ClientError, Subscription};
use serde_json::{Value, json};

use crate::client::GatewayClient;
use crate::protocol::HelloResult;

/// How long one connection attempt or one call may take before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the event stream was: the gateway's lifetime and the last `seq` received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The lifetime (`epoch` of the envelopes).
    pub epoch: String,
    /// The last `seq` received (control events included).
    pub seq: u64,
}

impl Cursor {
    /// Moves to an envelope's `{epoch, seq}` (of any event, control events too).
    pub fn advance(&mut self, envelope: &Value) {
        if let Some(epoch) = envelope["epoch"].as_str()
            && epoch != self.epoch
        {
            self.epoch = epoch.to_string();
            self.seq = 0;
        }
        if let Some(seq) = envelope["seq"].as_u64() {
            self.seq = self.seq.max(seq);
        }
    }
}

/// Why a call failed.
#[derive(Debug)]
pub enum Failure {
    /// The gateway answered with an error: the call is done, and it failed.
    Refused {
        /// The JSON-RPC error code.
        code: i32,
        /// Its message.
        message: String,
    },
    /// The connection failed or the call took too long: it may be tried again.
    Lost(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused { code, message } => write!(f, "{message} ({code})"),
            Failure::Lost(why) => write!(f, "{why}"),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::Call(obj) => Failure::Refused {
                code: obj.code(),
                message: obj.message().to_string(),
            },
            other => Failure::Lost(other.to_string()),
        }
    }
}

/// Connects to `url` (a bounded wait); `tls` says how a `wss://` gateway is trusted.
pub async fn connect(
    url: &str,
    token: Option<&str>,
    tls: &crate::tls::TlsOptions,
) -> Result<Arc<GatewayClient>, Failure> {
    match tokio::time::timeout(CALL_TIMEOUT, GatewayClient::connect_with(url, token, tls)).await {
        Ok(Ok(client)) => Ok(Arc::new(client)),
        Ok(Err(err)) => Err(Failure::Lost(err.to_string())),
        Err(_) => Err(Failure::Lost("the connection attempt timed out".into())),
    }
}

/// Calls `method` with `params` (a bounded wait).
pub async fn call(client: &GatewayClient, method: &str, params: Value) -> Result<Value, Failure> {
    match tokio::time::timeout(CALL_TIMEOUT, client.call_raw(method, Some(params))).await {
        Ok(result) => result.map_err(Failure::from),
        Err(_) => Err(Failure::Lost(format!("{method} timed out"))),
    }
}

/// Introduces the chat; the cursor to subscribe from now without missing anything.
pub async fn hello(client: &GatewayClient) -> Result<Cursor, Failure> {
    let params = json!({"client": {"name": "clawgate-chat", "version": env!("CARGO_PKG_VERSION"), "mode": "cli"}});
    let value = call(client, "gateway.hello", params).await?;
    let hello: HelloResult = serde_json::from_value(value)
        .map_err(|e| Failure::Lost(format!("unexpected gateway.hello answer: {e}")))?;
    Ok(Cursor {
        epoch: hello.snapshot.epoch,
        seq: hello.snapshot.seq,
    })
}

/// Subscribes to the `chat` events of `session` after `cursor` (its epoch tells a restart).
pub async fn subscribe(
    client: &GatewayClient,
    session: &str,
    cursor: &Cursor,
) -> Result<Subscription<Value>, Failure> {
    let params = json!({
        "events": ["chat"],
        "sessionKey": session,
        "afterSeq": cursor.seq,
        "epoch": cursor.epoch,
    });
    let sub = client.subscribe_raw("events.subscribe", Some(params), "events.unsubscribe");
    match tokio::time::timeout(CALL_TIMEOUT, sub).await {
        Ok(result) => result.map_err(Failure::from),
        Err(_) => Err(Failure::Lost("events.subscribe timed out".into())),
    }
}

/// The wait before reconnect attempt `attempt` (1, 2, ...): 250 ms doubling to 5 s.
pub fn backoff(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(5);
    Duration::from_millis(250u64.saturating_mul(1 << exp)).min(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_bound() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(5), Duration::from_secs(4));
        assert_eq!(backoff(6), Duration::from_secs(5));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn the_cursor_follows_envelopes_and_a_new_epoch() {
        let mut c = Cursor {
            epoch: "a".into(),
            seq: 5,
        };
        c.advance(&json!({"epoch": "a", "seq": 9}));
        assert_eq!(c.seq, 9);
        c.advance(&json!({"epoch": "a", "seq": 3}));
        assert_eq!(c.seq, 9);
        c.advance(&json!({"epoch": "b", "seq": 2}));
        assert_eq!(
            c,
            Cursor {
                epoch: "b".into(),
                seq: 2
            }
        );
        c.advance(&json!({"nothing": true}));
        assert_eq!(c.seq, 2);
    }
}
