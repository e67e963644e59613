//! The scheduler task and the firing of a job: one task for every job, asleep until the next
//! due time of any of them, woken by `cron.add`/`update`/`remove` and by configuration changes.

use std::sync::Arc;
use std::time::Duration;

use crate::agent::{AgentHost, SendRequest};
use crate::events::Filter;
use crate::protocol::{
    ConfigChangedEvent, CronCatchUp, CronChangedEvent, CronFiringState, CronSchedule, CronSource,
    Event, RunPhase, SendMode,
};
use crate::util::now_ms;

use super::file::JobState;
use super::{Cron, CronError, Job};

/// The longest sleep: the wall clock is looked at again at least this often (it may jump).
const MAX_SLEEP: Duration = Duration::from_secs(30);

impl Cron {
    /// The scheduler's task.
    pub(super) async fn run<G: AgentHost>(
        self,
        gw: Arc<G>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut config_changes = Filter::new(Some(&[ConfigChangedEvent::NAME.to_string()]), None)
            .ok()
            .and_then(|filter| gw.hub().subscribe(filter, None, None).ok());
        {
            let _busy = self.inner.busy.lock().await;
            self.startup(&gw).await;
        }
        loop {
            if stop.is_cancelled() || gw.is_shutting_down() {
                return;
            }
            let next = {
                let _busy = self.inner.busy.lock().await;
                self.fire_due(&gw).await
            };
            let wait = next
                .map(|at| Duration::from_millis(at.saturating_sub(now_ms())))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.wake.notified() => {}
                delivery = async {
                    match config_changes.as_mut() {
                        Some(sub) => sub.next().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if delivery.is_none() {
                        config_changes = None;
                    }
                }
            }
        }
    }

    /// The state of `job`, made (counting from now) the first time a job is seen.
    fn state_of(&self, job: &Job) -> (JobState, bool) {
        let mut file = self.file();
        match file.state.get(&job.name) {
            Some(state) => (state.clone(), false),
            None => {
                let now = now_ms();
                let state = JobState {
                    anchor: now,
                    cursor: now,
                    ..JobState::default()
                };
                file.state.insert(job.name.clone(), state.clone());
                if let super::schedule::Schedule::At { at } = job.schedule
                    && at <= now
                {
                    tracing::warn!(job = %job.name, at, "cron job: its `at` time has passed before the job was first seen; it will not fire");
                }
                (state, true)
            }
        }
    }

    fn set_cursor(&self, name: &str, cursor: u64) {
        if let Some(state) = self.file().state.get_mut(name) {
            state.cursor = state.cursor.max(cursor);
        }
    }

    /// At startup: a firing a restart interrupted is finished (same idempotency key, so no
    /// second run); then each job whose times passed while the gateway was down fires once
    /// (`catchUp = "one"`) for the latest of them, or moves past them (`"none"`).
    async fn startup<G: AgentHost>(&self, gw: &Arc<G>) {
        let config = gw.config();
        let now = now_ms();
        let mut new_state = false;
        for job in self.jobs(&config) {
            let (state, created) = self.state_of(&job);
            new_state |= created;
            if let Some(scheduled) = state.pending {
                tracing::warn!(job = %job.name, scheduled_at = scheduled, "a firing was interrupted by a restart; finishing it (its run starts at most once)");
                let _ = self.fire(gw, &job, Some(scheduled), true).await;
            }
            if !job.enabled {
                continue;
            }
            let (state, _) = self.state_of(&job);
            let (count, latest) = job.schedule.passed(state.cursor, now, state.anchor);
            let Some(latest) = latest else { continue };
            match job.catch_up {
                CronCatchUp::One => {
                    tracing::info!(job = %job.name, missed = count, scheduled_at = latest, "cron job: {count} scheduled time(s) passed while the gateway was down; catching up once");
                    let _ = self.fire(gw, &job, Some(latest), true).await;
                }
                CronCatchUp::None => {
                    let message = format!(
                        "{count} scheduled time(s) passed while the gateway was down; not caught up (catchUp none)"
                    );
                    tracing::info!(job = %job.name, missed = count, scheduled_at = latest, "cron job skipped: {message}");
                    self.set_cursor(&job.name, latest);
                    self.disable_done(&job);
                    new_state = true;
                    emit(
                        gw.as_ref(),
                        &job,
                        CronFiringState::Skipped,
                        None,
                        Some(message),
                        Some(latest),
                        true,
                    );
                }
            }
        }
        if new_state {
            let _ = self.save().await;
        }
    }

