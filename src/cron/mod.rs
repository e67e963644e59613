//! Scheduled runs: jobs (from `cron.add`, kept in `<dataDir>/cron.json`, and `[cron.<name>]`
//! of the configuration), one scheduler task that sleeps until the next due time, and the
//! firing of a job as a run like `chat.send` starts.
//!
//! The guarantees: a job never fires twice for one scheduled time (the time is written to
//! `cron.json` before its run starts, and the run is sent with the idempotency key
//! `cron:<scheduledAt>`, so a firing interrupted by a crash is finished at the next start without
//! a second run), and never silently not at all (a skipped or failed firing is a
//! `cron.changed` event and a log line). The domain knows the gateway only as an
//! [`AgentHost`].
//!
//! The files: `schedule` (the schedule math, pure), `file` (`cron.json`), `scheduler` (the
//! task and the firing); this one holds the jobs and the `cron.*` operations.

pub mod file;
pub mod schedule;
mod scheduler;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::agent::{AgentError, AgentHost};
use crate::protocol::{
    CronAddParams, CronCatchUp, CronJob, CronSchedule, CronSource, CronUpdateParams, RunOutcome,
};
use crate::util::now_ms;
use file::{CronFile, JobState, StoredJob};
use schedule::Schedule;

/// Why a `cron.*` operation was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CronError {
    /// A field is wrong (`-32602`).
    #[error("{message}")]
    Invalid {
        /// The field's path in the params.
        field: String,
        /// What was wrong.
        message: String,
    },
    /// A job of that name exists (`-32023`).
    #[error("a cron job named `{0}` exists already (cron.update changes it)")]
    Duplicate(String),
    /// No job of that name (`-32022`).
    #[error("no cron job `{0}`")]
    NotFound(String),
    /// The job is declared in the configuration (`-32023`).
    #[error(
        "the cron job `{0}` is declared in the configuration ([cron.{0}]); change or remove it there"
    )]
    ConfigJob(String),
    /// The job's previous run is still active or queued (`-32023` with `data.activeRunId`).
    #[error("the previous run of cron job `{name}` (`{run_id}`) is still active or queued")]
    Busy {
        /// The job.
        name: String,
        /// Its run in progress.
        run_id: String,
    },
    /// The run could not start.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// `cron.json` could not be written (`-32025`, storage).
    #[error("cannot write cron.json: {0}")]
    Storage(String),
}

/// One job as the scheduler sees it, from either source.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) name: String,
    pub(crate) wire: CronSchedule,
    pub(crate) schedule: Schedule,
    pub(crate) message: String,
    pub(crate) session_key: String,
    pub(crate) agent: Option<String>,
    pub(crate) enabled: bool,
    pub(crate) catch_up: CronCatchUp,
    pub(crate) source: CronSource,
}

/// The scheduled runs: the jobs' file, the scheduler's wake-up and its task.
#[derive(Clone)]
pub struct Cron {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    file: Mutex<CronFile>,
    /// One firing or file change at a time (the scheduler's and `cron.*`'s).
    busy: tokio::sync::Mutex<()>,
    wake: Notify,
    /// The running scheduler's stop (a fresh one at each start: cluster mode stops and starts
    /// the scheduler as the node loses and regains the leader lease).
    stop: Mutex<CancellationToken>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The session a job runs in when it names none.
pub fn default_session(name: &str) -> String {
    format!("cron:{name}")
}

fn schedule_of(wire: &CronSchedule) -> Result<Schedule, schedule::ScheduleError> {
    Schedule::new(
        wire.cron.as_deref(),
        wire.tz.as_deref(),
        wire.every_ms,
        wire.at,
    )
}

fn invalid(err: schedule::ScheduleError) -> CronError {
    CronError::Invalid {
        field: if err.field.is_empty() {
            "schedule".into()
        } else {
            format!("schedule.{}", err.field)
        },
        message: err.message,
    }
}

impl Cron {
    /// The jobs of `<data_dir>/cron.json` (none if it is missing); nothing runs before
    /// [`Self::start`].
    pub fn open(data_dir: &std::path::Path) -> Self {
        Self {
            inner: Arc::new(Inner {
                dir: data_dir.to_path_buf(),
                file: Mutex::new(file::load(data_dir)),
                busy: tokio::sync::Mutex::new(()),
                wake: Notify::new(),
                stop: Mutex::new(CancellationToken::new()),
                task: Mutex::new(None),
            }),
        }
    }

