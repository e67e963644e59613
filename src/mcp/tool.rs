//! An MCP tool as an agent tool: `tools/call` with the server's timeout, the run's abort sent on
//! as `notifications/cancelled`, every failure a tool result with `isError: true`.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest};
use serde_json::Value;

use super::connection::{Conn, result_json};
use super::output::map_call_result;
use super::server::{Offered, Server, Unavailable};
use crate::agent::providers::ToolSpec;
use crate::agent::tools::{Tool, ToolContext, ToolFuture, ToolOutput};

/// How long a call that timed out waits for its `notifications/cancelled` to be sent.
const CANCEL_WAIT: Duration = Duration::from_millis(500);

/// One tool of one MCP server.
pub struct McpTool {
    server: Arc<Server>,
    offered: Offered,
}

impl McpTool {
    /// The tool `offered` of `server`.
    pub fn new(server: Arc<Server>, offered: Offered) -> Self {
        Self { server, offered }
    }
}

fn failed(content: String) -> ToolOutput {
    ToolOutput {
        content,
        is_error: true,
    }
}

impl Tool for McpTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.offered.name.clone(),
            description: self.offered.remote.description.clone(),
            input_schema: self.offered.remote.input_schema.clone(),
        }
    }

    fn source(&self) -> String {
        format!("mcp:{}", self.server.name)
    }

    fn read_only(&self) -> bool {
        self.offered.remote.read_only
    }

    fn call(&self, input: Value, ctx: ToolContext) -> ToolFuture {
        let server = self.server.clone();
        let tool = self.offered.remote.name.clone();
        Box::pin(async move {
            let conn = match server.conn() {
                Ok(conn) => conn,
                Err(why) => return failed(unavailable(&server.name, why)),
            };
            let arguments = match input {
                Value::Object(map) => map,
                Value::Null => serde_json::Map::new(),
                other => {
                    return failed(format!(
                        "the arguments of `{tool}` must be a JSON object, not {other}"
                    ));
                }
            };
            call(&server, &conn, tool, arguments, &ctx).await
        })
    }
}

fn unavailable(server: &str, why: Unavailable) -> String {
    match why {
        Unavailable::Removed => {
            format!("MCP server `{server}` is not configured anymore; its tools are gone")
        }
        Unavailable::Down(state, error) => {
            let error = error.map(|e| format!(": {e}")).unwrap_or_default();
            format!(
                "MCP server `{server}` is {}{error}; its tools fail until it runs again",
                state.as_str()
            )
        }
    }
}

/// How a call ended.
enum End {
    /// The result, as the server sent it.
    Answer(Value),
    /// A JSON-RPC error from the server.
    Refused(String),
    /// An answer the SDK could not use.
    Unusable(String),
    Closed,
    Aborted,
    Removed,
    Died,
    TimedOut,
}

async fn call(
    server: &Server,
    conn: &Arc<Conn>,
    tool: String,
    arguments: serde_json::Map<String, Value>,
    ctx: &ToolContext,
) -> ToolOutput {
    let name = &server.name;
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(
        CallToolRequestParams::new(tool.clone()).with_arguments(arguments),
    ));
    let aborted = || {
        failed(format!(
            "aborted: the call of `{tool}` on MCP server `{name}` was cancelled"
        ))
    };
    // A run already aborted sends nothing.
    if ctx.cancel.is_cancelled() {
        return aborted();
    }
    let sent = tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => return aborted(),
        sent = conn.peer.send_cancellable_request(request, rmcp::service::PeerRequestOptions::no_options()) => sent,
    };
    let mut handle = match sent {
        Ok(handle) => handle,
        Err(e) => {
            conn.health
                .fail(format!("a request could not be sent: {e}"));
            return failed(format!(
                "MCP server `{name}` cannot take the call: {}; it is being restarted",
                conn.health.why()
            ));
        }
    };
    let end = tokio::select! {
        biased;
        answer = &mut handle.rx => match answer {
            Ok(Ok(result)) => End::Answer(result_json(&result)),
            Ok(Err(rmcp::ServiceError::McpError(e))) => {
                End::Refused(format!("{} (code {})", e.message, e.code.0))
            }
            Ok(Err(rmcp::ServiceError::TransportClosed | rmcp::ServiceError::TransportSend(_)))
            | Err(_) => End::Closed,
            Ok(Err(e)) => End::Unusable(e.to_string()),
        },
        _ = ctx.cancel.cancelled() => End::Aborted,
        _ = server.removed.cancelled() => End::Removed,
        _ = conn.health.died() => End::Died,
        _ = tokio::time::sleep(conn.timeout) => End::TimedOut,
    };
    // A server removed while the call ran may have closed the connection first: say removed.
    let lost = matches!(end, End::Closed | End::Died);
    let end = if lost && server.removed.is_cancelled() {
        End::Removed
    } else {
        end
    };
    // `notifications/cancelled` for the call: sent in the background, so the result is given at
    // once, unless the connection is about to be closed (`wait`).
    let cancel = |reason: &'static str, wait: bool| {
        let send = async move {
            let _ = handle.cancel(Some(reason.to_string())).await;
        };
        if wait {
            futures::future::Either::Left(async move {
                let _ = tokio::time::timeout(CANCEL_WAIT, send).await;
            })
        } else {
            tokio::spawn(send);
            futures::future::Either::Right(std::future::ready(()))
        }
    };
    let ms = conn.timeout.as_millis();
    match end {
        End::Answer(result) => map_call_result(&result),
        End::Refused(why) => failed(format!(
            "MCP server `{name}` refused the call of `{tool}`: {why}"
        )),
        End::Closed | End::Died => {
            conn.health.fail("its connection closed");
            failed(format!(
                "MCP server `{name}` failed during the call of `{tool}`: {}; it is being restarted",
                conn.health.why()
            ))
        }
        End::Unusable(why) => failed(format!(
            "MCP server `{name}` answered the call of `{tool}` with something unusable: {why}"
        )),
        End::Aborted => {
            cancel("aborted", false).await;
            aborted()
        }
        End::Removed => {
            cancel("the server was removed", false).await;
            failed(format!(
                "MCP server `{name}` was removed from the configuration during the call of `{tool}`"
            ))
        }
        End::TimedOut => {
            // Told before the server is restarted as hung.
            cancel("timeout", true).await;
            conn.health
                .fail(format!("a call of `{tool}` got no answer within {ms} ms"));
            failed(format!(
                "the call of `{tool}` on MCP server `{name}` got no answer within {ms} ms \
                 (its timeout_ms); the server counts as hung and is being restarted"
            ))
        }
    }
}
