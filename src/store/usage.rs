//! The usage ledger, `<dataDir>/usage.jsonl`: one line per model call (each turn of a run, each
//! summary call of a compaction), priced when it is written, and what is read back from it (a
//! session's usage, `usage.summary`).
//!
//! Lines are appended and flushed through the transcripts' own [`Writer`], so the ledger is as
//! durable as they are and a torn last line (a crash mid-write) stays on disk untouched while
//! the next line starts on a fresh one. Reading skips a torn or unparsable line with a warning.
//! The usage of each live session is kept in its index entry: updated with each line, and at
//! open read from the index and the ledger's tail after the length the index accounted for (or
//! from the whole ledger when the index cannot say).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use super::Store;
use super::error::StoreError;
use super::live::Transcript;
use super::transcript::Writer;
use crate::config::PriceConfig;
use crate::protocol::{Usage, UsageDay, UsageSummaryResult, UsageTotals};

/// The ledger's file name, in the data directory.
pub const LEDGER_FILE: &str = "usage.jsonl";

/// The prices by model name (`[prices]`).
pub type Prices = BTreeMap<String, PriceConfig>;

/// One model call to record: whose it was and what it used.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageCall {
    /// The session key.
    pub session_key: String,
    /// The transcript the call was made for.
    pub session_id: String,
    /// The agent that made it.
    pub agent_id: String,
    /// The run it was part of (a `sessions.compact` summary call has none).
    pub run_id: Option<String>,
    /// The model called.
    pub model: String,
    /// What the provider reported.
    pub usage: Usage,
}

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerLine {
    /// When the call ended (ms since the epoch).
    pub ts: u64,
    /// The session key.
    pub session_key: String,
    /// The transcript the call was made for.
    pub session_id: String,
    /// The agent that made it.
    pub agent_id: String,
    /// The run it was part of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The model called.
    pub model: String,
    /// Input tokens (cache reads and writes not included).
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write_tokens: u64,
    /// The price of the call when it was written; absent without a price for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

impl LedgerLine {
    /// The line of `call`, at `ts`, priced with `price`.
    pub fn of(call: &UsageCall, ts: u64, price: Option<&PriceConfig>) -> Self {
        Self {
            ts,
            session_key: call.session_key.clone(),
            session_id: call.session_id.clone(),
            agent_id: call.agent_id.clone(),
            run_id: call.run_id.clone(),
            model: call.model.clone(),
            input_tokens: call.usage.input_tokens,
            output_tokens: call.usage.output_tokens,
            cache_read_tokens: call.usage.cache_read_tokens,
            cache_write_tokens: call.usage.cache_write_tokens,
            cost_usd: cost(&call.usage, price),
        }
    }

    /// All its tokens.
    fn tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_tokens)
    }
}

/// What `usage` costs at `price`, in USD: `None` without a price, or when a kind of token it
/// used has no rate (a kind it did not use needs none).
pub fn cost(usage: &Usage, price: Option<&PriceConfig>) -> Option<f64> {
    let price = price?;
    let kinds = [
        (usage.input_tokens, price.input_per_mtok),
        (usage.output_tokens, price.output_per_mtok),
        (usage.cache_read_tokens, price.cache_read_per_mtok),
        (usage.cache_write_tokens, price.cache_write_per_mtok),
    ];
    let mut usd = 0.0;
    for (tokens, rate) in kinds {
        if tokens == 0 {
            continue;
        }
        usd += tokens as f64 * rate? / 1_000_000.0;
    }
    Some(usd)
}

/// Adds one ledger line to `totals`.
pub fn add_line(totals: &mut UsageTotals, line: &LedgerLine) {
    totals.input_tokens = totals.input_tokens.saturating_add(line.input_tokens);
    totals.output_tokens = totals.output_tokens.saturating_add(line.output_tokens);
    totals.cache_read_tokens = totals
        .cache_read_tokens
        .saturating_add(line.cache_read_tokens);
    totals.cache_write_tokens = totals
        .cache_write_tokens
        .saturating_add(line.cache_write_tokens);
    match line.cost_usd {
        Some(usd) => totals.cost_usd = Some(totals.cost_usd.unwrap_or(0.0) + usd),
        None => totals.unpriced_tokens = totals.unpriced_tokens.saturating_add(line.tokens()),
    }
}