    fn file(&self) -> MutexGuard<'_, CronFile> {
        self.inner
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes `cron.json` as it is now (on a blocking thread).
    async fn save(&self) -> Result<(), CronError> {
        let snapshot = self.file().clone();
        let dir = self.inner.dir.clone();
        tokio::task::spawn_blocking(move || file::save(&dir, &snapshot))
            .await
            .map_err(|e| CronError::Storage(e.to_string()))?
            .map_err(|e| {
                tracing::error!(err = %e, "cannot write cron.json");
                CronError::Storage(e.to_string())
            })
    }

    /// Every job: the configuration's (which win a name both have) and the stored ones, by
    /// name. A config job that does not check is left out with an error line (the loader
    /// refuses such a file, so this is only a safety net).
    pub(crate) fn jobs(&self, config: &crate::config::Config) -> Vec<Job> {
        let mut jobs: Vec<Job> = Vec::new();
        for (name, c) in &config.cron {
            let wire = CronSchedule {
                cron: c.cron.clone(),
                tz: c.tz.clone(),
                every_ms: c.every_ms,
                at: c.at,
            };
            match schedule_of(&wire) {
                Ok(schedule) => jobs.push(Job {
                    name: name.clone(),
                    wire,
                    schedule,
                    message: c.message.clone(),
                    session_key: c
                        .session_key
                        .clone()
                        .unwrap_or_else(|| default_session(name)),
                    agent: c.agent.clone(),
                    enabled: c.enabled,
                    catch_up: c.catch_up,
                    source: CronSource::Config,
                }),
                Err(err) => {
                    tracing::error!(job = %name, %err, "[cron.{name}] has an invalid schedule; not scheduled")
                }
            }
        }
        let file = self.file();
        for s in &file.jobs {
            if config.cron.contains_key(&s.name) {
                continue;
            }
            let Ok(schedule) = schedule_of(&s.schedule) else {
                tracing::error!(job = %s.name, "cron.json holds an invalid schedule; not scheduled");
                continue;
            };
            jobs.push(Job {
                name: s.name.clone(),
                wire: s.schedule.clone(),
                schedule,
                message: s.message.clone(),
                session_key: s
                    .session_key
                    .clone()
                    .unwrap_or_else(|| default_session(&s.name)),
                agent: s.agent.clone(),
                enabled: s.enabled,
                catch_up: s.catch_up,
                source: CronSource::Store,
            });
        }
        jobs.sort_by(|a, b| a.name.cmp(&b.name));
        jobs
    }

    fn job(&self, config: &crate::config::Config, name: &str) -> Option<Job> {
        self.jobs(config).into_iter().find(|j| j.name == name)
    }

    /// `cron.list`: every job with its next time and its last firing; the outcome of the last
    /// run is read from the run manager (or the run index) when it is not recorded yet.
    pub fn list<G: AgentHost>(&self, gw: &G) -> Vec<CronJob> {
        let config = gw.config();
        self.jobs(&config)
            .into_iter()
            .map(|job| {
                let state = self
                    .file()
                    .state
                    .get(&job.name)
                    .cloned()
                    .unwrap_or_default();
                self.entry(gw, &job, &state)
            })
            .collect()
    }

    fn entry<G: AgentHost>(&self, gw: &G, job: &Job, state: &JobState) -> CronJob {
        let last_outcome = state.last_outcome.clone().or_else(|| {
            let id = state.last_run_id.as_deref()?;
            let entry = gw.agent().run_get(gw, id).ok()?;
            entry.outcome.map(|o: RunOutcome| o.as_str().to_string())
        });
        CronJob {
            name: job.name.clone(),
            schedule: job.wire.clone(),
            message: job.message.clone(),
            session_key: job.session_key.clone(),
            agent: job.agent.clone(),
            next_run_at: if job.enabled {
                job.schedule.next_after(state.cursor, state.anchor)
            } else {
                None
            },
            last_run_at: state.last_run_at,
            last_run_id: state.last_run_id.clone(),
            last_outcome,
            last_scheduled_at: state.last_scheduled_at,
            enabled: job.enabled,
            catch_up: job.catch_up,
            source: job.source,
        }
    }

