//! The envelope: one published event as the JSON every subscriber receives, built once.

use std::sync::Arc;

use serde::Serialize;

use crate::protocol::{Event, GapEvent, GapReason};
use crate::util::now_ms;

/// One published event, serialized once.
#[derive(Debug)]
pub struct Envelope {
    /// Gateway-wide sequence number (for control events, the latest one published).
    pub seq: u64,
    /// The event's name.
    pub event: String,
    /// The session the event is about, when there is one.
    pub session_key: Option<String>,
    /// The envelope as JSON: `{epoch, seq, event, ts, sessionKey?, payload}`.
    pub json: Box<str>,
    /// A control event (`tick`, `gap`, `shutdown`): no `seq` of its own.
    pub control: bool,
    /// The agent run the event belongs to, when there is one.
    pub run_id: Option<Box<str>>,
    /// The run's last event (`final`, `aborted`, `error`).
    pub ends_run: bool,
    /// The payload's state (`chat` payloads: `delta`, `final`...), tagged when publishing so
    /// `chat.<state>` filters compare strings instead of reading the JSON.
    pub state: Option<Box<str>>,
}

/// An event published on a node of a cluster, before the shared stream gives it its `seq`.
#[derive(Debug, Clone)]
pub struct Relayed {
    /// The event's name.
    pub event: String,
    /// The session it is about.
    pub session_key: Option<String>,
    /// The run it belongs to.
    pub run_id: Option<Box<str>>,
    /// The run's last event.
    pub ends_run: bool,
    /// The payload's state (see [`Envelope::state`]).
    pub state: Option<Box<str>>,
    /// When it was published (ms).
    pub ts: u64,
    /// The payload, serialized once by the node that published it.
    pub payload: String,
}

/// The agent run an event belongs to, given when publishing it.
#[derive(Debug, Clone, Copy)]
pub struct RunTag<'a> {
    /// The run's id.
    pub run_id: &'a str,
    /// Whether this is the run's last event.
    pub ends_run: bool,
}

/// Builds an envelope's JSON up to its trailing `seq`, which [`close`] appends: the `seq` of
/// an ordinary event is only known under the hub's lock, and the rest is built before it.
pub(super) fn head(epoch: &str, event: &str, session_key: Option<&str>, payload: &str) -> String {
    head_at(epoch, event, session_key, payload, now_ms())
}

/// [`head`] of an event published at `ts`.
fn head_at(epoch: &str, event: &str, session_key: Option<&str>, payload: &str, ts: u64) -> String {
    let mut json = String::with_capacity(payload.len() + event.len() + 128);
    json.push_str("{\"epoch\":\"");
    json.push_str(epoch);
    json.push_str("\",\"event\":");
    push_json_str(&mut json, event);
    json.push_str(",\"ts\":");
    json.push_str(&ts.to_string());
    if let Some(key) = session_key {
        json.push_str(",\"sessionKey\":");
        push_json_str(&mut json, key);
    }
    json.push_str(",\"payload\":");
    json.push_str(payload);
    json.push_str(",\"seq\":");
    json
}

/// Ends a [`head`] with its `seq`.
pub(super) fn close(json: &mut String, seq: u64) {
    json.push_str(&seq.to_string());
    json.push('}');
}

/// The envelope of an event relayed through the shared stream (cluster mode), with `seq`.
pub(super) fn from_relayed(epoch: &str, seq: u64, r: &Relayed) -> Envelope {
    let mut json = head_at(epoch, &r.event, r.session_key.as_deref(), &r.payload, r.ts);
    close(&mut json, seq);
    Envelope {
        seq,
        event: r.event.clone(),
        session_key: r.session_key.clone(),
        json: json.into_boxed_str(),
        control: false,
        run_id: r.run_id.clone(),
        ends_run: r.ends_run,
        state: r.state.clone(),
    }
}

/// A control envelope (`tick`, `gap`, `shutdown`) carrying `seq`, a `seq` already published.
pub(super) fn control(
    epoch: &str,
    event: &str,
    payload: &impl Serialize,
    seq: u64,
) -> Arc<Envelope> {
    let payload = serde_json::to_string(payload).unwrap_or_else(|_| "{}".into());
    let mut json = head(epoch, event, None, &payload);
    close(&mut json, seq);
    Arc::new(Envelope {
        seq,
        event: event.to_string(),
        session_key: None,
        json: json.into_boxed_str(),
        control: true,
        run_id: None,
        ends_run: false,
        state: None,
    })
}

/// The number of seqs in the inclusive range `from..=to` (at least one).
pub(super) fn gap_len(from_seq: u64, to_seq: u64) -> u64 {
    to_seq.saturating_sub(from_seq).saturating_add(1)
}

/// A `gap {lagged}` for the inclusive range lost; its `seq` is the last one lost, so a
/// client resuming from it misses nothing after the gap.
pub(super) fn lag_gap(epoch: &str, from_seq: u64, to_seq: u64) -> Arc<Envelope> {
    crate::metrics::events_dropped("lagged", gap_len(from_seq, to_seq));
    let gap = GapEvent {
        from_seq,
        to_seq,
        reason: GapReason::Lagged,
    };
    control(epoch, GapEvent::NAME, &gap, to_seq)
}

/// Appends `s` as a JSON string literal.
fn push_json_str(out: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn parse(json: &str) -> Value {
        serde_json::from_str(json).expect("envelope is JSON")
    }

    #[test]
    fn head_and_close_make_the_whole_envelope() {
        let mut json = head("ep", "chat", Some("main"), r#"{"x":1}"#);
        close(&mut json, 42);
        let v = parse(&json);
        assert_eq!(v["epoch"], "ep");
        assert_eq!(v["event"], "chat");
        assert_eq!(v["sessionKey"], "main");
        assert_eq!(v["payload"], json!({"x": 1}));
        assert_eq!(v["seq"], 42);
        assert!(v["ts"].as_u64().is_some_and(|ts| ts > 0));
        let keys: Vec<&str> = v
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(keys.len(), 6, "{keys:?}");
    }

    #[test]
    fn names_and_keys_are_escaped_and_a_missing_key_is_left_out() {
        let mut json = head("ep", "a\"b", Some("k\\\n"), "null");
        close(&mut json, 1);
        let v = parse(&json);
        assert_eq!(v["event"], "a\"b");
        assert_eq!(v["sessionKey"], "k\\\n");

        let mut json = head("ep", "tick", None, "{}");
        close(&mut json, 0);
        assert!(parse(&json).get("sessionKey").is_none());
    }

    #[test]
    fn a_control_envelope_carries_a_seq_already_published() {
        let env = control("ep", "tick", &json!({"ts": 5}), 7);
        assert!(env.control);
        assert_eq!(env.seq, 7);
        assert_eq!(env.event, "tick");
        assert!(env.session_key.is_none() && env.run_id.is_none() && !env.ends_run);
        let v = parse(&env.json);
        assert_eq!(v["seq"], 7);
        assert_eq!(v["payload"], json!({"ts": 5}));
    }

    #[test]
    fn a_lag_gap_carries_the_last_seq_lost() {
        let env = lag_gap("ep", 3, 9);
        assert_eq!(env.event, GapEvent::NAME);
        assert_eq!(
            env.seq, 9,
            "resuming from the gap's seq misses nothing after it"
        );
        assert_eq!(
            parse(&env.json)["payload"],
            json!({"fromSeq": 3, "toSeq": 9, "reason": "lagged"})
        );
    }
}