/// The UTC day of `ms` (since the epoch), `YYYY-MM-DD`.
pub fn utc_day(ms: u64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let days = (ms / 86_400_000) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Reads the ledger `path` from byte `from` to byte `end` (its end when `None`), calling
/// `visit` with each line; a torn or unparsable line is skipped and counted. Returns the lines
/// skipped and the first one's number (1-based from `from`). A missing file has no lines.
pub fn scan_ledger(
    path: &Path,
    from: u64,
    end: Option<u64>,
    mut visit: impl FnMut(LedgerLine),
) -> io::Result<(u64, u64)> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(err) => return Err(err),
    };
    file.seek(SeekFrom::Start(from))?;
    let limit = end.map_or(u64::MAX, |e| e.saturating_sub(from));
    let mut reader = BufReader::with_capacity(64 * 1024, io::Read::take(file, limit));
    let mut buf = Vec::new();
    let (mut number, mut skipped, mut first_bad) = (0u64, 0u64, 0u64);
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        number += 1;
        let complete = buf.last() == Some(&b'\n');
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if complete && body.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(body).filter(|_| complete) {
            Some(line) => visit(line),
            None => {
                skipped += 1;
                if first_bad == 0 {
                    first_bad = number;
                }
            }
        }
    }
    Ok((skipped, first_bad))
}

/// One ledger line (without its newline); `None` when it is not one.
pub fn parse_line(bytes: &[u8]) -> Option<LedgerLine> {
    serde_json::from_slice(bytes).ok()
}

/// Warns of the lines a read of the ledger skipped.
fn warn_skipped(path: &Path, (skipped, first): (u64, u64)) {
    if skipped > 0 {
        tracing::warn!(file = %path.display(), skipped, first_line = first, "skipping torn or unparsable usage ledger lines");
    }
}

/// The ledger's writer and the length its lines are accounted for up to.
pub(super) struct Ledger {
    path: PathBuf,
    prices: RwLock<Arc<Prices>>,
    /// The one writer; held across an append and the entry update after it.
    writer: tokio::sync::Mutex<Option<Writer>>,
    /// Bytes of the ledger whose lines are in the session entries (and may be read back). Held
    /// while an entry takes a line's usage, and while the index takes its snapshot, so the
    /// index's entries hold exactly the lines before the length it records.
    pub(super) accounted: Mutex<u64>,
}

impl Ledger {
    /// The ledger of `data_dir`, its usage folded into the entries of `sessions` (by session
    /// id): from `usage_len` on when the entries already hold the lines before it, else from
    /// the start (the entries' usage zeroed first). A missing ledger is created (empty).
    pub(super) fn open(
        data_dir: &Path,
        usage_len: Option<u64>,
        sessions: &HashMap<String, Arc<Transcript>>,
    ) -> io::Result<Self> {
        let path = data_dir.join(LEDGER_FILE);
        if !path.exists() {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(false);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            options.open(&path)?.sync_all()?;
            crate::util::sync_dir(data_dir)?;
        }
        let len = std::fs::metadata(&path)?.len();
        let from = match usage_len {
            Some(known) if known <= len => known,
            _ => {
                if usage_len.is_some() || len > 0 {
                    tracing::info!(file = %path.display(), "rebuilding the sessions' usage from the whole ledger");
                }
                for t in sessions.values() {
                    t.update(|e| e.usage = UsageTotals::default());
                }
                0
            }
        };
        let by_id: HashMap<String, &Arc<Transcript>> = sessions
            .values()
            .map(|t| (t.entry().session_id, t))
            .collect();
        let skipped = scan_ledger(&path, from, Some(len), |line| {
            if let Some(t) = by_id.get(&line.session_id) {
                t.update(|e| add_line(&mut e.usage, &line));
            }
        })?;
        warn_skipped(&path, skipped);
        let writer = Writer::open(&path, 0)?;
        Ok(Self {
            path,
            prices: RwLock::new(Arc::new(Prices::new())),
            writer: tokio::sync::Mutex::new(Some(writer)),
            accounted: Mutex::new(len),
        })
    }