    /// Fires every job that is due; the next due time of any job.
    async fn fire_due<G: AgentHost>(&self, gw: &Arc<G>) -> Option<u64> {
        let config = gw.config();
        let now = now_ms();
        let mut next: Option<u64> = None;
        let mut new_state = false;
        for job in self.jobs(&config) {
            let (state, created) = self.state_of(&job);
            new_state |= created;
            if !job.enabled {
                // Times while disabled are not caught up when it is enabled again.
                self.set_cursor(&job.name, now);
                continue;
            }
            let (count, latest) = job.schedule.passed(state.cursor, now, state.anchor);
            if let Some(latest) = latest {
                if count > 1 {
                    // The machine slept or the gateway was too busy to wake in time.
                    let message = format!(
                        "{} scheduled time(s) passed before the scheduler woke; firing once for the latest",
                        count - 1
                    );
                    tracing::warn!(job = %job.name, missed = count - 1, "cron job: {message}");
                    emit(
                        gw.as_ref(),
                        &job,
                        CronFiringState::Skipped,
                        None,
                        Some(message),
                        None,
                        false,
                    );
                }
                let _ = self.fire(gw, &job, Some(latest), false).await;
            }
            let (state, _) = self.state_of(&job);
            if let Some(at) = job.schedule.next_after(state.cursor, state.anchor) {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        // The state of a job no longer declared (a `[cron.<name>]` taken out of the config) is
        // forgotten, so that one added again later under that name catches nothing up.
        let jobs = self.jobs(&config);
        {
            let mut file = self.file();
            let before = file.state.len();
            file.state
                .retain(|name, _| jobs.iter().any(|j| &j.name == name));
            new_state |= file.state.len() != before;
        }
        if new_state {
            let _ = self.save().await;
        }
        next
    }

    /// A stored `{at}` job that has fired (or been moved past) disables itself.
    fn disable_done(&self, job: &Job) {
        if job.source == CronSource::Store
            && matches!(job.wire, CronSchedule { at: Some(_), .. })
            && let Some(stored) = self.file().jobs.iter_mut().find(|j| j.name == job.name)
        {
            stored.enabled = false;
        }
    }

    /// Fires `job` for `scheduled` (`None`: `cron.run`): skipped while its previous run is
    /// active or queued; else the firing is written to `cron.json` first, then the run is
    /// started with the idempotency key `cron:<scheduled>`. Each outcome is a `cron.changed`
    /// event and a log line. The caller holds `busy`.
    pub(super) async fn fire<G: AgentHost>(
        &self,
        gw: &Arc<G>,
        job: &Job,
        scheduled: Option<u64>,
        catch_up: bool,
    ) -> Result<String, CronError> {
        let (state, _) = self.state_of(job);
        let host = gw.as_ref();
        // The previous run: still going, or how it ended.
        if let Some(previous) = state.last_run_id.clone()
            && state.pending.is_none()
        {
            let active = host
                .agent()
                .runs_list(Some(&job.session_key))
                .iter()
                .any(|r| r.run_id == previous);
            if active {
                let error = format!("the previous run {previous} is still active or queued");
                tracing::warn!(job = %job.name, run_id = %previous, scheduled_at = ?scheduled, "cron job skipped: {error}");
                if let Some(at) = scheduled {
                    self.set_cursor(&job.name, at);
                    self.disable_done(job);
                    let _ = self.save().await;
                }
                emit(
                    host,
                    job,
                    CronFiringState::Skipped,
                    Some(previous.clone()),
                    Some(error),
                    scheduled,
                    catch_up,
                );
                return Err(CronError::Busy {
                    name: job.name.clone(),
                    run_id: previous,
                });
            }
            if state.last_outcome.is_none()
                && let Ok(entry) = host.agent().run_get(host, &previous)
                && entry.state == RunPhase::Done
                && let Some(outcome) = entry.outcome
                && let Some(s) = self.file().state.get_mut(&job.name)
            {
                s.last_outcome = Some(outcome.as_str().to_string());
            }
        }
        // Recorded before the run starts: this time is never fired again.
        let now = now_ms();
        if let Some(s) = self.file().state.get_mut(&job.name) {
            if let Some(at) = scheduled {
                s.cursor = s.cursor.max(at);
                s.last_scheduled_at = Some(at);
                s.pending = Some(at);
            }
            s.last_run_at = Some(now);
            s.last_run_id = None;
            s.last_outcome = None;
        }
        if scheduled.is_some() {
            self.disable_done(job);
        }
        if let Err(err) = self.save().await {
            let error = err.to_string();
            tracing::error!(job = %job.name, scheduled_at = ?scheduled, %error, "cron job failed: the firing could not be recorded, so no run was started");
            self.finish(job, None, Some("failed")).await;
            emit(
                host,
                job,
                CronFiringState::Failed,
                None,
                Some(error),
                scheduled,
                catch_up,
            );
            return Err(err);
        }
        let request = SendRequest {
            session_key: job.session_key.clone(),
            message: job.message.clone(),
            idempotency_key: scheduled.map(|at| format!("cron:{at}")),
            model: None,
            agent: job.agent.clone(),
            mode: SendMode::Queue,
        };
        match host.agent().start(gw, request).await {
            Ok(outcome) => {
                self.finish(job, Some(outcome.run_id.clone()), None).await;
                tracing::info!(job = %job.name, run_id = %outcome.run_id, scheduled_at = ?scheduled, catch_up, "cron job started a run");
                emit(
                    host,
                    job,
                    CronFiringState::Started,
                    Some(outcome.run_id.clone()),
                    None,
                    scheduled,
                    catch_up,
                );
                Ok(outcome.run_id)
            }
            Err(err) => {
                let error = err.to_string();
                self.finish(job, None, Some("failed")).await;
                tracing::warn!(job = %job.name, scheduled_at = ?scheduled, %error, "cron job failed: the run could not start");
                emit(
                    host,
                    job,
                    CronFiringState::Failed,
                    None,
                    Some(error),
                    scheduled,
                    catch_up,
                );
                Err(err.into())
            }
        }
    }

    /// Records the end of a firing: the run it started, or its outcome (`failed`).
    async fn finish(&self, job: &Job, run_id: Option<String>, outcome: Option<&str>) {
        if let Some(s) = self.file().state.get_mut(&job.name) {
            s.pending = None;
            s.last_run_id = run_id;
            s.last_outcome = outcome.map(str::to_string);
        }
        let _ = self.save().await;
    }
}

/// Publishes `cron.changed`.
#[allow(clippy::too_many_arguments)]
fn emit<G: AgentHost>(
    gw: &G,
    job: &Job,
    state: CronFiringState,
    run_id: Option<String>,
    error: Option<String>,
    scheduled_at: Option<u64>,
    catch_up: bool,
) {
    gw.hub().emit(
        None,
        &CronChangedEvent {
            name: job.name.clone(),
            state,
            run_id,
            error,
            scheduled_at,
            catch_up,
            session_key: job.session_key.clone(),
        },
    );
}
