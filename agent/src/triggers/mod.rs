//! What starts runs besides the CLI: cron schedules (alert webhooks and ChatOps join them here).

mod schedule;

pub use schedule::{spawn_schedules, tick_after_downtime};