    /// The prices in force.
    fn prices(&self) -> Arc<Prices> {
        self.prices
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The committed length.
    pub(super) fn accounted(&self) -> u64 {
        *self.accounted.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store {
    /// Prices the calls recorded from now on with `prices` (at start, and on each reload).
    pub fn set_prices(&self, prices: Prices) {
        let mut slot = self
            .ledger
            .prices
            .write()
            .unwrap_or_else(|p| p.into_inner());
        *slot = Arc::new(prices);
    }

    /// Records one model call's usage: prices it with the prices in force, appends its line to
    /// the ledger (flushed) and adds it to its session's usage when that session's transcript
    /// is still `call.session_id`. Every model call's usage goes through here, once.
    pub async fn record_usage(&self, call: &UsageCall) -> Result<LedgerLine, StoreError> {
        let prices = self.ledger.prices();
        let line = LedgerLine::of(call, crate::util::now_ms(), prices.get(&call.model));
        let mut bytes = serde_json::to_vec(&line).map_err(StoreError::internal)?;
        bytes.push(b'\n');
        let what = format!("cannot record usage of session `{}`", call.session_key);
        let mut writer = self.ledger.writer.lock().await;
        let w = match writer.as_mut() {
            Some(w) => w,
            None => {
                let path = self.ledger.path.clone();
                let opened = self.blocking(&what, move || Writer::open(&path, 0)).await?;
                writer.insert(opened)
            }
        };
        let len = match w.append(bytes, 1).await {
            Ok(len) => len,
            Err(err) => return Err(self.health.error(&what, &err)),
        };
        // The one place every model call's usage is written: counted once it is durable.
        crate::metrics::tokens(
            &line.agent_id,
            line.input_tokens,
            line.output_tokens,
            line.cache_read_tokens,
            line.cache_write_tokens,
        );
        let mut accounted = self
            .ledger
            .accounted
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(t) = self.lookup(&call.session_key) {
            let mut counted = false;
            t.update(|e| {
                if e.session_id == call.session_id {
                    add_line(&mut e.usage, &line);
                    counted = true;
                }
            });
            if counted {
                self.mark_dirty();
            }
        }
        *accounted = len;
        Ok(line)
    }

    /// `usage.summary`: the ledger's calls from `since` (inclusive) to `until` (exclusive),
    /// of `agent` alone when given, in all and by agent, model and UTC day.
    pub async fn usage_summary(
        &self,
        since: Option<u64>,
        until: Option<u64>,
        agent: Option<String>,
    ) -> Result<UsageSummaryResult, StoreError> {
        let path = self.ledger.path.clone();
        let end = self.ledger.accounted();
        self.blocking("cannot read the usage ledger", move || {
            let mut result = UsageSummaryResult::default();
            let mut days: BTreeMap<String, UsageTotals> = BTreeMap::new();
            let skipped = scan_ledger(&path, 0, Some(end), |line| {
                if since.is_some_and(|s| line.ts < s)
                    || until.is_some_and(|u| line.ts >= u)
                    || agent.as_ref().is_some_and(|a| *a != line.agent_id)
                {
                    return;
                }
                add_line(&mut result.total, &line);
                add_line(
                    result.by_agent.entry(line.agent_id.clone()).or_default(),
                    &line,
                );
                add_line(
                    result.by_model.entry(line.model.clone()).or_default(),
                    &line,
                );
                add_line(days.entry(utc_day(line.ts)).or_default(), &line);
            })?;
            warn_skipped(&path, skipped);
            result.by_day = days
                .into_iter()
                .map(|(day, usage)| UsageDay { day, usage })
                .collect();
            Ok(result)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::open;

    fn price(input: f64, output: f64, read: Option<f64>, write: Option<f64>) -> PriceConfig {
        PriceConfig {
            input_per_mtok: Some(input),
            output_per_mtok: Some(output),
            cache_read_per_mtok: read,
            cache_write_per_mtok: write,
        }
    }

    fn usage(input: u64, output: u64, read: u64, write: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: read,
            cache_write_tokens: write,
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn cost_is_tokens_times_rates_per_million_and_needs_the_rates_it_uses() {
        let p = price(3.0, 15.0, Some(0.3), Some(3.75));
        // 1000 × 3 + 500 × 15 + 2000 × 0.3 + 400 × 3.75 = 3000 + 7500 + 600 + 1500 = 12600 µ$.
        assert!(close(cost(&usage(1000, 500, 2000, 400), Some(&p)), 0.0126));
        assert!(close(cost(&usage(0, 0, 0, 0), Some(&p)), 0.0));
        assert_eq!(cost(&usage(1, 1, 0, 0), None), None, "no price");
        let no_cache = price(3.0, 15.0, None, None);
        assert!(close(cost(&usage(10, 10, 0, 0), Some(&no_cache)), 0.00018));
        assert_eq!(cost(&usage(10, 10, 1, 0), Some(&no_cache)), None);
        assert_eq!(cost(&usage(10, 10, 0, 1), Some(&no_cache)), None);
        let free = PriceConfig {
            input_per_mtok: Some(0.0),
            ..Default::default()
        };
        assert!(close(cost(&usage(7, 0, 0, 0), Some(&free)), 0.0));
        assert_eq!(
            cost(&usage(7, 1, 0, 0), Some(&free)),
            None,
            "no output rate"
        );
    }

    #[test]
    fn totals_sum_priced_calls_and_count_the_unpriced_tokens() {
        let call = UsageCall {
            session_key: "k".into(),
            session_id: "s".into(),
            agent_id: "main".into(),
            run_id: None,
            model: "m".into(),
            usage: usage(10, 20, 30, 40),
        };
        let p = price(1.0, 1.0, Some(1.0), Some(1.0));
        let mut totals = UsageTotals::default();
        add_line(&mut totals, &LedgerLine::of(&call, 1, None));
        assert_eq!((totals.cost_usd, totals.unpriced_tokens), (None, 100));
        add_line(&mut totals, &LedgerLine::of(&call, 1, Some(&p)));
        assert!(close(totals.cost_usd, 0.0001));
        assert_eq!(totals.unpriced_tokens, 100);
        assert_eq!(
            (
                totals.input_tokens,
                totals.output_tokens,
                totals.cache_read_tokens,
                totals.cache_write_tokens
            ),
            (20, 40, 60, 80)
        );
    }

    #[test]
    fn utc_days_are_civil_dates() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(1_767_225_600_000), "2026-01-01");
        assert_eq!(utc_day(1_767_225_599_999), "2025-12-31");
        assert_eq!(utc_day(951_782_400_000), "2000-02-29");
        assert_eq!(utc_day(4_107_542_400_000), "2100-03-01");
    }

    #[test]
    fn parsing_skips_torn_and_bad_lines_and_keeps_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(LEDGER_FILE);
        let good = r#"{"ts":5,"sessionKey":"k","sessionId":"s","agentId":"main","model":"m","inputTokens":1,"outputTokens":2,"cacheReadTokens":3,"cacheWriteTokens":4,"costUsd":0.5}"#;
        let text = format!("{good}\nnot json\n\n{{\"ts\":1}}\n{good}\n{{\"ts\":9,\"sess");
        std::fs::write(&path, &text).expect("write");
        let mut seen = Vec::new();
        let skipped = scan_ledger(&path, 0, None, |l| seen.push(l)).expect("scan");
        assert_eq!(skipped, (3, 2), "bad, incomplete and torn lines");
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].cost_usd, Some(0.5));
        assert_eq!(seen[0].run_id, None);
        // Up to a length: a line cut by the end counts as torn.
        let mut seen = Vec::new();
        let first = good.len() as u64 + 1;
        scan_ledger(&path, 0, Some(first), |l| seen.push(l)).expect("scan");
        assert_eq!(seen.len(), 1);
        let skipped = scan_ledger(&path, 0, Some(first - 1), |_| {}).expect("scan");
        assert_eq!(skipped, (1, 1));
        let missing = scan_ledger(&dir.path().join("none"), 0, None, |_| {}).expect("scan");
        assert_eq!(missing, (0, 0));
    }

    #[tokio::test]
    async fn a_session_counts_its_own_calls_across_a_reopen_and_a_torn_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let s = store.ensure("k", "main").await.expect("ensure");
        let prices = Prices::from([("m".to_string(), price(1.0, 2.0, Some(0.5), Some(4.0)))]);
        store.set_prices(prices.clone());
        let call = |model: &str, session_id: &str| UsageCall {
            session_key: "k".into(),
            session_id: session_id.into(),
            agent_id: "main".into(),
            run_id: Some("r".into()),
            model: model.into(),
            usage: usage(1000, 100, 2000, 10),
        };
        let line = store
            .record_usage(&call("m", &s.session_id))
            .await
            .expect("record");
        // 1000 × 1 + 100 × 2 + 2000 × 0.5 + 10 × 4 = 2240 µ$.
        assert!(close(line.cost_usd, 0.00224));
        store
            .record_usage(&call("other", &s.session_id))
            .await
            .expect("record");
        store
            .record_usage(&call("m", "an-old-transcript"))
            .await
            .expect("record");
        let got = store.get("k").expect("get").usage;
        assert_eq!(got.input_tokens, 2000);
        assert!(close(got.cost_usd, 0.00224));
        assert_eq!(got.unpriced_tokens, 3110);
        store.flush_index().expect("index");
        // A line after the index, then a torn one (a crash mid-write).
        store
            .record_usage(&call("m", &s.session_id))
            .await
            .expect("record");
        drop(store);
        let ledger = dir.path().join(LEDGER_FILE);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&ledger)
            .expect("open");
        io::Write::write_all(&mut f, b"{\"ts\":1,\"sessionKey\":\"k\",\"sessi").expect("tear");
        drop(f);
        let store = open(dir.path());
        store.set_prices(prices);
        let after = store.get("k").expect("get").usage;
        assert_eq!(after.input_tokens, 3000, "the tail after the index");
        assert!(close(after.cost_usd, 0.00448));
        store
            .record_usage(&call("m", &s.session_id))
            .await
            .expect("record");
        let text = std::fs::read_to_string(&ledger).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert!(
            parse_line(lines[4].as_bytes()).is_none(),
            "the torn line stays"
        );
        assert!(
            parse_line(lines[5].as_bytes()).is_some(),
            "on a line of its own"
        );
        // Without the index, the whole ledger is read.
        store.flush_index().expect("index");
        drop(store);
        std::fs::remove_file(dir.path().join("sessions").join("index.json")).expect("rm");
        let store = open(dir.path());
        let rebuilt = store.get("k").expect("get").usage;
        assert_eq!(rebuilt.input_tokens, 4000);
        assert!(close(rebuilt.cost_usd, 0.00672), "{rebuilt:?}");
        assert_eq!(rebuilt.unpriced_tokens, 3110);
        // The summary sees every line, an old transcript's too.
        let sum = store.usage_summary(None, None, None).await.expect("sum");
        assert_eq!(sum.total.input_tokens, 5000);
        assert_eq!(sum.by_model["other"].unpriced_tokens, 3110);
        assert_eq!(sum.by_day.len(), 1);
        let none = store
            .usage_summary(None, None, Some("helper".into()))
            .await
            .expect("sum");
        assert_eq!(none, UsageSummaryResult::default());
        // A reset starts from zero; the ledger keeps it all.
        store.reset("k").await.expect("reset");
        assert_eq!(store.get("k").expect("get").usage, UsageTotals::default());
        let sum = store.usage_summary(None, None, None).await.expect("sum");
        assert_eq!(sum.total.input_tokens, 5000);
    }
}
