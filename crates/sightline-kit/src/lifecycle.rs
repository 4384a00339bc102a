//! Process lifecycle: one cancellation token, tripped by SIGTERM/SIGINT or by a component that
//! failed, so that one failing task stops the whole service with a non-zero exit.

use tokio_util::sync::CancellationToken;

/// The shutdown signal shared by every task of a process.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    failed: CancellationToken,
}

impl Shutdown {
    /// A fresh, untripped shutdown.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token tasks select on.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Asks every task to stop (a signal, or a test).
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// A component failed: stop everything, and make the process exit non-zero.
    pub fn fail(&self, component: &str, error: &dyn std::fmt::Display) {
        tracing::error!(component, %error, "component failed, shutting down");
        self.failed.cancel();
        self.token.cancel();
    }

    /// Whether a component failed (rather than a clean stop).
    pub fn has_failed(&self) -> bool {
        self.failed.is_cancelled()
    }

    /// Resolves when shutdown was asked for.
    pub async fn requested(&self) {
        self.token.cancelled().await
    }

    /// Trips the token on SIGTERM or SIGINT. Call once per process, from its `main`.
    pub fn listen_for_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let name = wait_for_signal().await;
            tracing::info!(signal = name, "shutdown requested");
            this.trigger();
        });
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; only ctrl-c stops this process");
        let _ = tokio::signal::ctrl_c().await;
        return "ctrl-c";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "ctrl-c"
}
