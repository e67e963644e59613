//! One connection to an MCP server through the rmcp SDK, over stdio (see `stdio`) or streamable
//! HTTP: `initialize`, the paged `tools/list`, and the client side that refuses what the server
//! asks of us.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

// Roots and sampling are deprecated in the SDK (SEP-2577); their types name what we refuse.
use rmcp::model::{
    ClientCapabilities, ClientConfig, ClientJsonRpcMessage, ClientRequest, ElicitRequestParams,
    ElicitResult, ElicitationCreateRequestMethod, Implementation, ListToolsRequest,
    PaginatedRequestParams, ProtocolVersion, ServerJsonRpcMessage, ServerResult,
};
#[allow(deprecated)]
use rmcp::model::{CreateMessageRequestMethod, ListRootsRequestMethod, ListRootsResult};
use rmcp::service::{NotificationContext, RequestContext, RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::Transport;
use rmcp::transport::async_rw::JsonRpcMessageCodec;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, ErrorData, Peer, ServiceExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::codec::FramedWrite;

use super::health::Health;
use super::stdio::{signal_group, spawn, stdout_messages};
use crate::config::McpServerConfig;

/// Most `tools/list` pages followed, and most tools kept, from one server.
const MAX_PAGES: usize = 100;
const MAX_TOOLS: usize = 1000;
/// How long a stopping child gets after its stdin closes, and again after SIGTERM.
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// A tool as the server listed it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteTool {
    /// The server's name for it.
    pub name: String,
    /// Its description (may be empty).
    pub description: String,
    /// JSON Schema of its input.
    pub input_schema: Value,
    /// The server's `annotations.readOnlyHint`: the tool changes nothing.
    pub read_only: bool,
}

/// What tool calls use of a live connection.
pub struct Conn {
    /// The SDK's handle to send requests.
    pub peer: Peer<RoleClient>,
    /// Its health.
    pub health: Arc<Health>,
    /// How long one call may take.
    pub timeout: Duration,
}

/// A running connection, owned by its supervisor.
pub struct Live {
    /// What tool calls use.
    pub conn: Arc<Conn>,
    /// Fires when the server says `notifications/tools/list_changed`.
    pub list_changed: mpsc::Receiver<()>,
    /// The stdio child (none for HTTP).
    pub child: ChildWatch,
    service: RunningService<RoleClient, Handler>,
}

/// A stdio server's process, if any.
pub struct ChildWatch(Option<tokio::process::Child>);

impl ChildWatch {
    /// Resolves when the child exits (never when there is none), with how it exited.
    pub async fn exited(&mut self) -> String {
        match self.0.as_mut() {
            Some(child) => match child.wait().await {
                Ok(status) => format!("it exited ({status})"),
                Err(e) => format!("it could not be waited for: {e}"),
            },
            None => std::future::pending().await,
        }
    }
}

impl ChildWatch {
    /// Kills the child's whole group and reaps it.
    async fn kill(&mut self) {
        if let Some(child) = self.0.as_mut() {
            signal_group(child.id(), libc::SIGKILL);
            let _ = child.start_kill();
            let _ = tokio::time::timeout(EXIT_GRACE, child.wait()).await;
        }
    }
}

impl Drop for ChildWatch {
    fn drop(&mut self) {
        // Dropped before [`Live::close`] (a start cancelled midway): the group goes at once. A
        // reaped child has no id, so a pid that was reused is never signalled.
        if let Some(child) = &self.0 {
            signal_group(child.id(), libc::SIGKILL);
        }
    }
}

impl Live {
    /// Closes the connection: the SDK's loop ends (a stdio child's stdin closes), then a child
    /// still running gets SIGTERM and, after a grace period, SIGKILL, its whole process group.
    pub async fn close(mut self) {
        self.conn.health.fail("the connection was closed");
        let _ = self.service.close_with_timeout(EXIT_GRACE).await;
        if let Some(mut child) = self.child.0.take() {
            let group = child.id();
            let exited = tokio::time::timeout(EXIT_GRACE, child.wait()).await.is_ok();
            if !exited {
                signal_group(group, libc::SIGTERM);
                if tokio::time::timeout(EXIT_GRACE, child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.start_kill();
                }
            }
            // Whatever the server started in its group goes with it.
            signal_group(group, libc::SIGKILL);
            let _ = tokio::time::timeout(EXIT_GRACE, child.wait()).await;
        }
    }
}

