//! The `state` interface's store: a small key-value map per plugin, kept for the agent's
//! lifetime.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::host::WitError;

/// Longest key, largest value and most keys one plugin may keep.
const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 64 << 10;
const MAX_KEYS: usize = 1_024;

#[derive(Default)]
pub(crate) struct StateStore {
    by_plugin: Mutex<HashMap<String, HashMap<String, Vec<u8>>>>,
}

impl StateStore {
    pub(crate) fn get(&self, plugin: &str, key: &str) -> Option<Vec<u8>> {
        let map = self.by_plugin.lock().ok()?;
        map.get(plugin)?.get(key).cloned()
    }

    pub(crate) fn set(&self, plugin: &str, key: String, value: Vec<u8>) -> Result<(), WitError> {
        if key.len() > MAX_KEY || value.len() > MAX_VALUE {
            return Err(WitError::Invalid(format!(
                "state entries are limited to {MAX_KEY}-byte keys and {MAX_VALUE}-byte values; \
                 `{}` holds {} bytes",
                key.chars().take(64).collect::<String>(),
                value.len()
            )));
        }
        let mut map = self
            .by_plugin
            .lock()
            .map_err(|_| WitError::Internal("state store is unusable after a panic".into()))?;
        let entries = map.entry(plugin.to_string()).or_default();
        if entries.len() >= MAX_KEYS && !entries.contains_key(&key) {
            return Err(WitError::Invalid(format!(
                "plugin `{plugin}` already keeps {MAX_KEYS} state keys; remove some first"
            )));
        }
        entries.insert(key, value);
        Ok(())
    }

    pub(crate) fn remove(&self, plugin: &str, key: &str) {
        if let Ok(mut map) = self.by_plugin.lock()
            && let Some(entries) = map.get_mut(plugin)
        {
            entries.remove(key);
        }
    }
}
