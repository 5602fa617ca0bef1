//! `scale`: replica counts through the configured scalers.

use super::bindings::action::qmedic::plugin::scale::Host;
use super::{Access, HostState, WitError};

impl Host for HostState {
    async fn replicas(
        &mut self,
        scaler: String,
        target: String,
    ) -> wasmtime::Result<Result<u32, WitError>> {
        if let Err(e) = self.check(Access::Scaler(&scaler)) {
            return Ok(Err(e));
        }
        let remaining = self.remaining();
        Ok(self.env.scalers[&scaler]
            .replicas(&scaler, &target, remaining)
            .await)
    }

    async fn set_replicas(
        &mut self,
        scaler: String,
        target: String,
        replicas: u32,
    ) -> wasmtime::Result<Result<(), WitError>> {
        if let Err(e) = self.check(Access::Scaler(&scaler)) {
            return Ok(Err(e));
        }
        let remaining = self.remaining();
        let result = self.env.scalers[&scaler]
            .set_replicas(&scaler, &target, replicas, remaining)
            .await;
        if result.is_ok() {
            self.push_log(
                "info",
                format!("scaler `{scaler}` set `{target}` to {replicas} replicas"),
            );
        }
        Ok(result)
    }
}
