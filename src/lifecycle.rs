//! Layer 0, a leaf. Process lifecycle flags read by `/healthz`, `/readyz` and the data plane.
//!
//! `/healthz` is what the edge nginx tier checks: it answers 200 only once a first
//! routing table is loaded and while not draining. It never looks at applications.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Lifecycle {
    configured: AtomicBool,
    synced: AtomicBool,
    draining: AtomicBool,
}

impl Lifecycle {
    /// A first routing table has been published.
    pub fn set_configured(&self) {
        self.configured.store(true, Ordering::Release);
    }

    /// Every source has finished its initial sync.
    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_configured(&self) -> bool {
        self.configured.load(Ordering::Acquire)
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn is_healthy(&self) -> bool {
        self.is_configured() && !self.is_draining()
    }
}
