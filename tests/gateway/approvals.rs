//! Approvals against the real binary: a tool call that waits for a person, allowed, denied,
//! remembered for the session, timed out, aborted while waiting, resolved twice, unknown, by
//! a token that may not; a glob over MCP tool names; what runs.list and chat.inject do while a
//! run waits.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::RawWs;
use crate::common::launcher::{Gateway, Launcher};
use crate::common::transcript::Transcript;

/// The echo agent with `exec = "ask"` and `extra` lines of `[agents.main.tools]`.
pub fn asking(extra: &str) -> String {
    format!(
        "[agents.main]\nprovider = \"echo\"\nmodel = \"echo\"\n[agents.main.tools]\nexec = \"ask\"\n{extra}\n"
    )
}

/// The message that makes echo call `exec` with `command`.
pub fn exec_message(command: &str) -> String {
    format!("/tool exec {}", json!({ "command": command }))
}

/// A chat.stream subscription read payload by payload.
pub struct Stream {
    pub sub: String,
    pub seen: Vec<Value>,
}

impl Stream {
    /// Starts `chat.stream` with `params` on `ws`.
    pub async fn start(ws: &mut RawWs, params: Value) -> Stream {
        let resp = ws.call("chat.stream", params).await;
        let sub = resp["result"]
            .as_str()
            .unwrap_or_else(|| panic!("stream started: {resp}"))
            .to_string();
        Stream {
            sub,
            seen: Vec::new(),
        }
    }

    /// The next payload of this stream.
    pub async fn next(&mut self, ws: &mut RawWs) -> Value {
        loop {
            let msg = ws.recv().await;
            if msg["method"] == "chat.event" && msg["params"]["subscription"] == self.sub.as_str() {
                let payload = msg["params"]["result"]["payload"].clone();
                self.seen.push(payload.clone());
                return payload;
            }
        }
    }

    /// Payloads up to the first in `state`, which is returned.
    pub async fn until(&mut self, ws: &mut RawWs, state: &str) -> Value {
        loop {
            let p = self.next(ws).await;
            if p["state"] == state {
                return p;
            }
            assert!(
                !matches!(p["state"].as_str(), Some("final" | "aborted" | "error")),
                "the run ended before `{state}`: {p}"
            );
        }
    }

    /// Payloads up to the terminal one, which is returned.
    pub async fn end(&mut self, ws: &mut RawWs) -> Value {
        loop {
            let p = self.next(ws).await;
            if matches!(p["state"].as_str(), Some("final" | "aborted" | "error")) {
                return p;
            }
        }
    }

    /// The states seen so far, in order.
    pub fn states(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter_map(|p| p["state"].as_str().map(str::to_string))
            .collect()
    }
}

async fn resolve(ws: &mut RawWs, id: &Value, decision: &str, extra: Value) -> Value {
    let mut params = json!({"approvalId": id, "decision": decision});
    if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    ws.call("approvals.resolve", params).await
}

pub fn lines_of(dir: &Path, key: &str, kind: &str) -> Vec<Value> {
    Transcript::of_key(dir, key).of_type(kind)
}

async fn started(config: &str) -> (Gateway, RawWs, RawWs) {
    let gw = Launcher::new().config(config).start();
    let a = RawWs::connect(gw.addr).await;
    let b = RawWs::connect(gw.addr).await;
    (gw, a, b)
}

