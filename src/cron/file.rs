//! `<dataDir>/cron.json`: the jobs `cron.add` made and every job's firing state (config jobs'
//! too), replaced atomically (temporary file, fsync, rename, directory fsync) at each change.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::protocol::{CronCatchUp, CronSchedule};

/// The file's name in the data directory.
pub const FILE: &str = "cron.json";

/// A job added with `cron.add`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredJob {
    /// Its name.
    pub name: String,
    /// When it fires.
    pub schedule: CronSchedule,
    /// The message each firing sends.
    pub message: String,
    /// Its session, when not `cron:<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    /// Its agent, when named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Whether it fires.
    pub enabled: bool,
    /// Catch-up after downtime.
    pub catch_up: CronCatchUp,
    /// When it was added (ms).
    pub created_at: u64,
}

/// Where a job's firings are: written before each run starts, so a time is never fired twice.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobState {
    /// Where an interval counts from (ms): when the job was added or its schedule changed.
    pub anchor: u64,
    /// Every scheduled time up to here (ms) is handled: fired, skipped or moved past.
    pub cursor: u64,
    /// When it last fired (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<u64>,
    /// The scheduled time it last fired for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled_at: Option<u64>,
    /// The run it last started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_id: Option<String>,
    /// How that run ended, or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<String>,
    /// A firing recorded but whose run's id is not yet: the gateway stopped while starting it.
    /// At the next start it is sent again with the same idempotency key, which starts no
    /// second run if the first one did start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
}

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronFile {
    /// The format (1).
    pub version: u32,
    /// The jobs of `cron.add`.
    pub jobs: Vec<StoredJob>,
    /// Each job's state by name (config jobs' too).
    pub state: BTreeMap<String, JobState>,
}

impl Default for CronFile {
    fn default() -> Self {
        Self {
            version: 1,
            jobs: Vec::new(),
            state: BTreeMap::new(),
        }
    }
}

/// Reads the file; a missing one is empty. An unreadable one is set aside
/// (`cron.json.corrupt-<ms>`) with an error line, so that the next write does not lose it.
pub fn load(dir: &Path) -> CronFile {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return CronFile::default(),
        Err(err) => {
            tracing::error!(file = %path.display(), %err, "cannot read the cron jobs; starting without them");
            return CronFile::default();
        }
    };
    match serde_json::from_slice::<CronFile>(&bytes) {
        Ok(file) => file,
        Err(err) => {
            let aside = dir.join(format!("{FILE}.corrupt-{}", crate::util::now_ms()));
            let moved = std::fs::rename(&path, &aside);
            tracing::error!(file = %path.display(), %err, moved_to = %aside.display(), moved = moved.is_ok(), "cron.json is not valid; set aside, starting without its jobs");
            CronFile::default()
        }
    }
}

/// Replaces the file with `file`, durably.
pub fn save(dir: &Path, file: &CronFile) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    crate::store::replace_file(dir, FILE, &bytes)
}
