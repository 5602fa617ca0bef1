//! The one wasmtime `Engine` and the ticker that drives its epoch deadlines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::RuntimeConfig;

/// How often the epoch advances: the granularity of deadlines and of yielding to other tasks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Deepest wasm stack a plugin may use before it traps with a stack overflow.
const MAX_WASM_STACK: usize = 1 << 20;

/// Build the engine: component model, async, epoch interruption, pooling allocator sized for
/// `max_instances` live plugin instances whose memories grow to at most `max_memory` bytes.
pub(crate) fn build(runtime: &RuntimeConfig, max_memory: u64) -> wasmtime::Result<Engine> {
    let instances = runtime.max_instances;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        .total_core_instances(instances * 20)
        .total_memories(instances * 4)
        .total_tables(instances * 20)
        .total_stacks(instances)
        .max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX))
        .max_memories_per_component(4)
        .max_tables_per_component(20)
        .max_core_instances_per_component(20)
        // Keeping async stacks resident measured faster; keeping linear memory resident did not.
        .async_stack_keep_resident(128 << 10);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .async_stack_size(MAX_WASM_STACK + (1 << 20))
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on its own thread, until dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub(crate) fn start(engine: &Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("qmedic-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| {
                tracing::error!("cannot start the epoch ticker, deadlines will not fire: {e}")
            });
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
