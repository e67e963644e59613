//! A Rust client for clawgate over WebSocket, built on jsonrpsee's client and typed from the
//! same declarations as the server ([`Method`]). `clawgate call` and the Rust tests use it.

use std::time::Duration;

use jsonrpsee::client_transport::ws::{HeaderMap, HeaderValue, Url, WsTransportClientBuilder};
use jsonrpsee::core::client::{
    Client, ClientBuilder, ClientT, Error as ClientError, Subscription, SubscriptionClientT,
};
use jsonrpsee::core::traits::ToRpcParams;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::rpc::Method;
use crate::tls::{ClientTrust, TlsOptions};

/// Params given as a JSON value (an object, or absent).
pub struct RawParams(pub Option<Value>);

impl ToRpcParams for RawParams {
    fn to_rpc_params(self) -> Result<Option<Box<RawValue>>, serde_json::Error> {
        self.0
            .map(|v| serde_json::value::to_raw_value(&v))
            .transpose()
    }
}

/// A connected client.
pub struct GatewayClient {
    inner: Client,
}

impl GatewayClient {
    /// Connects to `url` (`ws://host:port/`; `http://` is taken as `ws://`), with a token.
    /// A `wss://` (or `https://`) URL is trusted through the system's CA bundle; see
    /// [`GatewayClient::connect_with`] to pin a fingerprint or name a CA file.
    pub async fn connect(url: &str, token: Option<&str>) -> Result<Self, ClientError> {
        Self::connect_with(url, token, &TlsOptions::default()).await
    }

    /// Connects to `url` with a token; for a `wss://` or `https://` URL the TLS connection is
    /// made here and its certificate checked as `tls` says (a pinned SHA-256 fingerprint, a CA
    /// file, or the system's CA bundle) before any byte of the upgrade request is sent.
    pub async fn connect_with(
        url: &str,
        token: Option<&str>,
        tls: &TlsOptions,
    ) -> Result<Self, ClientError> {
        let transport = |e: String| ClientError::Transport(e.into());
        let (secure, url) = if let Some(rest) = url.strip_prefix("http://") {
            (false, format!("ws://{rest}"))
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, format!("ws://{rest}"))
        } else if let Some(rest) = url.strip_prefix("wss://") {
            // jsonrpsee is built without TLS: it is handed the TLS stream and a ws:// URL.
            (true, format!("ws://{rest}"))
        } else {
            (false, url.to_string())
        };
        if !secure && tls.is_set() {
            return Err(transport(
                "--fingerprint and --ca apply to wss:// and https:// URLs".into(),
            ));
        }
        let url = Url::parse(&url).map_err(|e| ClientError::Transport(Box::new(e)))?;
        let mut headers = HeaderMap::new();
        if let Some(token) = token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| ClientError::Transport(Box::new(e)))?;
            headers.insert("authorization", value);
        }
        let builder = WsTransportClientBuilder::default()
            .set_headers(headers)
            .max_request_size(u32::MAX)
            .max_response_size(u32::MAX);
        let client = ClientBuilder::default()
            .request_timeout(Duration::from_secs(120))
            .max_buffer_capacity_per_subscription(4096);
        if !secure {
            let (sender, receiver) = builder
                .build(url)
                .await
                .map_err(|e| ClientError::Transport(Box::new(e)))?;
            return Ok(Self {
                inner: client.build_with_tokio(sender, receiver),
            });
        }
        let trust = ClientTrust::from_options(tls).map_err(transport)?;
        let host = url
            .host_str()
            .ok_or_else(|| transport("the URL has no host".into()))?
            .to_string();
        let port = url.port().unwrap_or(443);
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| transport(format!("cannot reach {host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let stream = crate::tls::client::connect(tcp, &host, &trust)
            .await
            .map_err(transport)?;
        let (sender, receiver) = builder
            .build_with_stream(url, stream)
            .await
            .map_err(|e| ClientError::Transport(Box::new(e)))?;
        Ok(Self {
            inner: client.build_with_tokio(sender, receiver),
        })
    }

    /// Calls method `M` with typed params and result.
    pub async fn call<M>(&self, params: &M::Params) -> Result<M::Result, ClientError>
    where
        M: Method,
        M::Params: Serialize,
        M::Result: DeserializeOwned,
    {
        let params = serde_json::to_value(params).map_err(ClientError::ParseError)?;
        self.inner.request(M::NAME, RawParams(Some(params))).await
    }

    /// Subscribes to `S` with typed params and items.
    pub async fn subscribe<S>(
        &self,
        params: &S::Params,
    ) -> Result<Subscription<S::Item>, ClientError>
    where
        S: crate::rpc::Subscription,
        S::Params: Serialize,
        S::Item: DeserializeOwned,
    {
        let params = serde_json::to_value(params).map_err(ClientError::ParseError)?;
        self.inner
            .subscribe(S::NAME, RawParams(Some(params)), S::UNSUBSCRIBE)
            .await
    }

    /// Calls any method with JSON params.
    pub async fn call_raw(
        &self,
        method: &str,
        params: Option<Value>,
    ) -> Result<Value, ClientError> {
        self.inner.request(method, RawParams(params)).await
    }

    /// Subscribes with JSON params; items are JSON values.
    pub async fn subscribe_raw(
        &self,
        method: &str,
        params: Option<Value>,
        unsubscribe: &str,
    ) -> Result<Subscription<Value>, ClientError> {
        self.inner
            .subscribe(method, RawParams(params), unsubscribe)
            .await
    }
}