#[tokio::test]
async fn an_allowed_call_runs_after_its_approval_and_both_steps_are_recorded() {
    let (gw, mut a, mut b) = started(&asking("")).await;
    let mut events = RawWs::connect(gw.addr).await;
    events
        .subscribe(json!({"events": ["approvals.changed"]}))
        .await;
    let mut s = Stream::start(
        &mut a,
        json!({"sessionKey": "allow", "message": exec_message("echo approved-run")}),
    )
    .await;
    let asked = s.until(&mut a, "approval_requested").await;
    let id = asked["approvalId"].clone();
    assert_eq!(asked["name"], "exec");
    assert_eq!(asked["input"]["command"], "echo approved-run");
    assert!(asked["expiresAt"].as_u64().unwrap_or(0) > 0, "{asked}");
    let changed = events.next_payload_of("approvals.changed").await;
    assert_eq!(changed["approval"]["state"], "pending");
    assert_eq!(changed["approval"]["approvalId"], id);
    // Listed, and shown as waiting.
    let list = b
        .call("approvals.list", json!({"sessionKey": "allow"}))
        .await;
    assert_eq!(list["result"]["approvals"][0]["approvalId"], id, "{list}");
    let other = b
        .call("approvals.list", json!({"sessionKey": "nobody"}))
        .await;
    assert_eq!(other["result"]["approvals"], json!([]));
    let runs = b.call("runs.list", json!({"sessionKey": "allow"})).await;
    assert_eq!(
        runs["result"]["runs"][0]["state"], "waiting_approval",
        "{runs}"
    );
    // Nothing ran yet.
    assert!(!s.states().contains(&"tool_start".to_string()));
    let done = resolve(&mut b, &id, "allow", json!({})).await;
    assert_eq!(done["result"]["state"], "allowed", "{done}");
    assert_eq!(done["result"]["by"], "local");
    let fin = s.end(&mut a).await;
    assert_eq!(fin["state"], "final", "{fin}");
    let states = s.states();
    let at = |name: &str| states.iter().position(|x| x == name).unwrap_or(usize::MAX);
    assert!(
        at("approval_requested") < at("approval_resolved")
            && at("approval_resolved") < at("tool_start")
            && at("tool_start") < at("tool_end"),
        "{states:?}"
    );
    let end = s.seen.iter().find(|p| p["state"] == "tool_end").cloned();
    let end = end.unwrap_or_default();
    assert_eq!(end["isError"], false, "{end}");
    assert!(
        end["output"]
            .as_str()
            .unwrap_or("")
            .contains("approved-run")
    );
    let resolved = s.seen.iter().find(|p| p["state"] == "approval_resolved");
    let resolved = resolved.cloned().unwrap_or_default();
    assert_eq!(
        (resolved["decision"].clone(), resolved["by"].clone()),
        (json!("allow"), json!("local"))
    );
    let changed = events.next_payload_of("approvals.changed").await;
    assert_eq!(changed["approval"]["state"], "allowed");
    // Both steps in the transcript, then the tool's started marker before its result.
    let approvals = lines_of(gw.data_dir(), "allow", "approval");
    let states: Vec<&str> = approvals
        .iter()
        .filter_map(|l| l["state"].as_str())
        .collect();
    assert_eq!(states, ["pending", "allowed"], "{approvals:?}");
    assert_eq!(approvals[1]["by"], "local");
    assert_eq!(lines_of(gw.data_dir(), "allow", "tool").len(), 1);
    let get = b.call("approvals.get", json!({"approvalId": id})).await;
    assert_eq!(get["result"]["state"], "allowed");
    // Resolving it again is a conflict; an unknown id is not found.
    let again = resolve(&mut b, &id, "deny", json!({})).await;
    assert_eq!(again["error"]["code"], -32023, "{again}");
    let unknown = resolve(&mut b, &json!("no-such-approval"), "allow", json!({})).await;
    assert_eq!(unknown["error"]["code"], -32022, "{unknown}");
    let unknown = b.call("approvals.get", json!({"approvalId": "nope"})).await;
    assert_eq!(unknown["error"]["code"], -32022, "{unknown}");
}

#[tokio::test]
async fn a_denied_call_is_an_error_result_saying_who_and_why_and_the_run_goes_on() {
    let (gw, mut a, mut b) = started(&asking("")).await;
    let mut s = Stream::start(
        &mut a,
        json!({"sessionKey": "deny", "message": exec_message("touch should-not-exist")}),
    )
    .await;
    let asked = s.until(&mut a, "approval_requested").await;
    let done = resolve(
        &mut b,
        &asked["approvalId"],
        "deny",
        json!({"reason": "not today"}),
    )
    .await;
    assert_eq!(done["result"]["state"], "denied", "{done}");
    let end = s.until(&mut a, "tool_end").await;
    assert_eq!(end["isError"], true);
    let output = end["output"].as_str().unwrap_or("");
    assert!(
        output.contains("denied by local") && output.contains("not today"),
        "{output}"
    );
    let fin = s.end(&mut a).await;
    assert_eq!(fin["state"], "final", "the run goes on after a deny: {fin}");
    assert!(!gw.data_dir().join("workspace/should-not-exist").exists());
    let lines = lines_of(gw.data_dir(), "deny", "approval");
    assert_eq!(lines[1]["decision"], "deny");
    assert_eq!(lines[1]["reason"], "not today");
    assert!(
        lines_of(gw.data_dir(), "deny", "tool").is_empty(),
        "a denied call never starts"
    );
}

