//! Cluster mode: this gateway as one node of several sharing everything through NATS JetStream.
//!
//! [`Cluster::connect`] opens the one NATS connection of the node (only when `[cluster]` is
//! configured), checks the server's `max_payload` against `gateway.max_payload_bytes`, and makes
//! (or finds) the streams and buckets every node shares. The parts beside this file use it:
//! `events` (the hub's relay: one event stream, `seq` = its sequence), and the ones below the
//! domain that the gateway assembles at start.
//!
//! Names are fixed, so every node of a deployment meets on the same ones: the stream
//! [`EVENTS_STREAM`] on the subjects below [`EVENTS_SUBJECT`], the transcript stream
//! [`TRANSCRIPTS_STREAM`] (`clawgate.tx.<sessionId>`), the buckets [`LEASES_BUCKET`],
//! [`SESSIONS_BUCKET`] and [`NODES_BUCKET`], and the request subject of each node,
//! [`node_subject`].

pub mod events;
pub mod nodes;
pub mod owners;
pub mod transcripts;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

use crate::config::{ClusterConfig, ClusterStorage};

/// The stream every node publishes its events to.
pub const EVENTS_STREAM: &str = "CLAWGATE_EVENTS";
/// The subjects of the event stream are below this one (`clawgate.events.<node>.…`).
pub const EVENTS_SUBJECT: &str = "clawgate.events";
/// The stream of transcript lines, one subject per session id.
pub const TRANSCRIPTS_STREAM: &str = "CLAWGATE_TRANSCRIPTS";
/// The prefix of the transcript subjects (`clawgate.tx.<sessionId>`).
pub const TRANSCRIPTS_PREFIX: &str = "clawgate.tx";
/// Session leases: key = the session key (encoded), value = the owner's node id.
pub const LEASES_BUCKET: &str = "clawgate_leases";
/// The session index: key = the session key (encoded), value = the session's JSON.
pub const SESSIONS_BUCKET: &str = "clawgate_sessions";
/// The nodes alive: key = node id, value = the node's JSON, renewed while it lives.
pub const NODES_BUCKET: &str = "clawgate_nodes";
/// The scheduled jobs and their state (`cron.json` of the leader): key [`CRON_KEY`].
pub const CRON_BUCKET: &str = "clawgate_cron";
/// The one key of [`CRON_BUCKET`].
pub const CRON_KEY: &str = "jobs";
/// The key of the leader lease in [`LEASES_BUCKET`] (session keys are hex: never this).
pub const LEADER_KEY: &str = "_leader";
/// How long JetStream remembers a message id, so a republished event is stored once.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The request subject of node `node_id` (calls forwarded to it).
pub fn node_subject(node_id: &str) -> String {
    format!("clawgate.node.{node_id}")
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No NATS server answered.
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect {
        /// The URL(s), redacted.
        url: String,
        /// What failed.
        message: String,
    },
    /// The server takes smaller messages than the gateway's frames.
    #[error(
        "the NATS server takes messages of at most {server} bytes (max_payload), less than gateway.max_payload_bytes = {gateway}: raise the server's max_payload or lower gateway.max_payload_bytes"
    )]
    Payload {
        /// The server's `max_payload`.
        server: usize,
        /// `gateway.max_payload_bytes`.
        gateway: usize,
    },
    /// A stream or bucket could not be made or opened.
    #[error("JetStream {what}: {message}")]
    Setup {
        /// The stream or bucket.
        what: String,
        /// What failed.
        message: String,
    },
}

impl ClusterError {
    fn setup(what: &str, err: impl std::fmt::Display) -> Self {
        Self::Setup {
            what: what.to_string(),
            message: err.to_string(),
        }
    }
}

/// How big the event stream may grow (from `[events]`).
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Events kept (`events.replay_capacity`).
    pub messages: usize,
    /// Bytes kept (`events.replay_max_bytes`).
    pub bytes: usize,
}

