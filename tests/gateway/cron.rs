//! Scheduled runs over real sockets: `cron.*` methods and their errors, `cron.changed`, a job
//! whose previous run is still going, config jobs, and a one-second schedule across a restart
//! of the binary (SIGTERM and `kill -9`): exactly one catch-up firing, never two runs for one
//! scheduled time, `catchUp = "none"` catching nothing up, jobs kept in cron.json.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::common::launcher::{Gateway, Launcher};
use crate::common::transcript::Transcript;
use crate::common::{RawWs, start};
use crate::fake_provider::{FakeProvider, Script, anthropic};

/// Only against hangs.
const PATIENCE: Duration = Duration::from_secs(60);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn cron_events(addr: std::net::SocketAddr, replay: bool) -> RawWs {
    let mut ws = RawWs::connect(addr).await;
    let params = if replay {
        json!({"events": ["cron.changed"], "afterSeq": 0})
    } else {
        json!({"events": ["cron.changed"]})
    };
    ws.subscribe(params).await;
    ws
}

fn error_code(resp: &Value) -> i64 {
    resp["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an error: {resp}"))
}

/// The scheduled times of the runs the session's transcript holds (from each `started` run
/// marker's idempotency key `cron:<scheduledAt>`), in order; manual runs have none.
fn scheduled_runs(dir: &Path, key: &str) -> Vec<u64> {
    Transcript::of_key(dir, key)
        .of_type("run")
        .iter()
        .filter(|m| m["state"] == "started")
        .filter_map(|m| {
            m["idempotencyKey"]
                .as_str()
                .and_then(|k| k.strip_prefix("cron:"))
                .and_then(|t| t.parse().ok())
        })
        .collect()
}

fn assert_unique_increasing(times: &[u64]) {
    let set: BTreeSet<u64> = times.iter().copied().collect();
    assert_eq!(
        set.len(),
        times.len(),
        "a scheduled time ran twice: {times:?}"
    );
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "scheduled times out of order: {times:?}"
    );
}