#[tokio::test]
async fn remember_session_allows_the_tool_in_that_session_only_until_a_reset() {
    let (_gw, mut a, mut b) = started(&asking("")).await;
    let mut s = Stream::start(
        &mut a,
        json!({"sessionKey": "mem", "message": exec_message("true")}),
    )
    .await;
    let asked = s.until(&mut a, "approval_requested").await;
    let done = resolve(
        &mut b,
        &asked["approvalId"],
        "allow",
        json!({"remember": "session"}),
    )
    .await;
    assert_eq!(done["result"]["state"], "allowed", "{done}");
    assert_eq!(s.end(&mut a).await["state"], "final");
    // The same session: not asked again.
    let second = a
        .stream_run(json!({"sessionKey": "mem", "message": exec_message("true")}))
        .await;
    let states: Vec<&str> = second.iter().filter_map(|p| p["state"].as_str()).collect();
    assert!(!states.contains(&"approval_requested"), "{states:?}");
    assert!(states.contains(&"tool_end"), "{states:?}");
    // Another session: asked.
    let mut other = Stream::start(
        &mut a,
        json!({"sessionKey": "mem2", "message": exec_message("true")}),
    )
    .await;
    let asked = other.until(&mut a, "approval_requested").await;
    resolve(&mut b, &asked["approvalId"], "deny", json!({})).await;
    other.end(&mut a).await;
    // A reset forgets it.
    let reset = b.call("sessions.reset", json!({"key": "mem"})).await;
    assert!(reset["result"]["sessionId"].is_string(), "{reset}");
    let mut after = Stream::start(
        &mut a,
        json!({"sessionKey": "mem", "message": exec_message("true")}),
    )
    .await;
    let asked = after.until(&mut a, "approval_requested").await;
    resolve(&mut b, &asked["approvalId"], "allow", json!({})).await;
    assert_eq!(after.end(&mut a).await["state"], "final");
}

#[tokio::test]
async fn a_timeout_denies_and_waiting_does_not_count_against_the_run_timeout() {
    // The approval times out after 300 ms.
    let (gw, mut a, _b) = started(&asking("approval_timeout_ms = 300")).await;
    let mut s = Stream::start(
        &mut a,
        json!({"sessionKey": "to", "message": exec_message("true")}),
    )
    .await;
    s.until(&mut a, "approval_requested").await;
    let resolved = s.until(&mut a, "approval_resolved").await;
    assert_eq!(
        (resolved["decision"].clone(), resolved["by"].clone()),
        (json!("deny"), json!("timeout"))
    );
    let end = s.until(&mut a, "tool_end").await;
    assert!(
        end["output"].as_str().unwrap_or("").contains("timeout"),
        "{end}"
    );
    assert_eq!(s.end(&mut a).await["state"], "final");
    let lines = lines_of(gw.data_dir(), "to", "approval");
    assert_eq!(lines[1]["by"], "timeout");
    drop(gw);

    // A run timeout of 1 s, a person who answers after 2 s: the run still finishes.
    let config = "[agents.main]\nprovider = \"echo\"\nmodel = \"echo\"\nrun_timeout_ms = 1000\n[agents.main.tools]\nexec = \"ask\"\n";
    let (_gw, mut a, mut b) = started(config).await;
    let mut s = Stream::start(
        &mut a,
        json!({"sessionKey": "rt", "message": exec_message("true")}),
    )
    .await;
    let asked = s.until(&mut a, "approval_requested").await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let done = resolve(&mut b, &asked["approvalId"], "allow", json!({})).await;
    assert_eq!(done["result"]["state"], "allowed", "{done}");
    let fin = s.end(&mut a).await;
    assert_eq!(
        fin["state"], "final",
        "time spent waiting is not run time: {fin}"
    );
}