/// The node's NATS connection and the streams and buckets it shares with the other nodes.
pub struct Cluster {
    config: ClusterConfig,
    node_id: String,
    client: async_nats::Client,
    js: jetstream::Context,
    events: stream::Stream,
    events_config: stream::Config,
    epoch: String,
    transcripts: stream::Stream,
    leases: kv::Store,
    sessions: kv::Store,
    nodes: kv::Store,
    cron: kv::Store,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to NATS and makes or opens the shared streams and buckets.
    pub async fn connect(
        config: &ClusterConfig,
        max_payload_bytes: usize,
        limits: StreamLimits,
    ) -> Result<Arc<Self>, ClusterError> {
        let node_id = config.node_id.clone().unwrap_or_else(default_node_id);
        let redacted = crate::config::redact_url(&config.nats_url);
        let connect_err = |message: String| ClusterError::Connect {
            url: redacted.clone(),
            message,
        };
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("clawgate {node_id}"))
            .connection_timeout(Duration::from_secs(5))
            // Reconnect forever: a node outlives a NATS outage and catches up after it.
            .max_reconnects(None);
        if let Some(creds) = &config.creds_file {
            options = options
                .credentials_file(creds)
                .await
                .map_err(|e| connect_err(format!("creds_file {}: {e}", creds.display())))?;
        }
        if let Some(ca) = &config.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let urls: Vec<async_nats::ServerAddr> = config
            .nats_url
            .split(',')
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<_, _>>()
            .map_err(|e| connect_err(e.to_string()))?;
        let client = options
            .connect(urls)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let server = client.server_info().max_payload;
        if server < max_payload_bytes {
            return Err(ClusterError::Payload {
                server,
                gateway: max_payload_bytes,
            });
        }
        let js = jetstream::new(client.clone());
        let replicas = config.replicas;
        let storage = match config.events_storage {
            ClusterStorage::File => stream::StorageType::File,
            ClusterStorage::Memory => stream::StorageType::Memory,
        };
        let events_config = stream::Config {
            name: EVENTS_STREAM.into(),
            // Each node publishes on subjects of its own below it (see `events`).
            subjects: vec![format!("{EVENTS_SUBJECT}.>")],
            max_messages: i64::try_from(limits.messages).unwrap_or(i64::MAX),
            max_bytes: i64::try_from(limits.bytes).unwrap_or(i64::MAX),
            storage,
            num_replicas: replicas,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        let events = setup(EVENTS_STREAM, || {
            js.get_or_create_stream(events_config.clone())
        })
        .await?;
        // The info the stream was found or made with says when it was made.
        let epoch = epoch_of(events.cached_info());
        let transcripts_config = stream::Config {
            name: TRANSCRIPTS_STREAM.into(),
            subjects: vec![format!("{TRANSCRIPTS_PREFIX}.*")],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            duplicate_window: DUPLICATE_WINDOW,
            allow_direct: true,
            ..Default::default()
        };
        let transcripts = setup(TRANSCRIPTS_STREAM, || {
            js.get_or_create_stream(transcripts_config.clone())
        })
        .await?;
        let lease = Duration::from_millis(config.lease_ms);
        let bucket = |name: &str, max_age: Duration| kv::Config {
            bucket: name.into(),
            history: 1,
            max_age,
            num_replicas: replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let open = |config: kv::Config| {
            let js = js.clone();
            async move {
                let name = config.bucket.clone();
                setup(&name, || async {
                    match js.get_key_value(&name).await {
                        Ok(store) => Ok(store),
                        Err(_) => js.create_key_value(config.clone()).await,
                    }
                })
                .await
            }
        };
        // Leases and nodes expire on their own when not renewed: a dead node's entries vanish.
        let leases = open(bucket(LEASES_BUCKET, lease)).await?;
        let nodes = open(bucket(NODES_BUCKET, lease)).await?;
        let sessions = open(bucket(SESSIONS_BUCKET, Duration::ZERO)).await?;
        let cron = open(bucket(CRON_BUCKET, Duration::ZERO)).await?;
        tracing::info!(node = %node_id, nats = %redacted, %epoch, replicas, "cluster mode: connected to NATS JetStream");
        Ok(Arc::new(Self {
            config: config.clone(),
            node_id,
            client,
            js,
            events,
            events_config,
            epoch,
            transcripts,
            leases,
            sessions,
            nodes,
            cron,
        }))
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The NATS URL(s), credentials redacted.
    pub fn nats_url(&self) -> String {
        crate::config::redact_url(&self.config.nats_url)
    }

    /// The event stream's identity: its name and creation time (the hub's `epoch`).
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Whether the NATS connection is up now.
    pub fn connected(&self) -> bool {
        matches!(
            self.client.connection_state(),
            async_nats::connection::State::Connected
        )
    }

    /// The NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The event stream.
    pub fn events_stream(&self) -> &stream::Stream {
        &self.events
    }

    /// The configuration the event stream is made with (to make it again if it goes).
    pub fn events_config(&self) -> &stream::Config {
        &self.events_config
    }

    /// The transcript stream.
    pub fn transcripts_stream(&self) -> &stream::Stream {
        &self.transcripts
    }

    /// The session leases.
    pub fn leases(&self) -> &kv::Store {
        &self.leases
    }

    /// The session index.
    pub fn sessions(&self) -> &kv::Store {
        &self.sessions
    }

    /// The nodes alive.
    pub fn nodes(&self) -> &kv::Store {
        &self.nodes
    }

    /// The scheduled jobs, as the leader last wrote them.
    pub fn cron(&self) -> &kv::Store {
        &self.cron
    }

    /// The node holding the leader lease now, if any.
    pub async fn leader(&self) -> Option<String> {
        match self.leases.entry(LEADER_KEY).await {
            Ok(Some(e)) if e.operation == kv::Operation::Put => {
                Some(String::from_utf8_lossy(&e.value).into_owned())
            }
            _ => None,
        }
    }
}

/// The epoch of the event stream described by `info`: its name and creation time, so a
/// stream made again (deleted, then made) is another epoch.
pub fn epoch_of(info: &stream::Info) -> String {
    format!(
        "{}-{}",
        info.config.name,
        info.created.unix_timestamp_nanos()
    )
}

/// How many times a stream or bucket is asked for before the start fails.
const SETUP_ATTEMPTS: u32 = 6;
/// How long one attempt may wait for JetStream (a creation takes milliseconds; one that got
/// lost among concurrent ones is found by the next attempt).
const SETUP_PATIENCE: Duration = Duration::from_secs(3);

/// Runs `attempt` (making or opening a stream or bucket) until it succeeds, a few times: when
/// several nodes start at once on a fresh JetStream cluster, their concurrent creations of a
/// replicated stream can leave one of them without an answer (a timeout), and asking again
/// finds the stream the others made.
async fn setup<T, E, F, Fut>(what: &str, mut attempt: F) -> Result<T, ClusterError>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut pause = Duration::from_millis(200);
    for n in 1.. {
        let answer = match tokio::time::timeout(SETUP_PATIENCE, attempt()).await {
            Ok(answer) => answer.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {SETUP_PATIENCE:?}")),
        };
        match answer {
            Ok(v) => return Ok(v),
            Err(err) if n < SETUP_ATTEMPTS => {
                tracing::warn!(what, %err, attempt = n, "JetStream setup failed; asking again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(err) => return Err(ClusterError::setup(what, err)),
        }
    }
    unreachable!("the last attempt returns")
}

/// The default node id: the host name (its safe characters) and a random suffix.
fn default_node_id() -> String {
    let host: String = crate::net::host_name()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(48)
        .collect();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    if host.is_empty() {
        format!("node-{suffix}")
    } else {
        format!("{host}-{suffix}")
    }
}

/// A bucket key for `text` (a session key may hold characters NATS keys do not allow): the
/// bytes as lowercase hex, which every key and subject accepts and which sorts like the text.
pub fn key_of(text: &str) -> String {
    hex::encode(text.as_bytes())
}

/// The text a [`key_of`] key stands for (`None` if it is not one).
pub fn text_of(key: &str) -> Option<String> {
    hex::decode(key)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_are_nats_safe() {
        for text in ["main", "a2a:ctx/1", "ünï çødé", "openai:x y"] {
            let key = key_of(text);
            assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(text_of(&key).as_deref(), Some(text));
        }
        assert_eq!(text_of("zz"), None);
        assert!(crate::config::is_node_id(&default_node_id()));
    }
}
