//! The NATS test infrastructure itself (common/nats.rs): a single server and a 3-server
//! JetStream cluster start, greet clients, and a killed cluster member comes back.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;

use serde_json::Value;

use crate::common::nats::{NatsCluster, NatsServer};

/// The JSON of the `INFO {…}` line a NATS server greets every client with.
fn info(server: &NatsServer) -> Value {
    let stream = TcpStream::connect(("127.0.0.1", server.port())).expect("connect to NATS");
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .expect("the INFO line");
    let json = line
        .strip_prefix("INFO ")
        .filter(|j| j.starts_with('{'))
        .unwrap_or_else(|| panic!("not an INFO line: {line:?}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("INFO JSON ({e}): {json}"))
}

#[test]
fn a_server_and_a_cluster_start_and_a_killed_member_comes_back() {
    let single = NatsServer::start();
    assert_eq!(info(&single)["jetstream"], true, "{}", single.log());

    let mut cluster = NatsCluster::start(3);
    for i in 0..cluster.len() {
        let info = info(cluster.server(i));
        assert_eq!(info["jetstream"], true);
        assert_eq!(info["server_name"], format!("n{i}"));
    }
    assert_eq!(cluster.urls().split(',').count(), 3);

    // A follower, so its restart needs no new election (which alone takes seconds).
    let leader = cluster.meta_leader().expect("a meta leader");
    let i = (leader + 1) % cluster.len();
    let port = cluster.server(i).port();
    cluster.kill9(i);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "n{i} still accepts connections after kill9"
    );
    cluster.restart(i);
    assert_eq!(info(cluster.server(i))["jetstream"], true);
    assert!(cluster.meta_leader().is_some());
}