#[tokio::test]
async fn an_abort_ends_the_wait_at_once_and_the_run_aborted() {
    let (gw, mut a, mut b) = started(&asking("")).await;
    let mut s = Stream::start(
        &mut a,
        json!({"sessionKey": "ab", "message": exec_message("true")}),
    )
    .await;
    let asked = s.until(&mut a, "approval_requested").await;
    let run_id = asked["runId"].clone();
    let t0 = Instant::now();
    let aborted = b.call("chat.abort", json!({"runId": run_id})).await;
    assert_eq!(aborted["result"]["aborted"], json!([run_id]), "{aborted}");
    let resolved = s.until(&mut a, "approval_resolved").await;
    assert_eq!(resolved["by"], "abort");
    let fin = s.end(&mut a).await;
    assert_eq!(fin["state"], "aborted", "{fin}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the wait ended at once"
    );
    let get = b
        .call("approvals.get", json!({"approvalId": asked["approvalId"]}))
        .await;
    assert_eq!(get["result"]["by"], "abort", "{get}");
    let late = resolve(&mut b, &asked["approvalId"], "allow", json!({})).await;
    assert_eq!(late["error"]["code"], -32023, "{late}");
    assert!(lines_of(gw.data_dir(), "ab", "tool").is_empty());
}

#[tokio::test]
async fn only_approvers_with_write_may_resolve() {
    let config = format!(
        "{}\n[gateway.auth]\nmode = \"token\"\n[[gateway.auth.tokens]]\nname = \"reader\"\ntoken = \"read-token-0123456789\"\nscopes = [\"read\"]\n[[gateway.auth.tokens]]\nname = \"ops\"\ntoken = \"ops-token-0123456789\"\nscopes = [\"write\"]\n[[gateway.auth.tokens]]\nname = \"other\"\ntoken = \"other-token-0123456789\"\nscopes = [\"write\"]\n",
        asking("approvers = [\"ops\"]")
    );
    let gw = Launcher::new().config(&config).start();
    let connect = |token: &'static str| {
        let addr = gw.addr;
        async move {
            RawWs::connect_with(addr, &format!("/?token={token}"), &[])
                .await
                .expect("connects")
        }
    };
    let mut ops = connect("ops-token-0123456789").await;
    let mut reader = connect("read-token-0123456789").await;
    let mut other = connect("other-token-0123456789").await;
    let mut s = Stream::start(
        &mut ops,
        json!({"sessionKey": "who", "message": exec_message("true")}),
    )
    .await;
    let asked = s.until(&mut ops, "approval_requested").await;
    let id = asked["approvalId"].clone();
    let listed = reader.call("approvals.list", json!({})).await;
    assert_eq!(
        listed["result"]["approvals"][0]["approvalId"], id,
        "a reader sees it"
    );
    let denied = resolve(&mut reader, &id, "allow", json!({})).await;
    assert_eq!(denied["error"]["code"], -32021, "a read token: {denied}");
    let denied = resolve(&mut other, &id, "allow", json!({})).await;
    assert_eq!(
        denied["error"]["code"], -32021,
        "a writer not among the approvers: {denied}"
    );
    let done = resolve(&mut ops, &id, "allow", json!({})).await;
    assert_eq!(done["result"]["by"], "ops", "{done}");
    assert_eq!(s.end(&mut ops).await["state"], "final");
}

