//! The store's resource limiter: memory, tables and instances per plugin instance.

use crate::config::Limits;

/// Most tables and table elements a plugin instance may create or grow to.
const MAX_TABLES: usize = 20;
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Most core instances and memories one component may create; a Rust component uses a few.
const MAX_INSTANCES: usize = 20;
const MAX_MEMORIES: usize = 4;

/// Which limit stopped a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LimitHit {
    #[error("memory cap")]
    Memory { desired: u64 },
    #[error("table cap")]
    Table { desired: u64 },
    #[error("deadline")]
    Deadline,
}

/// Enforces a plugin's [`Limits`] and remembers which one it hit, so the failure can be named
/// without parsing wasmtime's messages.
pub(crate) struct Limiter {
    pub(crate) limits: Limits,
    pub(crate) hit: Option<LimitHit>,
}

impl Limiter {
    pub(crate) fn new(limits: Limits) -> Self {
        Limiter { limits, hit: None }
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.limits.memory {
            let hit = LimitHit::Memory {
                desired: desired as u64,
            };
            self.hit = Some(hit);
            return Err(wasmtime::Error::new(hit));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            let hit = LimitHit::Table {
                desired: desired as u64,
            };
            self.hit = Some(hit);
            return Err(wasmtime::Error::new(hit));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}