#[tokio::test]
async fn add_list_update_remove_run() {
    let gw = start(|_| {}).await;
    let mut events = cron_events(gw.addr(), false).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let added = ws
        .call(
            "cron.add",
            json!({"name": "daily", "schedule": {"cron": "0 9 * * 1-5", "tz": "Europe/Berlin"}, "message": "Summarize"}),
        )
        .await;
    let job = &added["result"];
    assert_eq!(job["name"], "daily", "{added}");
    assert_eq!(job["sessionKey"], "cron:daily");
    assert_eq!(job["source"], "store");
    assert_eq!(job["enabled"], true);
    assert_eq!(job["catchUp"], "one");
    let next = job["nextRunAt"].as_u64().expect("nextRunAt");
    assert!(next > now_ms());
    assert_eq!(
        job["schedule"],
        json!({"cron": "0 9 * * 1-5", "tz": "Europe/Berlin"})
    );

    let list = ws.call("cron.list", json!({})).await;
    assert_eq!(
        list["result"]["jobs"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    assert_eq!(list["result"]["jobs"][0]["nextRunAt"], next);

    let updated = ws
        .call(
            "cron.update",
            json!({"name": "daily", "enabled": false, "catchUp": "none"}),
        )
        .await;
    assert_eq!(updated["result"]["enabled"], false, "{updated}");
    assert_eq!(updated["result"]["catchUp"], "none");
    assert!(updated["result"]["nextRunAt"].is_null(), "{updated}");
    assert_eq!(
        updated["result"]["message"], "Summarize",
        "unchanged fields stay"
    );

    // cron.run fires a disabled job too, now, into cron:daily.
    let run = ws.call("cron.run", json!({"name": "daily"})).await;
    let run_id = run["result"]["runId"].as_str().expect("runId").to_string();
    let started = events.next_payload_of("cron.changed").await;
    assert_eq!(started["name"], "daily");
    assert_eq!(started["state"], "started");
    assert_eq!(started["runId"], run_id.as_str());
    assert_eq!(started["sessionKey"], "cron:daily");
    assert!(
        started.get("scheduledAt").is_none(),
        "cron.run has no scheduled time"
    );
    let history = loop {
        let h = ws
            .call("chat.history", json!({"sessionKey": "cron:daily"}))
            .await;
        let n = h["result"]["messages"].as_array().map_or(0, Vec::len);
        if n >= 2 {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(history["result"]["messages"][0]["content"], "Summarize");
    assert_eq!(
        history["result"]["messages"][1]["content"],
        "Echo: Summarize"
    );
    let markers = gw.transcript("cron:daily").of_type("run");
    assert!(markers.iter().any(|m| m["runId"] == run_id.as_str()));
    // The outcome of the last run.
    let t0 = Instant::now();
    loop {
        let list = ws.call("cron.list", json!({})).await;
        let job = &list["result"]["jobs"][0];
        assert_eq!(job["lastRunId"], run_id.as_str());
        assert!(job["lastRunAt"].as_u64().is_some());
        if job["lastOutcome"] == "final" {
            break;
        }
        assert!(t0.elapsed() < PATIENCE, "no outcome: {list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let removed = ws.call("cron.remove", json!({"name": "daily"})).await;
    assert_eq!(removed["result"]["removed"], true, "{removed}");
    let list = ws.call("cron.list", json!({})).await;
    assert_eq!(list["result"]["jobs"], json!([]));
    let again = ws.call("cron.remove", json!({"name": "daily"})).await;
    assert_eq!(error_code(&again), -32022);
    let run = ws.call("cron.run", json!({"name": "daily"})).await;
    assert_eq!(error_code(&run), -32022);
    let update = ws
        .call("cron.update", json!({"name": "daily", "enabled": true}))
        .await;
    assert_eq!(error_code(&update), -32022);
}

#[tokio::test]
async fn refusals_say_what_was_wrong() {
    let gw = start(|_| {}).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let add = |params: Value| params;
    let ok = ws
        .call(
            "cron.add",
            add(json!({"name": "a", "schedule": {"everyMs": 3_600_000}, "message": "m"})),
        )
        .await;
    assert!(ok.get("result").is_some(), "{ok}");
    let cases = [
        (
            json!({"name": "a", "schedule": {"everyMs": 5000}, "message": "m"}),
            -32023,
            "exists",
        ),
        (
            json!({"name": "b", "schedule": {"at": 1000}, "message": "m"}),
            -32602,
            "not in the future",
        ),
        (
            json!({"name": "b", "schedule": {"cron": "61 * * * *"}, "message": "m"}),
            -32602,
            "minute",
        ),
        (
            json!({"name": "b", "schedule": {"cron": "* * * *"}, "message": "m"}),
            -32602,
            "expected 5",
        ),
        (
            json!({"name": "b", "schedule": {"cron": "* * * * *", "tz": "Mars/Olympus"}, "message": "m"}),
            -32602,
            "unknown time zone",
        ),
        (
            json!({"name": "b", "schedule": {"everyMs": 999}, "message": "m"}),
            -32602,
            "at least 1000",
        ),
        (
            json!({"name": "b", "schedule": {"everyMs": 1000, "at": 5}, "message": "m"}),
            -32602,
            "exactly one",
        ),
        (
            json!({"name": "b", "schedule": {}, "message": "m"}),
            -32602,
            "exactly one",
        ),
        (
            json!({"name": "Bad_Name", "schedule": {"everyMs": 1000}, "message": "m"}),
            -32602,
            "a-z 0-9 -",
        ),
        (
            json!({"name": "b", "schedule": {"everyMs": 1000}, "message": "m", "agent": "ghost"}),
            -32602,
            "ghost",
        ),
        (
            json!({"name": "b", "schedule": {"everyMs": 1000}, "message": "  "}),
            -32602,
            "whitespace",
        ),
        (
            json!({"name": "b", "schedule": {"every": 1000}, "message": "m"}),
            -32602,
            "every",
        ),
    ];
    for (params, code, needle) in cases {
        let resp = ws.call("cron.add", params.clone()).await;
        assert_eq!(error_code(&resp), code, "{params}: {resp}");
        let message = resp["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{params}: {message:?} should say {needle:?}"
        );
    }
    let past = ws
        .call(
            "cron.update",
            json!({"name": "a", "schedule": {"at": 1000}}),
        )
        .await;
    assert_eq!(error_code(&past), -32602, "{past}");
    let list = ws.call("cron.list", json!({})).await;
    assert_eq!(
        list["result"]["jobs"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    assert_eq!(
        list["result"]["jobs"][0]["schedule"],
        json!({"everyMs": 3_600_000})
    );
}

#[tokio::test]
async fn a_job_whose_run_is_still_going_is_skipped() {
    // The first run's stream stalls (started, then nothing), so it stays active.
    let fake = FakeProvider::start(vec![Script::sse(vec![anthropic::start()]).hold(30_000)]).await;
    let addr = fake.addr;
    let gw = start(move |c| {
        let agent = c.default_agent_mut();
        agent.provider = clawgate::config::ProviderKind::Anthropic;
        agent.base_url = Some(format!("http://{addr}"));
        agent.model = "claude-test".into();
        agent.api_key_env = Some("CARGO_MANIFEST_DIR".into());
        agent.idle_timeout_ms = 60_000;
    })
    .await;
    let mut events = cron_events(gw.addr(), false).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let added = ws
        .call(
            "cron.add",
            json!({"name": "busy", "schedule": {"everyMs": 1000}, "message": "slow"}),
        )
        .await;
    assert!(added.get("result").is_some(), "{added}");
    let started = events.next_payload_of("cron.changed").await;
    assert_eq!(started["state"], "started", "{started}");
    let run_id = started["runId"].clone();
    let skipped = events.next_payload_of("cron.changed").await;
    assert_eq!(skipped["state"], "skipped", "{skipped}");
    assert_eq!(skipped["runId"], run_id, "names the run still going");
    assert!(
        skipped["error"]
            .as_str()
            .unwrap_or_default()
            .contains("still active"),
        "{skipped}"
    );
    assert!(skipped["scheduledAt"].as_u64() > started["scheduledAt"].as_u64());
    // cron.run is refused the same way, naming the run.
    let run = ws.call("cron.run", json!({"name": "busy"})).await;
    assert_eq!(error_code(&run), -32023, "{run}");
    assert_eq!(run["error"]["data"]["activeRunId"], run_id);
    // One run only: the others were skipped.
    let runs = ws
        .call("runs.list", json!({"sessionKey": "cron:busy"}))
        .await;
    assert_eq!(
        runs["result"]["runs"].as_array().map(Vec::len),
        Some(1),
        "{runs}"
    );
    let _ = ws.call("chat.abort", json!({"runId": run_id})).await;
}

#[tokio::test]
async fn a_config_job_fires_and_is_changed_in_the_config_only() {
    let gw = start(|c| {
        c.cron.insert(
            "tick".into(),
            clawgate::config::CronJobConfig {
                every_ms: Some(1000),
                message: "tick".into(),
                ..Default::default()
            },
        );
    })
    .await;
    let mut events = cron_events(gw.addr(), true).await;
    let started = events.next_payload_of("cron.changed").await;
    assert_eq!(started["name"], "tick", "{started}");
    assert_eq!(started["state"], "started");
    assert_eq!(started["sessionKey"], "cron:tick");
    let mut ws = RawWs::connect(gw.addr()).await;
    let list = ws.call("cron.list", json!({})).await;
    assert_eq!(list["result"]["jobs"][0]["source"], "config", "{list}");
    assert_eq!(
        list["result"]["jobs"][0]["schedule"],
        json!({"everyMs": 1000})
    );
    for (method, params) in [
        ("cron.remove", json!({"name": "tick"})),
        ("cron.update", json!({"name": "tick", "enabled": false})),
        (
            "cron.add",
            json!({"name": "tick", "schedule": {"everyMs": 1000}, "message": "m"}),
        ),
    ] {
        let resp = ws.call(method, params).await;
        assert_eq!(error_code(&resp), -32023, "{method}: {resp}");
    }
    let remove = ws.call("cron.remove", json!({"name": "tick"})).await;
    assert!(
        remove["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("[cron.tick]"),
        "{remove}"
    );
}

#[tokio::test]
async fn an_invalid_config_job_is_refused() {
    let mut config = clawgate::config::Config::default();
    config.cron.insert(
        "bad".into(),
        clawgate::config::CronJobConfig {
            cron: Some("0 25 * * *".into()),
            message: "m".into(),
            ..Default::default()
        },
    );
    let err = clawgate::config::validate(&config).expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("cron.bad.cron") && text.contains("hour"),
        "{text}"
    );
}

/// Waits for `n` `started` events of `name` on `ws`; returns every `cron.changed` payload seen.
async fn until_started(ws: &mut RawWs, name: &str, n: usize) -> Vec<Value> {
    let t0 = Instant::now();
    let mut seen = Vec::new();
    let mut started = 0;
    while started < n {
        assert!(t0.elapsed() < PATIENCE, "only {started} firings: {seen:?}");
        let e = ws.next_payload_of("cron.changed").await;
        if e["name"] == name && e["state"] == "started" {
            started += 1;
        }
        seen.push(e);
    }
    seen
}

/// The one-second job across a restart, stopped by `stop`.
async fn across_a_restart(stop: impl FnOnce(&mut Gateway), catch_up: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Launcher::on(dir.path()).start();
    {
        let mut events = cron_events(gw.addr, false).await;
        let mut ws = RawWs::connect(gw.addr).await;
        let added = ws
            .call(
                "cron.add",
                json!({"name": "beat", "schedule": {"everyMs": 1000}, "message": "beat", "catchUp": catch_up}),
            )
            .await;
        assert!(added.get("result").is_some(), "{added}");
        until_started(&mut events, "beat", 2).await;
    }
    stop(&mut gw);
    let stopped_at = now_ms();
    let before = scheduled_runs(dir.path(), "cron:beat");
    assert!(before.len() >= 2, "{before:?}");
    // Several scheduled times pass while the gateway is down.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let mut gw = Launcher::on(dir.path()).env("RUST_LOG", "info").start();
    // The whole buffer of the new lifetime: what the startup did comes first.
    let mut events = cron_events(gw.addr, true).await;
    let seen = until_started(&mut events, "beat", 2).await;
    let mut ws = RawWs::connect(gw.addr).await;
    let list = ws.call("cron.list", json!({})).await;
    assert_eq!(
        list["result"]["jobs"][0]["name"], "beat",
        "kept in cron.json: {list}"
    );
    gw.terminate();
    // A firing that `kill -9` cut short (scheduled before the stop) is finished at startup
    // too; the catch-up is the one for the times missed after the stop.
    let catch_ups: Vec<&Value> = seen
        .iter()
        .filter(|e| e["catchUp"] == true && e["scheduledAt"].as_u64() > Some(stopped_at))
        .collect();
    assert_eq!(catch_ups.len(), 1, "one catch-up at startup: {seen:?}");
    let catch_up_event = catch_ups[0];
    let at = catch_up_event["scheduledAt"].as_u64().expect("scheduledAt");
    // The latest of the times missed (several passed: the sleep was 3.5 s).
    assert!(
        at >= stopped_at + 2000,
        "the latest missed time: {at} vs {stopped_at}"
    );
    assert!(at <= now_ms());
    let all = scheduled_runs(dir.path(), "cron:beat");
    assert_unique_increasing(&all);
    let after_stop: Vec<u64> = all.iter().copied().filter(|t| *t > stopped_at).collect();
    match catch_up {
        "one" => {
            // The missed times were not fired one by one: the first run after the stop is
            // the catch-up (unless a run resumed after the restart was still going, when the
            // catch-up is skipped and says so).
            match catch_up_event["state"].as_str() {
                Some("started") => assert_eq!(after_stop.first(), Some(&at), "{all:?}"),
                Some("skipped") => {
                    assert!(after_stop.first().is_none_or(|t| *t > at), "{all:?}")
                }
                other => panic!("catch-up {other:?}: {catch_up_event}"),
            }
            assert!(gw.log().contains("catching up once"), "logged");
        }
        _ => {
            assert_eq!(catch_up_event["state"], "skipped", "{catch_up_event}");
            assert!(
                catch_up_event["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("catchUp none"),
                "{catch_up_event}"
            );
            assert!(
                after_stop.iter().all(|t| *t > at),
                "nothing caught up: {all:?} {at}"
            );
            assert!(gw.log().contains("not caught up"), "logged");
        }
    }
    // Normal firings went on after the restart, one per scheduled time.
    assert!(
        after_stop.iter().filter(|t| **t > at).count() >= 1,
        "{all:?}"
    );
}

#[tokio::test]
async fn one_second_schedule_across_sigterm_catches_up_once() {
    across_a_restart(
        |gw| {
            gw.terminate();
        },
        "one",
    )
    .await;
}

#[tokio::test]
async fn one_second_schedule_across_kill_9_catches_up_once() {
    across_a_restart(Gateway::kill9, "one").await;
}

#[tokio::test]
async fn catch_up_none_fires_nothing_for_the_downtime() {
    across_a_restart(Gateway::kill9, "none").await;
}

#[tokio::test]
async fn a_firing_that_cannot_start_is_a_failed_event() {
    // An agent whose provider has no key: every firing fails, and says why.
    let gw = start(|c| {
        c.agents.insert(
            "nokey".into(),
            clawgate::config::AgentConfig {
                provider: clawgate::config::ProviderKind::Anthropic,
                api_key_env: Some("CLAWGATE_CRON_TEST_UNSET_KEY".into()),
                ..Default::default()
            },
        );
    })
    .await;
    let mut events = cron_events(gw.addr(), false).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let added = ws
        .call(
            "cron.add",
            json!({"name": "nokey", "schedule": {"everyMs": 1000}, "message": "m", "agent": "nokey"}),
        )
        .await;
    assert!(added.get("result").is_some(), "{added}");
    let failed = events.next_payload_of("cron.changed").await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(failed.get("runId").is_none());
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or_default()
            .contains("CLAWGATE_CRON_TEST_UNSET_KEY"),
        "{failed}"
    );
    assert!(failed["scheduledAt"].as_u64().is_some());
    let list = ws.call("cron.list", json!({})).await;
    assert_eq!(list["result"]["jobs"][0]["lastOutcome"], "failed", "{list}");
    let run = ws.call("cron.run", json!({"name": "nokey"})).await;
    assert_eq!(error_code(&run), -32026, "{run}");
    // Nothing was started in its session.
    assert!(gw.running.gateway.store().get("cron:nokey").is_err());
}

#[tokio::test]
async fn a_job_added_to_the_config_while_running_fires() {
    let gw = start(|_| {}).await;
    let mut events = cron_events(gw.addr(), false).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let got = ws.call("config.get", json!({})).await;
    let hash = got["result"]["hash"].as_str().expect("hash").to_string();
    let patched = ws
        .call(
            "config.patch",
            json!({"patch": {"cron": {"hot": {"every_ms": 1000, "message": "hot", "session_key": "ops"}}}, "baseHash": hash}),
        )
        .await;
    assert_eq!(patched["result"]["reloadKind"], "hot", "{patched}");
    let started = events.next_payload_of("cron.changed").await;
    assert_eq!(started["name"], "hot", "{started}");
    assert_eq!(started["state"], "started");
    assert_eq!(started["sessionKey"], "ops");
    let schema = ws.call("config.schema", json!({})).await;
    let text = schema["result"].to_string();
    assert!(
        text.contains("every_ms"),
        "[cron.<name>] is in config.schema"
    );
}

#[tokio::test]
async fn an_at_job_fires_once_and_disables_itself() {
    let gw = start(|_| {}).await;
    let mut events = cron_events(gw.addr(), false).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let at = now_ms() + 1500;
    let added = ws
        .call(
            "cron.add",
            json!({"name": "once", "schedule": {"at": at}, "message": "once"}),
        )
        .await;
    assert_eq!(added["result"]["nextRunAt"], at, "{added}");
    let started = events.next_payload_of("cron.changed").await;
    assert_eq!(started["state"], "started", "{started}");
    assert_eq!(started["scheduledAt"], at);
    let list = ws.call("cron.list", json!({})).await;
    let job = &list["result"]["jobs"][0];
    assert_eq!(job["enabled"], false, "{list}");
    assert!(job["nextRunAt"].is_null(), "{list}");
    assert_eq!(job["lastScheduledAt"], at);
}

#[tokio::test]
async fn a_firing_interrupted_before_its_run_started_is_finished_once() {
    // cron.json as a crash right after recording a firing leaves it: the time is recorded,
    // no run id yet.
    let dir = tempfile::tempdir().expect("tempdir");
    let t = now_ms() - 10_000;
    let file = json!({"version": 1, "jobs": [{"name": "beat", "schedule": {"everyMs": 3_600_000}, "message": "beat", "enabled": true, "catchUp": "one", "createdAt": t - 3_600_000}],
        "state": {"beat": {"anchor": t - 3_600_000, "cursor": t, "lastRunAt": t, "lastScheduledAt": t, "pending": t}}});
    std::fs::write(dir.path().join("cron.json"), file.to_string()).expect("write");
    for _ in 0..2 {
        let mut gw = Launcher::on(dir.path()).start();
        let mut ws = RawWs::connect(gw.addr).await;
        // Once the scheduler has done its startup, the job's last run is recorded.
        let t0 = Instant::now();
        loop {
            let list = ws.call("cron.list", json!({})).await;
            let job = &list["result"]["jobs"][0];
            if job["lastRunId"].is_string() && job["lastOutcome"] == "final" {
                break;
            }
            assert!(t0.elapsed() < PATIENCE, "not finished: {list}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        gw.terminate();
        assert_eq!(
            scheduled_runs(dir.path(), "cron:beat"),
            vec![t],
            "one run for {t}"
        );
    }
}
