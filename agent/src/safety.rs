//! Leases with fencing tokens: what makes runs for one lock key never overlap, fleet-wide, and
//! stops a run that lost its lease before its next change.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::metrics::Metrics;
use crate::store::{AuditEntry, Lease, Store, StoreError, now_ms};

/// A held lease, renewed in the background at a third of its TTL until released. Dropped
/// without [`LeaseGuard::release`] (a run that ended on an error), it gives the lease back in
/// the background, so the next run need not wait for the TTL.
#[derive(Debug)]
pub struct LeaseGuard {
    store: Arc<dyn Store>,
    current: Arc<Mutex<Lease>>,
    lost: Arc<AtomicBool>,
    released: AtomicBool,
    metrics: Metrics,
    renewer: tokio::task::JoinHandle<()>,
}

impl LeaseGuard {
    /// Take the lease on `key` for `holder`; `None` when another holder has it. `metrics` shows
    /// it as held until it is released.
    pub async fn acquire(
        store: Arc<dyn Store>,
        key: &str,
        holder: &str,
        ttl: Duration,
        metrics: &Metrics,
    ) -> Result<Option<LeaseGuard>, StoreError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4);
        let Some(lease) = store.acquire_lease(key, holder, ttl_ms, now_ms()).await? else {
            return Ok(None);
        };
        let current = Arc::new(Mutex::new(lease));
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = tokio::spawn(renew(
            store.clone(),
            current.clone(),
            lost.clone(),
            ttl,
            ttl_ms,
        ));
        metrics.lease_held(key, true);
        Ok(Some(LeaseGuard {
            store,
            current,
            lost,
            released: AtomicBool::new(false),
            metrics: metrics.clone(),
            renewer,
        }))
    }

    /// The lease as last renewed.
    pub fn lease(&self) -> Lease {
        match self.current.lock() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether a renewal found the lease taken over or expired.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Before a change: record `entry` in the audit log if, and only if, this lease is still the
    /// live one. `false` means the run must not make the change.
    pub async fn fence(&self, entry: &AuditEntry) -> Result<bool, StoreError> {
        if self.is_lost() {
            return Ok(false);
        }
        let ok = self
            .store
            .audit_fenced(&self.lease(), now_ms(), entry)
            .await?;
        if !ok {
            self.lost.store(true, Ordering::SeqCst);
        }
        Ok(ok)
    }

    /// Stop renewing and give the lease back so the next run need not wait for the TTL.
    pub async fn release(&self) -> Result<(), StoreError> {
        match self.stop() {
            Some(lease) => self.store.release_lease(&lease).await,
            None => Ok(()),
        }
    }

    /// Stop renewing and mark the lease no longer held; the lease to give back, unless it was
    /// given back already or lost.
    fn stop(&self) -> Option<Lease> {
        self.renewer.abort();
        if self.released.swap(true, Ordering::SeqCst) {
            return None;
        }
        let lease = self.lease();
        self.metrics.lease_held(&lease.key, false);
        (!self.is_lost()).then_some(lease)
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let Some(lease) = self.stop() else { return };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            handle.spawn(async move {
                if let Err(e) = store.release_lease(&lease).await {
                    tracing::warn!(key = %lease.key, error = %e, "cannot give the lease back; it expires at its TTL");
                }
            });
        }
    }
}

async fn renew(
    store: Arc<dyn Store>,
    current: Arc<Mutex<Lease>>,
    lost: Arc<AtomicBool>,
    ttl: Duration,
    ttl_ms: i64,
) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        let lease = match current.lock() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let now = now_ms();
        match store.renew_lease(&lease, ttl_ms, now).await {
            Ok(Some(renewed)) => {
                if let Ok(mut l) = current.lock() {
                    *l = renewed;
                }
            }
            Ok(None) => {
                tracing::warn!(key = %lease.key, token = lease.token, "lease lost: another holder took it over");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) if now >= lease.expires_at => {
                tracing::warn!(key = %lease.key, error = %e, "lease expired while the store was unreachable");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => tracing::warn!(key = %lease.key, error = %e, "cannot renew lease; retrying"),
        }
    }
}