/// The client side: answers the server's requests and hears its notifications.
pub struct Handler {
    info: ClientConfig,
    list_changed: mpsc::Sender<()>,
}

// Sampling and roots are deprecated in the SDK (SEP-2577); we refuse them all the same.
#[allow(deprecated)]
impl ClientHandler for Handler {
    async fn create_message(
        &self,
        _params: rmcp::model::CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<rmcp::model::CreateMessageResult, ErrorData> {
        Err(ErrorData::method_not_found::<CreateMessageRequestMethod>())
    }

    async fn list_roots(
        &self,
        _context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, ErrorData> {
        Err(ErrorData::method_not_found::<ListRootsRequestMethod>())
    }

    async fn create_elicitation(
        &self,
        _request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        Err(ErrorData::method_not_found::<ElicitationCreateRequestMethod>())
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        // One pending refresh is enough: it lists everything.
        let _ = self.list_changed.try_send(());
    }

    fn get_info(&self) -> ClientConfig {
        self.info.clone()
    }
}

/// Connects to the server `name` of `config`: spawn or reach it, `initialize`, list its tools,
/// all within `config.timeout_ms`.
pub async fn connect(
    name: &str,
    config: &McpServerConfig,
) -> Result<(Live, Vec<RemoteTool>), String> {
    let timeout = Duration::from_millis(config.timeout_ms);
    let health = Arc::new(Health::default());
    let (changed_tx, changed_rx) = mpsc::channel(1);
    let handler = Handler {
        info: ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("clawgate", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE),
        list_changed: changed_tx,
    };
    let (mut child, started) = if let Some(command) = &config.command {
        let (child, stdin, stdout) = spawn(name, command, &config.env)?;
        let transport = Watched {
            inner: rmcp::transport::IntoTransport::<RoleClient, _, _>::into_transport((
                FramedWrite::new(
                    stdin,
                    JsonRpcMessageCodec::<ClientJsonRpcMessage>::default(),
                ),
                stdout_messages(name, stdout, health.clone()),
            )),
            health: health.clone(),
        };
        // Its group goes with it if this start is cancelled midway.
        let child = ChildWatch(Some(child));
        let started = tokio::time::timeout(timeout, handler.serve(transport)).await;
        (child, started)
    } else if let Some(url) = &config.url {
        let transport = Watched {
            inner: http_transport(url, &config.headers)?,
            health: health.clone(),
        };
        (
            ChildWatch(None),
            tokio::time::timeout(timeout, handler.serve(transport)).await,
        )
    } else {
        return Err("it has neither `command` nor `url`".into());
    };
    let service = match started {
        Ok(Ok(service)) => service,
        Ok(Err(e)) => {
            child.kill().await;
            return Err(format!(
                "initialize failed: {}",
                health_or(&health, &e.to_string())
            ));
        }
        Err(_) => {
            child.kill().await;
            return Err(format!(
                "initialize got no answer within {} ms",
                config.timeout_ms
            ));
        }
    };
    let conn = Arc::new(Conn {
        peer: service.peer().clone(),
        health,
        timeout,
    });
    let live = Live {
        conn,
        list_changed: changed_rx,
        service,
        child,
    };
    match list_tools(&live.conn).await {
        Ok(tools) => Ok((live, tools)),
        Err(why) => {
            live.close().await;
            Err(why)
        }
    }
}

/// The reason the connection died, when it did (more telling than the SDK's error), or `other`.
fn health_or(health: &Health, other: &str) -> String {
    if health.is_dead() {
        health.why()
    } else {
        other.to_string()
    }
}

/// Lists every tool, following `nextCursor`, within the connection's timeout. A timeout counts
/// the server hung (the connection is marked dead).
pub async fn list_tools(conn: &Conn) -> Result<Vec<RemoteTool>, String> {
    match tokio::time::timeout(conn.timeout, list_pages(conn)).await {
        Ok(result) => result,
        Err(_) => {
            let why = format!(
                "tools/list got no answer within {} ms",
                conn.timeout.as_millis()
            );
            conn.health.fail(why.clone());
            Err(why)
        }
    }
}

async fn list_pages(conn: &Conn) -> Result<Vec<RemoteTool>, String> {
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let params = PaginatedRequestParams::default().with_cursor(cursor.take());
        let request = ClientRequest::ListToolsRequest(ListToolsRequest::with_param(params));
        let answer = conn.peer.send_request(request).await.map_err(|e| {
            format!(
                "tools/list failed: {}",
                health_or(&conn.health, &e.to_string())
            )
        })?;
        let page = serde_json::to_value(&answer).unwrap_or_default();
        let (listed, next) = parse_tools_page(&page)?;
        tools.extend(listed);
        if tools.len() > MAX_TOOLS {
            tools.truncate(MAX_TOOLS);
            tracing::warn!("an MCP server lists more than {MAX_TOOLS} tools; the rest are ignored");
            break;
        }
        match next {
            Some(next) => cursor = Some(next),
            None => return Ok(tools),
        }
    }
    Ok(tools)
}

/// One `tools/list` answer: its usable tools (an entry without a string `name` is skipped) and
/// its `nextCursor`.
pub fn parse_tools_page(page: &Value) -> Result<(Vec<RemoteTool>, Option<String>), String> {
    let Some(list) = page.get("tools").and_then(Value::as_array) else {
        return Err("tools/list answered without a `tools` array".into());
    };
    let tools = list
        .iter()
        .filter_map(|tool| {
            let name = tool.get("name")?.as_str()?.to_string();
            let description = tool
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let input_schema = match tool.get("inputSchema") {
                Some(schema @ Value::Object(_)) => schema.clone(),
                _ => serde_json::json!({"type": "object"}),
            };
            let read_only = tool
                .get("annotations")
                .and_then(|a| a.get("readOnlyHint"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            Some(RemoteTool {
                name,
                description,
                input_schema,
                read_only,
            })
        })
        .collect();
    let next = page
        .get("nextCursor")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    Ok((tools, next))
}

/// The streamable HTTP transport to `url` with `headers` on every request.
fn http_transport(
    url: &str,
    headers: &std::collections::BTreeMap<String, String>,
) -> Result<StreamableHttpClientTransport<reqwest::Client>, String> {
    let mut custom = HashMap::new();
    for (key, value) in headers {
        let name = http::HeaderName::from_bytes(key.as_bytes())
            .map_err(|_| format!("the header name {key:?} is not valid"))?;
        let value = http::HeaderValue::from_str(value)
            .map_err(|_| format!("the value of header {key:?} is not valid"))?;
        custom.insert(name, value);
    }
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let config = StreamableHttpClientTransportConfig::with_uri(url).custom_headers(custom);
    Ok(StreamableHttpClientTransport::with_client(client, config))
}

/// A transport that marks its connection dead when the SDK sees it end.
struct Watched<T> {
    inner: T,
    health: Arc<Health>,
}

impl<T: Transport<RoleClient>> Transport<RoleClient> for Watched<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: ClientJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<ServerJsonRpcMessage> {
        let message = self.inner.receive().await;
        if message.is_none() {
            self.health.fail("its connection closed");
        }
        message
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.inner.close().await
    }
}

/// `ServerResult` as the JSON the server sent (for results the SDK does not model, the JSON as
/// it came).
pub fn result_json(result: &ServerResult) -> Value {
    serde_json::to_value(result).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tools_page_keeps_usable_entries_and_its_cursor() {
        let page = serde_json::json!({
            "tools": [
                {"name": "a", "description": "A", "inputSchema": {"type": "object", "properties": {}}},
                {"name": "b"},
                {"description": "no name"},
                {"name": 5},
            ],
            "nextCursor": "2",
        });
        let (tools, next) = parse_tools_page(&page).expect("a page");
        assert_eq!(tools.len(), 2);
        assert_eq!(tools[0].description, "A");
        assert_eq!(tools[1].input_schema, serde_json::json!({"type": "object"}));
        assert_eq!(next.as_deref(), Some("2"));
        let (_, next) =
            parse_tools_page(&serde_json::json!({"tools": [], "nextCursor": ""})).expect("a page");
        assert_eq!(next, None);
        assert!(parse_tools_page(&serde_json::json!({"tool": []})).is_err());
    }
}
