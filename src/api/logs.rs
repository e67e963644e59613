//! `logs.tail` / `logs.untail`: the log ring as a JSON-RPC subscription.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::error::{Error, Result};
use crate::gateway::{Ctx as CallContext, Table as MethodTable};
use crate::protocol::{LogLevel, LogRecord, LogsTailParams};
use crate::rpc::{
    DuplicateMethod, Example, Scope, Subscription, SubscriptionSink, SubscriptionTask,
};

/// `logs.tail`.
pub struct Tail;
impl Subscription for Tail {
    const NAME: &'static str = "logs.tail";
    const UNSUBSCRIBE: &'static str = "logs.untail";
    const NOTIFICATION: &'static str = "logs.record";
    const SCOPE: Scope = Scope::Admin;
    const SUMMARY: &'static str = "Streams the gateway's log records: the newest kept in memory first, then live ones (secrets redacted).";
    type Params = LogsTailParams;
    type Item = LogRecord;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "warnings and errors of the agent, the last 20 first",
            params: json!({"level": "warn", "target": "clawgate::agent", "lines": 20}),
            result: json!("9b2d4a773c5a1f0e"),
        }]
    }
}

/// Registers `logs.tail` and `logs.untail`.
pub fn register(table: &mut MethodTable) -> Result<(), DuplicateMethod> {
    table.subscription::<Tail, _, _>(|_ctx: CallContext, params: LogsTailParams| async move {
        tail(params)
    })
}

/// Which records a tail sends.
struct Filter {
    level: LogLevel,
    target: Option<String>,
}

impl Filter {
    fn keeps(&self, r: &LogRecord) -> bool {
        r.level <= self.level
            && self.target.as_deref().is_none_or(|t| {
                r.target == t
                    || r.target
                        .strip_prefix(t)
                        .is_some_and(|rest| rest.starts_with("::"))
            })
    }
}

fn tail(params: LogsTailParams) -> Result<SubscriptionTask> {
    let lines = params.lines.unwrap_or(100);
    if lines > 1000 {
        return Err(Error::invalid_params(
            "lines",
            format!("expected 0 to 1000, found {lines}"),
        ));
    }
    if params.target.as_deref().is_some_and(str::is_empty) {
        return Err(Error::invalid_params(
            "target",
            "expected a target such as \"clawgate::agent\", found an empty string",
        ));
    }
    let filter = Arc::new(Filter {
        level: params.level.unwrap_or(LogLevel::Info),
        target: params.target,
    });
    let (replay, live) = {
        let f = filter.clone();
        crate::logging::ring().tail(lines as usize, move |r| f.keeps(r))
    };
    Ok(Box::new(move |sink: SubscriptionSink| {
        Box::pin(pump(replay, live, filter, sink))
    }))
}

async fn pump(
    replay: Vec<Arc<LogRecord>>,
    mut live: tokio::sync::broadcast::Receiver<Arc<LogRecord>>,
    filter: Arc<Filter>,
    sink: SubscriptionSink,
) {
    for record in replay {
        if send(&sink, &record).await.is_err() {
            return;
        }
    }
    loop {
        let record = tokio::select! {
            _ = sink.closed() => return,
            r = live.recv() => r,
        };
        let record = match record {
            Ok(r) if filter.keeps(&r) => r,
            Ok(_) => continue,
            Err(RecvError::Lagged(n)) => Arc::new(LogRecord {
                ts: crate::util::now_ms(),
                level: LogLevel::Warn,
                target: "clawgate::logs".into(),
                message: format!("{n} log records were skipped: this tail read too slowly"),
                fields: serde_json::Map::from_iter([("skipped".to_string(), json!(n))]),
            }),
            Err(RecvError::Closed) => return,
        };
        if send(&sink, &record).await.is_err() {
            return;
        }
    }
}

async fn send(sink: &SubscriptionSink, record: &LogRecord) -> Result<(), crate::rpc::SinkClosed> {
    match serde_json::to_string(record) {
        Ok(json) => sink.send_raw(&json).await,
        Err(_) => Ok(()),
    }
}
