//! Cluster mode's events against real NATS servers and real clawgate binaries: every node
//! delivers the one event stream (same `seq`, same order, same envelopes, one `epoch`), a client
//! resumes with `afterSeq` on another node after `kill -9` of its own and on a restarted node, an
//! `afterSeq` ahead of the stream is refused after the catch-up wait, a recreated stream is a
//! `gap {restart}`, one NATS server of three killed while runs stream loses and repeats nothing,
//! a server taking smaller messages than the gateway's frames is refused at start, and without
//! `[cluster]` nothing of it shows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::RawWs;
use crate::common::launcher::{Gateway, Launcher};
use crate::common::nats::{NatsCluster, NatsServer};
use crate::fake_provider::{FakeProvider, Script, anthropic};

/// The bound on any wait for events: only against hangs (a NATS leader election, a publish
/// acknowledgement timing out and sent again), never a speed test.
const PATIENCE: Duration = Duration::from_secs(60);

/// The config of node `id` on `nats`: `cluster_extra` goes in `[cluster]`, `tail` after it.
/// Subscriber queues are large, so a test client that reads a little late loses nothing.
fn config(nats: &str, id: &str, cluster_extra: &str, tail: &str) -> String {
    format!(
        "[cluster]\nnats_url = \"{nats}\"\nnode_id = \"{id}\"\n{cluster_extra}\n\
         [events]\nsubscriber_queue = 100000\nsubscriber_queue_bytes = 268435456\n{tail}\n"
    )
}

/// Node `id` on `nats`, on a data directory of its own.
fn node(nats: &str, id: &str) -> Launcher {
    Launcher::new().config(config(nats, id, "", ""))
}

