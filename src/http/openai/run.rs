//! One chat completion: the run it starts (in the session the header names, or in an ephemeral
//! one seeded with the request's earlier messages) through the same domain functions as
//! `chat.send`, and its translation into a `chat.completion` or a stream of
//! `chat.completion.chunk`s.
//!
//! The run's `chat` payloads are read from the hub (subscribed before the send, so nothing is
//! missed) by a task of its own, which outlives the request: a client that hangs up has its
//! ephemeral run aborted, and the ephemeral session is discarded once the run is over whatever
//! happened. The streaming path parses each delta envelope once (borrowing its text) and writes
//! each chunk with one allocation, from a prefix built once per request.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::errors::ApiError;
use super::request::{ChatRequest, MODEL_PREFIX};
use crate::agent::SendRequest;
use crate::events::{Delivery, Filter, Subscriber};
use crate::gateway::Gateway;
use crate::protocol::{ChatEvent, Event, SendMode, Usage};
use crate::rpc::http::{Reply, event_stream, json_response, whole};

/// The prefix of the keys of ephemeral sessions.
pub const EPHEMERAL_PREFIX: &str = "openai:";

/// Chunks buffered for a slow streaming client before the run's reader waits for it.
const STREAM_BUFFER: usize = 256;

/// What a completion answers when it is over.
#[derive(Debug, Default)]
struct Answer {
    /// The text of every turn, joined with `\n\n`.
    text: String,
    /// The run's stop reason (`final`), mapped.
    finish_reason: &'static str,
    /// Tokens, when the provider reported them.
    usage: Option<Usage>,
    /// The run failed: the provider's error.
    error: Option<String>,
}

/// The fields of a `chat` payload the door reads (the rest is skipped, not kept).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    #[serde(borrow)]
    state: Cow<'a, str>,
    #[serde(default)]
    turn: Option<u32>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default, borrow)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    message: Option<FinalMessage<'a>>,
    #[serde(default)]
    error: Option<RunFailure<'a>>,
}

#[derive(Deserialize)]
struct FinalMessage<'a> {
    #[serde(borrow)]
    content: Cow<'a, str>,
}

#[derive(Deserialize)]
struct RunFailure<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    message: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    payload: Payload<'a>,
}

/// OpenAI's `finish_reason` for a run's stop reason.
pub fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "max_turns" => "length",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// OpenAI's `usage` for a run's usage (cache reads and writes are part of the prompt).
fn usage_json(usage: &Usage) -> serde_json::Value {
    let prompt = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens;
    let mut value = json!({
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
    });
    if usage.cache_read_tokens > 0 {
        value["prompt_tokens_details"] = json!({"cached_tokens": usage.cache_read_tokens});
    }
    value
}

/// Joins the text of the turns as they come: `\n\n` between turns that have text.
#[derive(Default)]
struct Joiner {
    turn: Option<u32>,
    any: bool,
}

impl Joiner {
    /// The separator to put before text of `turn`, if any.
    fn before(&mut self, turn: Option<u32>) -> &'static str {
        let sep = if self.any && turn != self.turn {
            "\n\n"
        } else {
            ""
        };
        self.turn = turn;
        self.any = true;
        sep
    }
}

/// A run started for a completion, with its subscription.
struct Started {
    sub: Subscriber,
    run_id: String,
    session_key: String,
    ephemeral: bool,
}

