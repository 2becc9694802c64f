//! The local API: a Unix socket on which the control process installs route
//! snapshots and operators read counters, latency and health.
//!
//! The protocol is one JSON object per line each way
//! ([`detour_common::api`]; docs/dataplane-api.md), served by
//! [`detour_common::local_socket::Server`]: mode 0600, a thread per
//! connection. Nothing here touches a worker: installs swap the shared
//! table, reads load the workers' published counters.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use detour_common::api::{
    Health, InterfaceHealth, Request, Response, Stats, Stranger, WorkerCounters, WorkerStats,
};
use detour_common::local_socket::Handler;
use detour_common::wire::NodeId;

use crate::routes::Installer;
use crate::stats::{Published, merged_latency, summary};

/// One worker as the API reports it.
pub struct WorkerView {
    pub queue: u32,
    pub core: Option<usize>,
    pub published: Arc<Published>,
}

/// What the API reads and changes.
pub struct State {
    pub node_id: NodeId,
    pub started: Instant,
    pub installer: Mutex<Installer>,
    pub workers: Vec<WorkerView>,
    /// Workers whose thread is still in its loop.
    pub running: Arc<AtomicUsize>,
    pub interfaces: Vec<InterfaceHealth>,
}

impl State {
    /// Answers one request.
    pub fn handle(&self, request: Request) -> Response {
        match request {
            // A control process configured as another node would make this
            // one forward as that node: its own prefixes would look remote.
            Request::Install { snapshot } if snapshot.local != self.node_id => {
                let message = format!(
                    "snapshot refused: it is for node {}, and this dataplane is node {} \
                     (node_id differs between the control process's and the dataplane's configuration)",
                    snapshot.local, self.node_id
                );
                tracing::warn!("{message}");
                Response::Error { message }
            }
            Request::Install { snapshot } => match self.installer().install(snapshot) {
                Ok(version) => {
                    tracing::info!(version, "route snapshot installed");
                    Response::Installed { version }
                }
                Err(e) => {
                    tracing::warn!("route snapshot refused: {e}");
                    Response::Error {
                        message: format!("snapshot refused: {e}"),
                    }
                }
            },
            Request::Routes => Response::Routes {
                snapshot: self.installer().snapshot().cloned(),
            },
            Request::Stats => Response::Stats(self.stats()),
            Request::Health => Response::Health(self.health()),
        }
    }

    fn installer(&self) -> std::sync::MutexGuard<'_, Installer> {
        // A panic while installing leaves the previous table published;
        // the installer itself is still consistent (it commits last).
        self.installer.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> Stats {
        let mut total = WorkerCounters::default();
        let mut merged = merged_latency();
        let workers = self
            .workers
            .iter()
            .map(|w| {
                let counters = w.published.counters();
                total.add(&counters);
                let mut latency = merged_latency();
                w.published.merge_latency(&mut latency);
                let _ = merged.add(&latency);
                WorkerStats {
                    queue: w.queue,
                    core: w.core,
                    counters,
                    latency: summary(&latency),
                }
            })
            .collect();
        let installer = self.installer();
        let classifier = installer.classifier();
        let xdp = classifier
            .and_then(|c| c.counters().ok())
            .map(|c| {
                c.iter()
                    .map(|(counter, n)| (counter.name().to_string(), n.packets))
                    .collect()
            })
            .unwrap_or_default();
        let control_strangers = classifier
            .and_then(|c| c.control_strangers().ok())
            .unwrap_or_default()
            .into_iter()
            .map(|(addr, dropped)| Stranger { addr, dropped })
            .collect();
        Stats {
            workers,
            total,
            latency: summary(&merged),
            xdp,
            control_strangers,
        }
    }

    pub fn health(&self) -> Health {
        // One lock: a second `installer()` in the same expression would
        // wait for the first's guard, which lives to its end.
        let (instance, route_version, keys) = {
            let installer = self.installer();
            (
                installer.instance(),
                installer.snapshot().map(|s| s.version),
                installer.held_keys(),
            )
        };
        Health {
            node_id: self.node_id,
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_s: self.started.elapsed().as_secs(),
            instance,
            route_version,
            workers_running: self.running.load(Ordering::Relaxed),
            workers: self.workers.len(),
            interfaces: self.interfaces.clone(),
            keys,
        }
    }
}

impl Handler for State {
    type Request = Request;
    type Response = Response;

    fn handle(&self, request: Request) -> Response {
        State::handle(self, request)
    }

    fn refuse(&self, message: String) -> Response {
        Response::Error { message }
    }
}
