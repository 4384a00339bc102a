//! Liveness and readiness, kept apart.
//!
//! Liveness answers "should this process be restarted?": it fails only when a component that
//! promised to report regularly stopped doing so (a stuck event loop). Readiness answers "should
//! this process get traffic now?": it fails while any component is not ready (broker
//! reconnecting, keys not loaded yet) and from the moment the service starts draining. Merging
//! the two makes an orchestrator restart a process that is merely waiting for its broker.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

#[derive(Debug)]
struct Component {
    ready: bool,
    reason: String,
    heartbeat: Option<(Instant, Duration)>,
}

#[derive(Debug, Default)]
struct Inner {
    components: BTreeMap<String, Component>,
    draining: bool,
}

/// The health of every component of one service.
#[derive(Debug, Clone, Default)]
pub struct HealthRegistry {
    inner: Arc<Mutex<Inner>>,
}

/// A snapshot for `/livez` or `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthStatus {
    /// Whether the probe passes.
    pub ok: bool,
    /// One line per component, for people reading the probe.
    pub details: Vec<String>,
}

impl HealthRegistry {
    /// An empty registry: live and ready until components say otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a component, not ready until it says so.
    pub fn register(&self, name: &str) -> ComponentHealth {
        self.inner.lock().components.insert(
            name.to_string(),
            Component {
                ready: false,
                reason: "starting".into(),
                heartbeat: None,
            },
        );
        ComponentHealth {
            name: name.to_string(),
            registry: self.clone(),
        }
    }

    /// Marks the whole service as draining: readiness fails from now on.
    pub fn start_draining(&self) {
        self.inner.lock().draining = true;
    }

    /// Readiness: every component ready and not draining.
    pub fn readiness(&self) -> HealthStatus {
        let inner = self.inner.lock();
        let mut ok = !inner.draining;
        let mut details = Vec::new();
        if inner.draining {
            details.push("service: draining".to_string());
        }
        for (name, c) in &inner.components {
            ok &= c.ready;
            let state = if c.ready { "ready" } else { "not ready" };
            details.push(format!("{name}: {state} ({})", c.reason));
        }
        HealthStatus { ok, details }
    }

    /// Liveness: no component missed its heartbeat deadline.
    pub fn liveness(&self) -> HealthStatus {
        let inner = self.inner.lock();
        let now = Instant::now();
        let mut ok = true;
        let mut details = Vec::new();
        for (name, c) in &inner.components {
            if let Some((last, deadline)) = c.heartbeat {
                let stalled = now.duration_since(last) > deadline;
                ok &= !stalled;
                let state = if stalled { "stalled" } else { "alive" };
                details.push(format!("{name}: {state}"));
            }
        }
        HealthStatus { ok, details }
    }
}

/// One component's handle on its health.
#[derive(Debug, Clone)]
pub struct ComponentHealth {
    name: String,
    registry: HealthRegistry,
}

impl ComponentHealth {
    /// Reports the component ready.
    pub fn ready(&self) {
        self.set(true, "ok");
    }

    /// Reports the component not ready, with why.
    pub fn not_ready(&self, reason: impl Into<String>) {
        self.set(false, reason);
    }

    fn set(&self, ready: bool, reason: impl Into<String>) {
        let mut inner = self.registry.inner.lock();
        if let Some(c) = inner.components.get_mut(&self.name) {
            c.ready = ready;
            c.reason = reason.into();
        }
    }

    /// Records that the component's loop is making progress; liveness fails when the next
    /// heartbeat does not come within `deadline`.
    pub fn heartbeat(&self, deadline: Duration) {
        let mut inner = self.registry.inner.lock();
        if let Some(c) = inner.components.get_mut(&self.name) {
            c.heartbeat = Some((Instant::now(), deadline));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_every_component_and_fails_when_draining() {
        let registry = HealthRegistry::new();
        let broker = registry.register("broker");
        let keys = registry.register("keys");
        assert!(!registry.readiness().ok);
        broker.ready();
        assert!(!registry.readiness().ok);
        keys.ready();
        assert!(registry.readiness().ok);
        broker.not_ready("reconnecting");
        let status = registry.readiness();
        assert!(!status.ok);
        assert!(status.details.iter().any(|d| d.contains("reconnecting")));
        broker.ready();
        registry.start_draining();
        assert!(!registry.readiness().ok);
        assert!(
            registry.liveness().ok,
            "draining is not a reason to restart"
        );
    }

    #[test]
    fn a_missed_heartbeat_fails_liveness_only() {
        let registry = HealthRegistry::new();
        let worker = registry.register("worker");
        worker.ready();
        worker.heartbeat(Duration::from_millis(0));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!registry.liveness().ok);
        worker.heartbeat(Duration::from_secs(60));
        assert!(registry.liveness().ok);
    }
}