/// Starts the run `req` asks for, in `session` (the header's) or in an ephemeral session.
async fn start(
    gateway: &Arc<Gateway>,
    req: &mut ChatRequest,
    session: Option<String>,
) -> Result<Started, ApiError> {
    let ephemeral = session.is_none();
    let session_key = match session {
        Some(key) => key,
        None => {
            let earlier = std::mem::take(&mut req.earlier);
            gateway
                .store()
                .create_ephemeral(EPHEMERAL_PREFIX, &req.agent, earlier)
                .await?
                .key
        }
    };
    let discard = |gateway: &Arc<Gateway>, key: &str| {
        if ephemeral {
            let (gateway, key) = (gateway.clone(), key.to_string());
            tokio::spawn(async move {
                let _ = gateway.store().discard(&key).await;
            });
        }
    };
    // Subscribed before sending, so no payload of the run can be missed.
    let filter = Filter::new(
        Some(&[ChatEvent::NAME.to_string()]),
        Some(session_key.clone()),
    )
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            e,
        )
    })?;
    let mut sub = match gateway.hub().subscribe(filter, None, None) {
        Ok(sub) => sub,
        Err(e) => {
            discard(gateway, &session_key);
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
                e.to_string(),
            ));
        }
    };
    let request = SendRequest {
        session_key: session_key.clone(),
        message: req.prompt.as_str().to_string(),
        idempotency_key: None,
        model: None,
        agent: Some(req.agent.clone()),
        // A session already running (or with runs waiting) is busy: 409, nothing queued.
        mode: if ephemeral {
            SendMode::Queue
        } else {
            SendMode::Reject
        },
    };
    let outcome = match gateway.agent().start(gateway, request).await {
        Ok(outcome) => outcome,
        Err(err) => {
            discard(gateway, &session_key);
            return Err(err.into());
        }
    };
    sub.only_run(&outcome.run_id);
    Ok(Started {
        sub,
        run_id: outcome.run_id,
        session_key,
        ephemeral,
    })
}

/// Serves `POST /v1/chat/completions` once the request is checked.
pub async fn complete(
    gateway: Arc<Gateway>,
    mut req: ChatRequest,
    session: Option<String>,
) -> Response<Reply> {
    let started = match start(&gateway, &mut req, session).await {
        Ok(s) => s,
        Err(err) => return whole(err.response()),
    };
    let id = format!("chatcmpl-{}", started.run_id);
    let model = format!("{MODEL_PREFIX}{}", req.agent);
    let created = crate::util::now_ms() / 1000;
    let headers = [
        ("x-clawgate-run-id", started.run_id.clone()),
        ("x-clawgate-session-key", started.session_key.clone()),
    ];
    let mut resp = if req.stream {
        stream(gateway, started, &id, &model, created, req.include_usage).await
    } else {
        let (tx, rx) = oneshot::channel();
        tokio::spawn(drive_whole(gateway, started, tx));
        match rx.await {
            Ok(answer) => whole_answer(answer, &id, &model, created),
            Err(_) => whole(
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal_error",
                    "the run's reader ended without an answer",
                )
                .response(),
            ),
        }
    };
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, value);
        }
    }
    resp
}

/// The `chat.completion` of a finished run (502 when it failed).
fn whole_answer(answer: Answer, id: &str, model: &str, created: u64) -> Response<Reply> {
    if let Some(error) = answer.error {
        return whole(ApiError::provider(error).response());
    }
    let mut body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer.text},
            "logprobs": null,
            "finish_reason": answer.finish_reason,
        }],
    });
    if let Some(usage) = &answer.usage {
        body["usage"] = usage_json(usage);
    }
    whole(json_response(StatusCode::OK, body.to_string()))
}

/// What one delivery of the run's stream says.
enum Step<'a> {
    /// New text of `turn`.
    Delta(Option<u32>, Cow<'a, str>),
    /// The run ended; its answer's last parts.
    End {
        finish_reason: &'static str,
        usage: Option<Usage>,
        last_text: Option<Cow<'a, str>>,
        error: Option<String>,
    },
    /// Nothing for the client.
    Skip,
    /// Events were lost (the reader fell behind).
    Lost,
}

/// Reads one envelope of the run.
fn step(json: &str) -> Step<'_> {
    let env: Envelope<'_> = match serde_json::from_str(json) {
        Ok(env) => env,
        Err(_) => {
            if json.contains("\"event\":\"gap\"") {
                return Step::Lost;
            }
            return Step::Skip;
        }
    };
    if env.event != ChatEvent::NAME {
        return Step::Skip;
    }
    let p = env.payload;
    match p.state.as_ref() {
        "delta" => match p.text {
            Some(text) if !text.is_empty() => Step::Delta(p.turn, text),
            _ => Step::Skip,
        },
        "final" => Step::End {
            finish_reason: finish_reason(p.stop_reason.as_deref().unwrap_or("end_turn")),
            usage: p.usage,
            last_text: p.message.map(|m| m.content),
            error: None,
        },
        "aborted" => Step::End {
            finish_reason: "stop",
            usage: None,
            last_text: None,
            error: None,
        },
        "error" => Step::End {
            finish_reason: "stop",
            usage: None,
            last_text: None,
            error: Some(match p.error {
                Some(e) => format!("the agent's provider failed ({}): {}", e.kind, e.message),
                None => "the run failed".to_string(),
            }),
        },
        _ => Step::Skip,
    }
}