#[tokio::test]
async fn an_inject_while_a_run_waits_answers_at_once_and_lands_after_the_results() {
    let (gw, mut a, mut b) = started(&asking("")).await;
    let mut s = Stream::start(
        &mut a,
        json!({"sessionKey": "inj", "message": exec_message("true")}),
    )
    .await;
    let asked = s.until(&mut a, "approval_requested").await;
    let t0 = Instant::now();
    let injected = tokio::time::timeout(
        Duration::from_secs(5),
        b.call(
            "chat.inject",
            json!({"sessionKey": "inj", "role": "system", "content": "noted meanwhile"}),
        ),
    )
    .await
    .expect("answered while the run waits");
    assert!(injected["result"]["messageId"].is_string(), "{injected}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    resolve(&mut b, &asked["approvalId"], "allow", json!({})).await;
    assert_eq!(s.end(&mut a).await["state"], "final");
    let messages = Transcript::of_key(gw.data_dir(), "inj").whole().messages();
    let roles: Vec<&str> = messages.iter().filter_map(|m| m["role"].as_str()).collect();
    let tool = roles
        .iter()
        .position(|r| *r == "tool")
        .unwrap_or(usize::MAX);
    let system = roles.iter().position(|r| *r == "system").unwrap_or(0);
    assert!(
        system > tool,
        "written after the turn's tool results: {roles:?}"
    );
    let id = &injected["result"]["messageId"];
    assert!(
        messages.iter().any(|m| &m["id"] == id),
        "the id answered is the id written"
    );
}

#[tokio::test]
async fn deny_hides_tools_and_ask_globs_cover_mcp_tool_names() {
    let server = crate::mcp::everything();
    let config = format!(
        "[agents.main]\nprovider = \"echo\"\nmodel = \"echo\"\n[agents.main.tools]\ndeny = [\"write_*\"]\nask = [\"everything__*\"]\n[mcp_servers.everything]\ncommand = [\"node\", {server:?}]\n"
    );
    let (_gw, mut a, mut b) = started(&config).await;
    // The MCP server comes up in the background.
    let t0 = Instant::now();
    loop {
        let agents = b.call("agents.list", json!({})).await;
        let tools = agents["result"]["agents"][0]["tools"].clone();
        let names: Vec<&str> = tools
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            !names.contains(&"write_file"),
            "denied tools are never offered: {names:?}"
        );
        if names.contains(&"everything__echo") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "server-everything never came up: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut s = Stream::start(
        &mut a,
        json!({"sessionKey": "mcp", "message": "/tool everything__echo {\"message\": \"via mcp\"}"}),
    )
    .await;
    let asked = s.until(&mut a, "approval_requested").await;
    assert_eq!(asked["name"], "everything__echo");
    resolve(&mut b, &asked["approvalId"], "allow", json!({})).await;
    let end = s.until(&mut a, "tool_end").await;
    assert!(
        end["output"].as_str().unwrap_or("").contains("via mcp"),
        "{end}"
    );
    s.end(&mut a).await;
    // A denied tool the model calls anyway is refused.
    let refused = a
        .stream_run(json!({"sessionKey": "mcp", "message": "/tool write_file {\"path\": \"x\", \"content\": \"y\"}"}))
        .await;
    let end = refused
        .iter()
        .find(|p| p["state"] == "tool_end")
        .cloned()
        .unwrap_or_default();
    assert_eq!(end["isError"], true);
    assert!(
        end["output"].as_str().unwrap_or("").contains("tools.deny"),
        "{end}"
    );
}

#[tokio::test]
async fn chat_stream_run_id_joins_a_waiting_run_and_its_params_are_checked() {
    let (gw, mut a, mut b) = started(&asking("")).await;
    let mut s = Stream::start(
        &mut a,
        json!({"sessionKey": "join", "message": exec_message("echo joined")}),
    )
    .await;
    let asked = s.until(&mut a, "approval_requested").await;
    let run_id = asked["runId"].clone();
    // A second client joins the run while it waits, and follows it to its end.
    let mut c = RawWs::connect(gw.addr).await;
    let mut joined = Stream::start(&mut c, json!({"runId": run_id})).await;
    resolve(&mut b, &asked["approvalId"], "allow", json!({})).await;
    let first = joined.next(&mut c).await;
    assert_eq!(
        first["state"], "approval_resolved",
        "the next payload: {first}"
    );
    let fin = joined.end(&mut c).await;
    assert_eq!(fin["state"], "final", "{fin}");
    assert_eq!(fin["runId"], run_id);
    s.end(&mut a).await;
    // runId with a message, or with another field, is refused; an unknown run is not found.
    let both = b
        .call("chat.stream", json!({"runId": run_id, "message": "x"}))
        .await;
    assert_eq!(both["error"]["code"], -32602, "{both}");
    let extra = b
        .call(
            "chat.stream",
            json!({"runId": run_id, "sessionKey": "join"}),
        )
        .await;
    assert_eq!(extra["error"]["code"], -32602, "{extra}");
    let unknown = b.call("chat.stream", json!({"runId": "no-such-run"})).await;
    assert_eq!(unknown["error"]["code"], -32022, "{unknown}");
    let unknown = b.call("runs.get", json!({"runId": "no-such-run"})).await;
    assert_eq!(unknown["error"]["code"], -32022, "{unknown}");
}
