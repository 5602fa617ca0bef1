//! Cron schedules in `qmedic serve`. Every tick is claimed in the store before it runs, so with
//! a shared PostgreSQL store a tick runs once fleet-wide; after downtime the latest missed tick
//! runs once, not once per missed tick.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::playbook::{Executor, Outcome, Playbook, RunRequest};
use crate::store::StoreError;

/// Start one task per scheduled playbook. Runs of one playbook on one agent follow each other;
/// a tick that passes while a run is still going is skipped, not queued.
pub fn spawn_schedules(
    executor: &Executor,
    playbooks: &[Arc<Playbook>],
) -> Vec<tokio::task::JoinHandle<()>> {
    playbooks
        .iter()
        .filter(|p| p.on.schedule.is_some())
        .map(|p| tokio::spawn(schedule_loop(executor.clone(), p.clone())))
        .collect()
}

/// The tick to run once at start-up: the latest one after the last claimed tick, if any passed.
pub async fn tick_after_downtime(
    executor: &Executor,
    playbook: &Playbook,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let Some(schedule) = &playbook.on.schedule else {
        return Ok(None);
    };
    let Some(last) = executor.store().last_tick(&playbook.name).await? else {
        return Ok(None);
    };
    let Some(last) = DateTime::from_timestamp_millis(last) else {
        return Ok(None);
    };
    Ok(schedule.last_between(last, now))
}

async fn schedule_loop(executor: Executor, playbook: Arc<Playbook>) {
    let Some(schedule) = playbook.on.schedule.clone() else {
        return;
    };
    tracing::info!(playbook = %playbook.name, schedule = %schedule.text, "scheduled");
    match tick_after_downtime(&executor, &playbook, Utc::now()).await {
        Ok(Some(missed)) => {
            tracing::info!(playbook = %playbook.name, tick = %missed, "running the tick missed while no agent was up");
            run_tick(&executor, &playbook, missed).await;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(playbook = %playbook.name, error = %e, "cannot read the last tick")
        }
    }
    let mut after = Utc::now();
    loop {
        let Some(next) = schedule.next_after(after) else {
            tracing::info!(playbook = %playbook.name, "schedule has no more ticks");
            return;
        };
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        run_tick(&executor, &playbook, next).await;
        after = next.max(Utc::now());
    }
}

async fn run_tick(executor: &Executor, playbook: &Playbook, tick: DateTime<Utc>) {
    let req = RunRequest {
        trigger: "schedule".into(),
        who: "schedule".into(),
        tick_at: Some(tick.timestamp_millis()),
        ..RunRequest::default()
    };
    match executor.run(playbook, req).await {
        Ok(s) if s.outcome == Outcome::AlreadyClaimed => {
            tracing::debug!(playbook = %playbook.name, tick = %tick, "tick claimed by another agent");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(playbook = %playbook.name, tick = %tick, error = %e, "scheduled run could not start")
        }
    }
}
