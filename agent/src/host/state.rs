//! `state`: a small key-value store private to each plugin.

use super::bindings::action::qmedic::plugin::state::Host;
use super::{Access, HostState, WitError};

impl Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, WitError>> {
        if let Err(e) = self.check(Access::State) {
            return Ok(Err(e));
        }
        Ok(Ok(self.env.state.get(&self.plugin.manifest.name, &key)))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), WitError>> {
        if let Err(e) = self.check(Access::State) {
            return Ok(Err(e));
        }
        Ok(self.env.state.set(&self.plugin.manifest.name, key, value))
    }

    async fn remove(&mut self, key: String) -> wasmtime::Result<Result<(), WitError>> {
        if let Err(e) = self.check(Access::State) {
            return Ok(Err(e));
        }
        self.env.state.remove(&self.plugin.manifest.name, &key);
        Ok(Ok(()))
    }
}