/// Discards an ephemeral run's session once the run is over.
async fn finish_ephemeral(gateway: &Arc<Gateway>, started: &Started) {
    if !started.ephemeral {
        return;
    }
    gateway.agent().finished(&started.run_id).await;
    if let Err(err) = gateway.store().discard(&started.session_key).await {
        tracing::warn!(session = %started.session_key, %err, "cannot discard an ephemeral session");
    }
}

/// Reads the run to its end for a whole answer; a client that hangs up first aborts an
/// ephemeral run.
async fn drive_whole(gateway: Arc<Gateway>, mut started: Started, mut tx: oneshot::Sender<Answer>) {
    let mut answer = Answer {
        finish_reason: "stop",
        ..Default::default()
    };
    let mut joiner = Joiner::default();
    // Where the last turn's text starts in `answer.text`, to put the final message in place of
    // deltas lost to a gap.
    let mut last_start = 0;
    let mut lost = false;
    let mut hung_up = false;
    loop {
        let delivery = tokio::select! {
            biased;
            _ = tx.closed(), if !hung_up => {
                hung_up = true;
                if started.ephemeral {
                    let _ = gateway.agent().abort(&gateway, Some(&started.run_id), None).await;
                    continue;
                }
                return;
            }
            d = started.sub.next() => d,
        };
        let Some(Delivery::Event(env)) = delivery else {
            answer.error = Some("the gateway is shutting down; the run did not finish".into());
            break;
        };
        match step(&env.json) {
            Step::Delta(turn, text) => {
                let sep = joiner.before(turn);
                if !sep.is_empty() {
                    answer.text.push_str(sep);
                    last_start = answer.text.len();
                }
                answer.text.push_str(&text);
            }
            Step::End {
                finish_reason,
                usage,
                last_text,
                error,
            } => {
                if lost && let Some(last) = last_text {
                    answer.text.truncate(last_start);
                    answer.text.push_str(&last);
                }
                answer.finish_reason = finish_reason;
                answer.usage = usage;
                answer.error = error;
                break;
            }
            Step::Lost => {
                lost = true;
                tracing::warn!(run = %started.run_id, "the OpenAI door fell behind the run; its text may miss deltas");
            }
            Step::Skip => {}
        }
    }
    let _ = tx.send(answer);
    finish_ephemeral(&gateway, &started).await;
}

/// The chunks of one streamed completion: the JSON around each delta, built once.
struct Chunks {
    /// `data: {"id":..,"object":"chat.completion.chunk","created":..,"model":..,"choices":[{"index":0,"delta":`
    head: String,
}

impl Chunks {
    fn new(id: &str, model: &str, created: u64) -> Self {
        let mut head = String::with_capacity(160);
        head.push_str("data: {\"id\":");
        head.push_str(&json!(id).to_string());
        head.push_str(",\"object\":\"chat.completion.chunk\",\"created\":");
        head.push_str(&created.to_string());
        head.push_str(",\"model\":");
        head.push_str(&json!(model).to_string());
        head.push_str(",\"choices\":[{\"index\":0,\"delta\":");
        Self { head }
    }