/// Starts several nodes at once (they race to make the shared streams and buckets).
fn start_all(launchers: Vec<Launcher>) -> Vec<Gateway> {
    std::thread::scope(|s| {
        let handles: Vec<_> = launchers
            .into_iter()
            .map(|l| s.spawn(move || l.start()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a node starts"))
            .collect()
    })
}

/// `gateway.hello`'s snapshot: (epoch, seq).
async fn snapshot(addr: std::net::SocketAddr) -> (String, u64) {
    let mut ws = RawWs::connect(addr).await;
    let hello = ws.call("gateway.hello", json!({})).await;
    let snap = &hello["result"]["snapshot"];
    (
        snap["epoch"]
            .as_str()
            .unwrap_or_else(|| panic!("an epoch: {hello}"))
            .to_string(),
        snap["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("a seq: {hello}")),
    )
}

/// A client subscribed on one node, reading every notification as it comes (in its own task,
/// so no queue ever fills), until the node closes the connection.
struct Collector {
    events: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start(addr: std::net::SocketAddr, params: Value) -> Collector {
        let mut ws = RawWs::connect(addr).await;
        ws.subscribe(params).await;
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let task = tokio::spawn(async move {
            while let Some(msg) = ws.try_recv(Duration::from_secs(3600)).await {
                if msg["method"] == "events.event" {
                    sink.lock()
                        .expect("events")
                        .push(msg["params"]["result"].clone());
                }
            }
        });
        Collector { events, task }
    }

    /// Every envelope since `afterSeq = 0` of `epoch`: the whole stream, then live.
    async fn all(addr: std::net::SocketAddr, epoch: &str) -> Collector {
        Self::start(addr, json!({"afterSeq": 0, "epoch": epoch})).await
    }

    fn now(&self) -> Vec<Value> {
        self.events.lock().expect("events").clone()
    }

    /// Waits until `done` holds for what arrived; what arrived then.
    async fn until(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let t0 = Instant::now();
        loop {
            let now = self.now();
            if done(&now) {
                return now;
            }
            assert!(
                t0.elapsed() < PATIENCE,
                "{what}: not within {PATIENCE:?}; got {} envelopes, the last: {:?}",
                now.len(),
                now.last()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every run of `runs` has ended (its terminal chat payload arrived).
    async fn until_ended(&self, what: &str, runs: &[String]) -> Vec<Value> {
        self.until(what, |evs| runs.iter().all(|r| ended(evs, r)))
            .await
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_control(env: &Value) -> bool {
    matches!(env["event"].as_str(), Some("tick" | "gap" | "shutdown"))
}

fn seq(env: &Value) -> u64 {
    env["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("a seq: {env}"))
}

/// The envelopes that are events (not `tick`, `gap`, `shutdown`).
fn data(envs: &[Value]) -> Vec<Value> {
    envs.iter().filter(|e| !is_control(e)).cloned().collect()
}

fn terminal(payload: &Value) -> bool {
    matches!(
        payload["state"].as_str(),
        Some("final" | "aborted" | "error")
    )
}

/// Whether `run`'s terminal chat payload is among `envs`.
fn ended(envs: &[Value], run: &str) -> bool {
    envs.iter()
        .any(|e| e["event"] == "chat" && e["payload"]["runId"] == run && terminal(&e["payload"]))
}

/// The outcome of `run` among `envs`.
fn outcome(envs: &[Value], run: &str) -> Option<String> {
    envs.iter()
        .find(|e| e["event"] == "chat" && e["payload"]["runId"] == run && terminal(&e["payload"]))
        .and_then(|e| e["payload"]["state"].as_str().map(str::to_string))
}

/// Starts a run with `chat.send`; its runId. A `-32025` with `retryable` (the shared buckets
/// of a JetStream cluster that has just started may not answer yet) is asked again, as a
/// client would.
async fn send(ws: &mut RawWs, session: &str, message: &str) -> String {
    let t0 = Instant::now();
    loop {
        let resp = ws
            .call(
                "chat.send",
                json!({"sessionKey": session, "message": message}),
            )
            .await;
        if resp["error"]["code"] == -32025
            && resp["error"]["data"]["retryable"] == true
            && t0.elapsed() < PATIENCE
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        return resp["result"]["runId"]
            .as_str()
            .unwrap_or_else(|| panic!("chat.send answered a runId: {resp}"))
            .to_string();
    }
}

/// The `seq`s of `envs` are consecutive (no hole, no repeat), from `first`.
fn assert_consecutive(name: &str, envs: &[Value], first: u64) {
    for (i, env) in envs.iter().enumerate() {
        assert_eq!(
            seq(env),
            first + i as u64,
            "{name}: envelope {i} has seq {} where {} was due: {env}",
            seq(env),
            first + i as u64
        );
    }
}

/// Every run's chat payloads come in its own order: `runSeq` up by one each time, nothing
/// after its terminal payload.
fn assert_runs_in_order(name: &str, envs: &[Value]) {
    let mut last: HashMap<String, (u64, bool)> = HashMap::new();
    for env in envs.iter().filter(|e| e["event"] == "chat") {
        let p = &env["payload"];
        let (Some(run), Some(run_seq)) = (p["runId"].as_str(), p["runSeq"].as_u64()) else {
            continue;
        };
        if let Some((prev, over)) = last.get(run) {
            assert!(
                !over,
                "{name}: run {run} has a payload after its end: {env}"
            );
            assert_eq!(
                run_seq,
                prev + 1,
                "{name}: run {run} runSeq {run_seq} after {prev}: {env}"
            );
        }
        last.insert(run.to_string(), (run_seq, terminal(p)));
    }
}

/// The envelopes of every list agree: the same `seq` is the same envelope (compared whole, as
/// JSON) up to the last `seq` all of them reached; each list is consecutive from `first`.
fn assert_same_stream(lists: &[(&str, Vec<Value>)], first: u64) -> u64 {
    let end = lists
        .iter()
        .map(|(name, l)| {
            l.last()
                .map(seq)
                .unwrap_or_else(|| panic!("{name} received nothing"))
        })
        .min()
        .unwrap_or(0);
    let cut: Vec<(&str, Vec<Value>)> = lists
        .iter()
        .map(|(name, l)| (*name, l.iter().filter(|e| seq(e) <= end).cloned().collect()))
        .collect();
    for (name, list) in &cut {
        assert_consecutive(name, list, first);
        assert_runs_in_order(name, list);
    }
    let (first_name, reference) = &cut[0];
    for (name, list) in &cut[1..] {
        for (a, b) in reference.iter().zip(list) {
            assert_eq!(a, b, "seq {}: {first_name} and {name} differ", seq(a));
        }
        assert_eq!(reference.len(), list.len(), "{first_name} and {name}");
    }
    end
}

#[tokio::test]
async fn three_nodes_deliver_one_stream_in_one_order() {
    let nats = NatsServer::start();
    let url = nats.url();
    let nodes = start_all(vec![node(&url, "a"), node(&url, "b"), node(&url, "c")]);
    // One epoch, the stream's, on every node.
    let mut epochs = Vec::new();
    for gw in &nodes {
        epochs.push(snapshot(gw.addr).await.0);
    }
    let epoch = epochs[0].clone();
    assert!(epoch.starts_with("CLAWGATE_EVENTS-"), "{epoch}");
    assert!(epochs.iter().all(|e| *e == epoch), "{epochs:?}");

    let mut collectors = Vec::new();
    for gw in &nodes {
        collectors.push(Collector::all(gw.addr, &epoch).await);
    }
    // A live subscriber too, without afterSeq: it must agree with the others from where it
    // started.
    let live = Collector::start(nodes[1].addr, json!({})).await;

    // Runs on every node, in sessions of their own, all at once.
    let mut senders = Vec::new();
    for gw in &nodes {
        senders.push(RawWs::connect(gw.addr).await);
    }
    let mut runs = Vec::new();
    for round in 0..3 {
        for (i, ws) in senders.iter_mut().enumerate() {
            let session = format!("s-{i}-{round}");
            let message = format!("node {i} round {round}: {}", "words ".repeat(20));
            runs.push(send(ws, &session, &message).await);
        }
    }
    let mut lists = Vec::new();
    for (i, c) in collectors.iter().enumerate() {
        let got = c.until_ended(&format!("node {i}"), &runs).await;
        lists.push((["a", "b", "c"][i], data(&got)));
    }
    for run in &runs {
        assert_eq!(outcome(&lists[0].1, run).as_deref(), Some("final"), "{run}");
    }
    let end = assert_same_stream(&lists, 1);
    assert!(lists[0].1.iter().all(|e| e["epoch"] == epoch.as_str()));
    // Every run's payloads are there, on every node.
    let chats = lists[0]
        .1
        .iter()
        .filter(|e| e["event"] == "chat" && seq(e) <= end)
        .count();
    assert!(chats >= runs.len() * 3, "{chats} chat payloads");

    let live = live.until_ended("the live subscriber", &runs).await;
    let live = data(&live);
    let from = seq(&live[0]);
    let reference: Vec<Value> = lists[1]
        .1
        .iter()
        .filter(|e| seq(e) >= from)
        .cloned()
        .collect();
    assert_same_stream(&[("b (afterSeq 0)", reference), ("b (live)", live)], from);
}

/// The last `seq` of an event among `envs`.
fn last_seq(envs: &[Value]) -> u64 {
    envs.iter()
        .filter(|e| !is_control(e))
        .map(seq)
        .max()
        .unwrap_or(0)
}

/// A client that read `seen` (up to `last`) elsewhere resumes on `addr` with `afterSeq = last`:
/// it gets no gap and exactly what `reference` (subscribed all along) got after `last`, up to
/// the reference's `end`.
async fn assert_resumes(
    name: &str,
    addr: std::net::SocketAddr,
    epoch: &str,
    last: u64,
    reference: &[Value],
) {
    let end = last_seq(reference);
    assert!(end > last, "{name}: events were published after {last}");
    let resumed = Collector::start(addr, json!({"afterSeq": last, "epoch": epoch})).await;
    let got = resumed.until(name, |evs| last_seq(evs) >= end).await;
    assert!(
        got.iter().all(|e| e["event"] != "gap"),
        "{name}: no gap on resuming: {got:?}"
    );
    let got = data(&got);
    assert_eq!(
        seq(&got[0]),
        last + 1,
        "{name}: resumed right after afterSeq"
    );
    let want: Vec<Value> = data(reference)
        .into_iter()
        .filter(|e| seq(e) > last)
        .collect();
    assert_same_stream(&[("the reference", want), (name, got)], last + 1);
}

#[tokio::test]
async fn a_client_resumes_on_another_node_after_kill9_of_its_own() {
    let nats = NatsServer::start();
    let url = nats.url();
    let mut nodes = start_all(vec![node(&url, "a"), node(&url, "b"), node(&url, "c")]);
    let (epoch, _) = snapshot(nodes[0].addr).await;
    let reference = Collector::all(nodes[2].addr, &epoch).await;
    let mut on_a = RawWs::connect(nodes[0].addr).await;
    let mut on_b = RawWs::connect(nodes[1].addr).await;
    let mut on_c = RawWs::connect(nodes[2].addr).await;

    // The client reads on node a while runs of a and b stream, up to the end of b's first.
    let client = Collector::all(nodes[0].addr, &epoch).await;
    let mut before = Vec::new();
    for i in 0..4 {
        before.push(send(&mut on_b, "b-before", &format!("run {i} of node b")).await);
    }
    send(&mut on_a, "a-own", "a run on node a").await;
    let seen = client
        .until("the client on node a", |evs| ended(evs, &before[0]))
        .await;
    drop(client);
    nodes[0].kill9();
    let last = last_seq(&seen);
    assert!(seen.iter().all(|e| e["epoch"] == epoch.as_str()));

    // Published while the client is away: more runs on b and c.
    let mut after = before.clone();
    for i in 0..2 {
        after.push(send(&mut on_b, "b-after", &format!("run {i} after")).await);
        after.push(send(&mut on_c, "c-after", &format!("run {i} after")).await);
    }
    let want = reference.until_ended("the reference", &after).await;
    for run in &after {
        assert_eq!(outcome(&want, run).as_deref(), Some("final"), "{run}");
    }
    assert_resumes("resumed on node b", nodes[1].addr, &epoch, last, &want).await;
}

#[tokio::test]
async fn a_restarted_node_resumes_after_seq_in_the_same_epoch() {
    let nats = NatsServer::start();
    let url = nats.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let a_config = config(&url, "a", "", "");
    let a = || Launcher::on(dir.path()).config(a_config.clone());
    let mut nodes = start_all(vec![a(), node(&url, "b")]);
    let (epoch, _) = snapshot(nodes[0].addr).await;
    let reference = Collector::all(nodes[1].addr, &epoch).await;
    let mut on_b = RawWs::connect(nodes[1].addr).await;

    for (way, round) in [("SIGTERM", 0), ("kill -9", 1)] {
        let client = Collector::all(nodes[0].addr, &epoch).await;
        let mut runs = Vec::new();
        for i in 0..3 {
            runs.push(send(&mut on_b, &format!("b-{round}"), &format!("{way} run {i}")).await);
        }
        let seen = client
            .until("the client on node a", |evs| ended(evs, &runs[0]))
            .await;
        drop(client);
        let last = last_seq(&seen);
        if round == 0 {
            let status = nodes[0].terminate();
            assert!(status.success(), "{way}: {status:?}");
        } else {
            nodes[0].kill9();
        }
        // Published while node a is down.
        for i in 0..2 {
            runs.push(send(&mut on_b, &format!("b-{round}-down"), &format!("run {i}")).await);
        }
        let want = reference.until_ended("the reference", &runs).await;
        nodes[0] = a().start();
        let (again, _) = snapshot(nodes[0].addr).await;
        assert_eq!(again, epoch, "{way}: the epoch is the stream's, unchanged");
        assert_resumes(
            &format!("{way}, restarted"),
            nodes[0].addr,
            &epoch,
            last,
            &want,
        )
        .await;
    }
}

#[tokio::test]
async fn an_after_seq_ahead_of_the_stream_is_refused_after_the_catch_up_wait() {
    let nats = NatsServer::start();
    let gw = node(&nats.url(), "a").start();
    let (epoch, latest) = snapshot(gw.addr).await;
    let mut ws = RawWs::connect(gw.addr).await;
    // Answered (RawWs::call gives up after 10 s): refused, not hung.
    let resp = ws
        .call(
            "events.subscribe",
            json!({"afterSeq": latest + 1000, "epoch": epoch}),
        )
        .await;
    assert_eq!(resp["error"]["code"], -32602, "{resp}");
    assert_eq!(resp["error"]["data"]["path"], "afterSeq", "{resp}");
    // The connection still works, and a seq it has is accepted.
    let sub = ws
        .call(
            "events.subscribe",
            json!({"afterSeq": latest, "epoch": epoch}),
        )
        .await;
    assert!(sub["result"].is_string(), "{sub}");
    // Another epoch's seq, however large, is a restart gap, not a refusal.
    let mut other = RawWs::connect(gw.addr).await;
    other
        .subscribe(json!({"afterSeq": latest + 1000, "epoch": "CLAWGATE_EVENTS-1"}))
        .await;
    let first = other.next_event().await;
    assert_eq!(first["event"], "gap", "{first}");
    assert_eq!(first["payload"]["reason"], "restart", "{first}");
}

/// A NATS client of `urls` (comma-separated).
async fn nats_client(urls: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    let addrs: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(|u| u.parse().expect("a NATS URL"))
        .collect();
    async_nats::connect(addrs).await
}

/// Deletes the event stream, as an operator could.
async fn delete_events_stream(url: &str) {
    let client = nats_client(url).await.expect("connect to NATS");
    async_nats::jetstream::new(client)
        .delete_stream("CLAWGATE_EVENTS")
        .await
        .expect("the event stream is deleted");
}

#[tokio::test]
async fn a_recreated_stream_is_a_restart_gap() {
    let nats = NatsServer::start();
    let url = nats.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let a_config = config(&url, "a", "", "");
    let a = || Launcher::on(dir.path()).config(a_config.clone());
    let mut nodes = start_all(vec![a(), node(&url, "b")]);
    let (old_epoch, _) = snapshot(nodes[0].addr).await;
    let live = Collector::all(nodes[1].addr, &old_epoch).await;
    let mut on_a = RawWs::connect(nodes[0].addr).await;
    let run = send(&mut on_a, "before", "before the stream goes").await;
    let before = live.until("the run before", |evs| ended(evs, &run)).await;
    let old_last = last_seq(&before);

    // The stream goes under the running nodes: they make it again, a new epoch, and a
    // subscriber of the old one is told so with a restart gap.
    delete_events_stream(&url).await;
    let got = live
        .until("the restart gap", |evs| {
            evs.iter()
                .any(|e| e["event"] == "gap" && e["payload"]["reason"] == "restart")
        })
        .await;
    let gap = got.iter().find(|e| e["event"] == "gap").expect("the gap");
    assert_eq!(
        gap["payload"],
        json!({"fromSeq": 0, "toSeq": 0, "reason": "restart"})
    );
    let epoch = gap["epoch"].as_str().expect("an epoch").to_string();
    assert_ne!(epoch, old_epoch, "a recreated stream is a new epoch");
    assert!(epoch.starts_with("CLAWGATE_EVENTS-"), "{epoch}");
    let run = send(&mut on_a, "after", "after the stream came back").await;
    let got = live.until("the run after", |evs| ended(evs, &run)).await;
    let at = got
        .iter()
        .position(|e| e["event"] == "gap")
        .expect("the gap");
    let rest = data(&got[at + 1..]);
    assert_consecutive("after the gap", &rest, 1);
    assert!(
        rest.iter().all(|e| e["epoch"] == epoch.as_str()),
        "{rest:?}"
    );
    for gw in &nodes {
        assert_eq!(
            snapshot(gw.addr).await.0,
            epoch,
            "every node is on the new epoch"
        );
    }

    // A node restarted meanwhile has the new epoch too; a client of the old one gets the
    // restart gap, then the whole new stream.
    nodes[0].terminate();
    nodes[0] = a().start();
    assert_eq!(snapshot(nodes[0].addr).await.0, epoch);
    let client = Collector::start(
        nodes[0].addr,
        json!({"afterSeq": old_last, "epoch": old_epoch}),
    )
    .await;
    let got = client.until("the run after", |evs| ended(evs, &run)).await;
    assert_eq!(got[0]["event"], "gap", "{:?}", got[0]);
    assert_eq!(
        got[0]["payload"],
        json!({"fromSeq": 0, "toSeq": 0, "reason": "restart"})
    );
    assert_eq!(got[0]["epoch"], epoch.as_str());
    let replayed = data(&got[1..]);
    assert_consecutive("replayed after the gap", &replayed, 1);
    let want = data(&live.now()[at + 1..]);
    assert_same_stream(&[("live on b", want), ("restarted a", replayed)], 1);
}

/// The stream's leader: the index of the NATS server named in its cluster info.
async fn events_leader(cluster: &NatsCluster) -> Option<usize> {
    let client = nats_client(&cluster.urls()).await.ok()?;
    let mut stream = async_nats::jetstream::new(client)
        .get_stream("CLAWGATE_EVENTS")
        .await
        .ok()?;
    let info = stream.info().await.ok()?;
    let leader = info.cluster.as_ref()?.leader.clone()?;
    (0..cluster.len()).find(|&i| cluster.server(i).name() == leader)
}

#[tokio::test]
async fn one_nats_server_of_three_killed_while_runs_stream() {
    let mut cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    // Runs of 60 deltas 10 ms apart: still streaming when the server goes.
    let pieces: Vec<String> = (0..60).map(|i| format!("piece{i:02} ")).collect();
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let script = Script::sse(anthropic::reply(&refs)).paced(10);
    let fake = FakeProvider::start(vec![script; 9]).await;
    let agent = format!(
        "[agents.main]\nprovider = \"anthropic\"\nmodel = \"claude-test\"\nbase_url = \"http://{}\"\napi_key_env = \"CLAWGATE_TEST_KEY\"\ndelta_interval_ms = 1\n",
        fake.addr
    );
    let launchers = ["a", "b", "c"]
        .iter()
        .map(|id| {
            Launcher::new()
                .env("CLAWGATE_TEST_KEY", "test-key")
                .config(config(&urls, id, "replicas = 3", &agent))
        })
        .collect();
    let nodes = start_all(launchers);
    let (epoch, _) = snapshot(nodes[0].addr).await;
    let mut collectors = Vec::new();
    for gw in &nodes {
        collectors.push(Collector::all(gw.addr, &epoch).await);
    }
    let mut senders = Vec::new();
    for gw in &nodes {
        senders.push(RawWs::connect(gw.addr).await);
    }
    let mut runs = Vec::new();
    for round in 0..3 {
        for (i, ws) in senders.iter_mut().enumerate() {
            runs.push(send(ws, &format!("n{i}-{round}"), "stream").await);
        }
    }
    // Once deltas flow, the stream's leader goes (a follower when none is known).
    collectors[0]
        .until("the first deltas", |evs| {
            evs.iter()
                .filter(|e| e["payload"]["state"] == "delta")
                .count()
                >= 10
        })
        .await;
    let victim = events_leader(&cluster).await.unwrap_or(0);
    cluster.kill9(victim);
    let mut lists = Vec::new();
    for (i, c) in collectors.iter().enumerate() {
        let got = c.until_ended(&format!("node {i}"), &runs).await;
        lists.push((["a", "b", "c"][i], data(&got)));
    }
    for run in &runs {
        // A run may end `error` when its transcript cannot be written to JetStream during
        // the failover (that is the transcripts' part); its events are whole all the same.
        if outcome(&lists[0].1, run).as_deref() != Some("final") {
            continue;
        }
        // Every delta exactly once, in order: the run's text whole.
        let text: String = lists[0]
            .1
            .iter()
            .filter(|e| e["payload"]["runId"] == run.as_str() && e["payload"]["state"] == "delta")
            .filter_map(|e| e["payload"]["text"].as_str())
            .collect();
        assert_eq!(text, pieces.concat(), "run {run}");
    }
    assert_same_stream(&lists, 1);
    cluster.restart(victim);
}

#[tokio::test]
async fn a_small_stream_forgets_old_events_and_resuming_before_them_is_an_expired_gap() {
    let nats = NatsServer::start();
    // The stream keeps 20 events: session x's last event is forgotten while y's runs go on,
    // and x's next run is stored all the same.
    let gw = Launcher::new()
        .config(config(&nats.url(), "a", "", "replay_capacity = 20\n"))
        .start();
    let (epoch, _) = snapshot(gw.addr).await;
    let all = Collector::start(gw.addr, json!({})).await;
    let mut ws = RawWs::connect(gw.addr).await;
    let mut runs = vec![send(&mut ws, "x", "first").await];
    for i in 0..5 {
        runs.push(send(&mut ws, "y", &format!("run {i}")).await);
    }
    all.until_ended("y's runs", &runs).await;
    runs.push(send(&mut ws, "x", "second").await);
    let got = all.until_ended("x's second run", &runs).await;
    let got = data(&got);
    assert_consecutive("live", &got, seq(&got[0]));
    assert_runs_in_order("live", &got);
    let last = last_seq(&got);
    assert!(last > 40, "{last}");

    // Resuming from before what the stream keeps: the gap says what is lost, then the rest.
    let late = Collector::start(gw.addr, json!({"afterSeq": 1, "epoch": epoch})).await;
    let resumed = late
        .until("the resumed client", |evs| last_seq(evs) >= last)
        .await;
    assert_eq!(resumed[0]["event"], "gap", "{:?}", resumed[0]);
    assert_eq!(resumed[0]["payload"]["reason"], "expired");
    assert_eq!(resumed[0]["payload"]["fromSeq"], 2);
    let oldest = seq(&resumed[1]);
    assert_eq!(resumed[0]["payload"]["toSeq"], oldest - 1);
    assert!(
        oldest > 2 && last - oldest < 20,
        "at most the 20 events kept: {oldest}..{last}"
    );
    let kept: Vec<Value> = got.into_iter().filter(|e| seq(e) >= oldest).collect();
    assert_same_stream(&[("live", kept), ("resumed", data(&resumed))], oldest);
}

#[test]
fn a_node_refuses_a_nats_server_taking_smaller_messages() {
    let nats = NatsServer::start();
    // The test servers take 8 MB messages; the gateway's frames here are 16 MiB.
    let (code, stderr) = Launcher::new()
        .config(config(
            &nats.url(),
            "a",
            "",
            "[gateway]\nmax_payload_bytes = 16777216\n",
        ))
        .run_to_exit();
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("max_payload"), "{stderr}");
    assert!(stderr.contains("16777216"), "{stderr}");
}

#[tokio::test]
async fn without_cluster_nothing_of_it_shows() {
    let gw = crate::common::start(|_| {}).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let hello = ws.call("gateway.hello", json!({})).await;
    let features = hello["result"]["features"]
        .as_array()
        .unwrap_or_else(|| panic!("features: {hello}"));
    assert!(!features.contains(&json!("cluster")), "{hello}");
    let epoch = hello["result"]["snapshot"]["epoch"].as_str().unwrap_or("");
    assert!(!epoch.starts_with("CLAWGATE_EVENTS"), "{hello}");
    let status = ws.call("gateway.status", json!({})).await;
    assert!(status["result"].is_object(), "{status}");
    assert!(status["result"].get("cluster").is_none(), "{status}");
    let ready = crate::common::http(gw.addr(), "GET", "/readyz", &[], "").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let checks = &ready.json()["checks"];
    assert!(checks.is_object(), "{}", ready.body);
    assert!(checks.get("cluster").is_none(), "{}", ready.body);
}
