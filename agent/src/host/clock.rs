//! `clock`: wall-clock time and sleeping inside the call's deadline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::HostState;
use super::bindings::action::qmedic::plugin::clock::Host;

impl Host for HostState {
    async fn now_ms(&mut self) -> wasmtime::Result<u64> {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Ok(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }

    async fn sleep_ms(&mut self, ms: u32) -> wasmtime::Result<()> {
        // Never sleep past the deadline: the epoch check ends the call right after.
        let wanted = Duration::from_millis(u64::from(ms));
        tokio::time::sleep(wanted.min(self.remaining())).await;
        Ok(())
    }
}