    /// The first chunk: the assistant's role.
    fn role(&self) -> Bytes {
        self.with_delta(r#"{"role":"assistant","content":""}"#, "null")
    }

    /// A chunk of `sep` then `text` (one allocation).
    fn content(&self, sep: &str, text: &str) -> Bytes {
        const MID: &str = "{\"content\":";
        const TAIL: &str = "},\"finish_reason\":null}]}\n\n";
        let mut buf = BytesMut::with_capacity(
            self.head.len() + MID.len() + sep.len() + text.len() + 8 + TAIL.len(),
        );
        buf.put_slice(self.head.as_bytes());
        buf.put_slice(MID.as_bytes());
        buf.put_u8(b'"');
        escape_into(&mut buf, sep);
        escape_into(&mut buf, text);
        buf.put_u8(b'"');
        buf.put_slice(TAIL.as_bytes());
        buf.freeze()
    }

    /// The last chunk of the choice, with its `finish_reason`.
    fn finish(&self, reason: &str) -> Bytes {
        self.with_delta("{}", &json!(reason).to_string())
    }

    fn with_delta(&self, delta: &str, finish: &str) -> Bytes {
        let mut s = String::with_capacity(self.head.len() + delta.len() + 48);
        s.push_str(&self.head);
        s.push_str(delta);
        s.push_str(",\"finish_reason\":");
        s.push_str(finish);
        s.push_str("}]}\n\n");
        Bytes::from(s)
    }

    /// The usage chunk (no choices), as OpenAI sends with `include_usage`.
    fn usage(&self, usage: &Usage) -> Bytes {
        // The head ends inside `choices`: this chunk is built whole instead.
        let cut = self.head.find(",\"choices\"").unwrap_or(self.head.len());
        let mut s = String::with_capacity(cut + 160);
        s.push_str(&self.head[..cut]);
        s.push_str(",\"choices\":[],\"usage\":");
        s.push_str(&usage_json(usage).to_string());
        s.push_str("}\n\n");
        Bytes::from(s)
    }
}

/// Appends `text` JSON-escaped (without quotes) to `buf`.
fn escape_into(buf: &mut BytesMut, text: &str) {
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                buf.put_slice(&bytes[start..i]);
                let hex = b"0123456789abcdef";
                buf.put_slice(b"\\u00");
                buf.put_u8(hex[(b >> 4) as usize]);
                buf.put_u8(hex[(b & 0xf) as usize]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        buf.put_slice(&bytes[start..i]);
        buf.put_slice(esc);
        start = i + 1;
    }
    buf.put_slice(&bytes[start..]);
}

/// An error event in the stream (the run failed after its first chunk), as OpenAI sends one.
fn error_chunk(message: &str) -> Bytes {
    let body = ApiError::provider(message).body();
    Bytes::from(format!("data: {body}\n\n"))
}

/// The `data: [DONE]` that ends a stream.
const DONE: &[u8] = b"data: [DONE]\n\n";

/// Serves a streamed completion: the response (its status decided by the run's first
/// delta or end: a run that fails before any text is a 502), fed by a reader task.
async fn stream(
    gateway: Arc<Gateway>,
    started: Started,
    id: &str,
    model: &str,
    created: u64,
    include_usage: bool,
) -> Response<Reply> {
    let (tx, resp) = event_stream(STREAM_BUFFER);
    let (first_tx, first_rx) = oneshot::channel();
    let chunks = Chunks::new(id, model, created);
    tokio::spawn(drive_stream(
        gateway,
        started,
        chunks,
        tx,
        first_tx,
        include_usage,
    ));
    match first_rx.await {
        Ok(Ok(())) => resp,
        Ok(Err(err)) => whole(err.response()),
        Err(_) => whole(
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
                "the run's reader ended without an answer",
            )
            .response(),
        ),
    }
}