    /// Checks what `cron.add` and `cron.update` may set: the schedule (an `at` in the future),
    /// an agent that is configured and fits the session.
    fn check<G: AgentHost>(
        &self,
        gw: &G,
        wire: &CronSchedule,
        session_key: &str,
        agent: Option<&str>,
    ) -> Result<Schedule, CronError> {
        let schedule = schedule_of(wire).map_err(invalid)?;
        if let Some(at) = wire.at {
            let now = now_ms();
            if at <= now {
                return Err(CronError::Invalid {
                    field: "schedule.at".into(),
                    message: format!(
                        "found {at}, which is not in the future (now is {now} ms since the epoch)"
                    ),
                });
            }
        }
        if let Some(agent) = agent
            && gw.config().agent(agent).is_none()
        {
            return Err(CronError::Invalid {
                field: "agent".into(),
                message: format!("no agent `{agent}` is configured"),
            });
        }
        gw.agent().agent_for(gw, session_key, agent)?;
        Ok(schedule)
    }

    /// `cron.add`.
    pub async fn add<G: AgentHost>(&self, gw: &G, p: CronAddParams) -> Result<CronJob, CronError> {
        let _busy = self.inner.busy.lock().await;
        let name = p.name.to_string();
        let config = gw.config();
        if config.cron.contains_key(&name) || self.file().jobs.iter().any(|j| j.name == name) {
            return Err(CronError::Duplicate(name));
        }
        let session_key = p
            .session_key
            .map(String::from)
            .unwrap_or_else(|| default_session(&name));
        let agent = p.agent.map(String::from);
        self.check(gw, &p.schedule, &session_key, agent.as_deref())?;
        let now = now_ms();
        let stored = StoredJob {
            name: name.clone(),
            schedule: p.schedule,
            message: p.message.into(),
            session_key: (session_key != default_session(&name)).then_some(session_key),
            agent,
            enabled: p.enabled.unwrap_or(true),
            catch_up: p.catch_up.unwrap_or_default(),
            created_at: now,
        };
        {
            let mut file = self.file();
            file.jobs.push(stored);
            file.state.insert(
                name.clone(),
                JobState {
                    anchor: now,
                    cursor: now,
                    ..JobState::default()
                },
            );
        }
        if let Err(err) = self.save().await {
            let mut file = self.file();
            file.jobs.retain(|j| j.name != name);
            file.state.remove(&name);
            return Err(err);
        }
        tracing::info!(job = %name, "cron job added");
        self.inner.wake.notify_one();
        self.entry_of(gw, &name)
    }

    fn entry_of<G: AgentHost>(&self, gw: &G, name: &str) -> Result<CronJob, CronError> {
        let job = self
            .job(&gw.config(), name)
            .ok_or_else(|| CronError::NotFound(name.to_string()))?;
        let state = self.file().state.get(name).cloned().unwrap_or_default();
        Ok(self.entry(gw, &job, &state))
    }