/// Reads the run and writes its chunks; a client that hangs up aborts an ephemeral run.
async fn drive_stream(
    gateway: Arc<Gateway>,
    mut started: Started,
    chunks: Chunks,
    tx: mpsc::Sender<Bytes>,
    first: oneshot::Sender<Result<(), ApiError>>,
    include_usage: bool,
) {
    let mut first = Some(first);
    let mut joiner = Joiner::default();
    let mut hung_up = false;
    loop {
        let delivery = tokio::select! {
            biased;
            _ = tx.closed(), if !hung_up => {
                hung_up = true;
                if started.ephemeral {
                    let _ = gateway.agent().abort(&gateway, Some(&started.run_id), None).await;
                    continue;
                }
                // The run goes on for the session's other clients; this reader is done.
                return;
            }
            d = started.sub.next() => d,
        };
        let Some(Delivery::Event(env)) = delivery else {
            if let Some(first) = first.take() {
                let _ = first.send(Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    "shutting_down",
                    "the gateway is shutting down; the run did not finish",
                )));
            } else {
                let _ = tx
                    .send(error_chunk(
                        "the gateway is shutting down; the run did not finish",
                    ))
                    .await;
                let _ = tx.send(Bytes::from_static(DONE)).await;
            }
            break;
        };
        if hung_up {
            // Only waiting for the aborted run's end.
            if matches!(step(&env.json), Step::End { .. }) {
                break;
            }
            continue;
        }
        match step(&env.json) {
            Step::Delta(turn, text) => {
                if let Some(first) = first.take() {
                    let _ = first.send(Ok(()));
                    let _ = tx.send(chunks.role()).await;
                }
                let sep = joiner.before(turn);
                let _ = tx.send(chunks.content(sep, &text)).await;
            }
            Step::End {
                finish_reason,
                usage,
                error,
                ..
            } => {
                match (first.take(), error) {
                    (Some(first), Some(error)) => {
                        let _ = first.send(Err(ApiError::provider(error)));
                    }
                    (None, Some(error)) => {
                        let _ = tx.send(error_chunk(&error)).await;
                        let _ = tx.send(Bytes::from_static(DONE)).await;
                    }
                    (first, None) => {
                        if let Some(first) = first {
                            let _ = first.send(Ok(()));
                            let _ = tx.send(chunks.role()).await;
                        }
                        let _ = tx.send(chunks.finish(finish_reason)).await;
                        if include_usage && let Some(usage) = &usage {
                            let _ = tx.send(chunks.usage(usage)).await;
                        }
                        let _ = tx.send(Bytes::from_static(DONE)).await;
                    }
                }
                break;
            }
            Step::Lost => {
                tracing::warn!(run = %started.run_id, "a streaming OpenAI client fell behind the run; deltas were lost");
            }
            Step::Skip => {}
        }
    }
    drop(tx);
    finish_ephemeral(&gateway, &started).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_the_json_openai_sends() {
        let c = Chunks::new("chatcmpl-1", "clawgate/main", 7);
        let parse = |b: Bytes| -> serde_json::Value {
            let s = std::str::from_utf8(&b).expect("utf8");
            let body = s
                .strip_prefix("data: ")
                .and_then(|s| s.strip_suffix("\n\n"))
                .expect("framed");
            serde_json::from_str(body).expect("json")
        };
        let v = parse(c.content("\n\n", "a \"q\" \\ \u{1} é"));
        assert_eq!(v["object"], "chat.completion.chunk");
        assert_eq!(v["id"], "chatcmpl-1");
        assert_eq!(v["created"], 7);
        assert_eq!(v["model"], "clawgate/main");
        assert_eq!(
            v["choices"][0]["delta"]["content"],
            "\n\na \"q\" \\ \u{1} é"
        );
        assert_eq!(v["choices"][0]["finish_reason"], serde_json::Value::Null);
        assert_eq!(parse(c.role())["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(
            parse(c.finish("length"))["choices"][0]["finish_reason"],
            "length"
        );
        let u = parse(c.usage(&Usage {
            input_tokens: 3,
            output_tokens: 4,
            cache_read_tokens: 2,
            cache_write_tokens: 1,
        }));
        assert_eq!(u["choices"], json!([]));
        assert_eq!(u["usage"]["prompt_tokens"], 6);
        assert_eq!(u["usage"]["total_tokens"], 10);
    }

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        assert_eq!(finish_reason("end_turn"), "stop");
        assert_eq!(finish_reason("max_tokens"), "length");
        assert_eq!(finish_reason("refusal"), "content_filter");
    }

    #[test]
    fn turns_are_joined_with_a_blank_line() {
        let mut j = Joiner::default();
        assert_eq!(j.before(Some(0)), "");
        assert_eq!(j.before(Some(0)), "");
        assert_eq!(j.before(Some(1)), "\n\n");
        assert_eq!(j.before(Some(1)), "");
    }
}