    /// `cron.update`: the fields given; a new schedule counts from now, and so does a job
    /// enabled again (no catch-up of the times it was disabled).
    pub async fn update<G: AgentHost>(
        &self,
        gw: &G,
        p: CronUpdateParams,
    ) -> Result<CronJob, CronError> {
        let _busy = self.inner.busy.lock().await;
        let name = p.name.to_string();
        if gw.config().cron.contains_key(&name) {
            return Err(CronError::ConfigJob(name));
        }
        let Some(mut job) = self.file().jobs.iter().find(|j| j.name == name).cloned() else {
            return Err(CronError::NotFound(name));
        };
        let before = self.file().clone();
        let schedule_changed = p.schedule.as_ref().is_some_and(|s| *s != job.schedule);
        let enabled_again = p.enabled == Some(true) && !job.enabled;
        if let Some(schedule) = p.schedule {
            job.schedule = schedule;
        }
        if let Some(message) = p.message {
            job.message = message.into();
        }
        if let Some(key) = p.session_key {
            let key = String::from(key);
            job.session_key = (key != default_session(&name)).then_some(key);
        }
        if let Some(agent) = p.agent {
            job.agent = Some(agent.into());
        }
        if let Some(enabled) = p.enabled {
            job.enabled = enabled;
        }
        if let Some(catch_up) = p.catch_up {
            job.catch_up = catch_up;
        }
        let session_key = job
            .session_key
            .clone()
            .unwrap_or_else(|| default_session(&name));
        if schedule_changed || enabled_again {
            self.check(gw, &job.schedule, &session_key, job.agent.as_deref())?;
        } else {
            // An `at` that has passed stays as it is; the rest is checked again.
            schedule_of(&job.schedule).map_err(invalid)?;
            if let Some(agent) = job.agent.as_deref()
                && gw.config().agent(agent).is_none()
            {
                return Err(CronError::Invalid {
                    field: "agent".into(),
                    message: format!("no agent `{agent}` is configured"),
                });
            }
            gw.agent()
                .agent_for(gw, &session_key, job.agent.as_deref())?;
        }
        {
            let now = now_ms();
            let mut file = self.file();
            if let Some(slot) = file.jobs.iter_mut().find(|j| j.name == name) {
                *slot = job;
            }
            let state = file.state.entry(name.clone()).or_default();
            if schedule_changed {
                state.anchor = now;
            }
            if schedule_changed || enabled_again {
                state.cursor = state.cursor.max(now);
            }
        }
        if let Err(err) = self.save().await {
            *self.file() = before;
            return Err(err);
        }
        tracing::info!(job = %name, "cron job updated");
        self.inner.wake.notify_one();
        self.entry_of(gw, &name)
    }

    /// `cron.remove`.
    pub async fn remove<G: AgentHost>(&self, gw: &G, name: &str) -> Result<(), CronError> {
        let _busy = self.inner.busy.lock().await;
        if gw.config().cron.contains_key(name) {
            return Err(CronError::ConfigJob(name.to_string()));
        }
        let before = self.file().clone();
        {
            let mut file = self.file();
            let n = file.jobs.len();
            file.jobs.retain(|j| j.name != name);
            if file.jobs.len() == n {
                return Err(CronError::NotFound(name.to_string()));
            }
            file.state.remove(name);
        }
        if let Err(err) = self.save().await {
            *self.file() = before;
            return Err(err);
        }
        tracing::info!(job = %name, "cron job removed");
        self.inner.wake.notify_one();
        Ok(())
    }

    /// `cron.run`: fires the job now (its schedule is left as it is); the run's id.
    pub async fn run_now<G: AgentHost>(
        &self,
        gw: &Arc<G>,
        name: &str,
    ) -> Result<String, CronError> {
        let _busy = self.inner.busy.lock().await;
        let job = self
            .job(&gw.config(), name)
            .ok_or_else(|| CronError::NotFound(name.to_string()))?;
        self.fire(gw, &job, None, false).await
    }

    /// Starts the scheduler: first the firings a restart interrupted and the catch-up of
    /// times that passed while the gateway was down, then each job at its time.
    /// Started again after [`Self::stop`], it continues from `cron.json` as at a restart.
    pub fn start<G: AgentHost>(&self, gw: Arc<G>) {
        let stop = CancellationToken::new();
        if let Ok(mut slot) = self.inner.stop.lock() {
            *slot = stop.clone();
        }
        let task = tokio::spawn(self.clone().run(gw, stop));
        if let Ok(mut slot) = self.inner.task.lock() {
            *slot = Some(task);
        }
    }

    /// Stops the scheduler (shutdown): no job fires from here on; a firing in progress ends
    /// first.
    pub async fn stop(&self) {
        if let Ok(stop) = self.inner.stop.lock() {
            stop.cancel();
        }
        let task = self.inner.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
        // A firing of `cron.run` in progress finishes before the runs are suspended.
        let _busy = self.inner.busy.lock().await;
    }
}
