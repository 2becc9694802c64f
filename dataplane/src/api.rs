//! The local API: a Unix socket on which the control process installs route
//! snapshots and operators read counters, latency and health.
//!
//! The protocol is one JSON object per line each way
//! ([`detour_common::api`]; docs/dataplane-api.md). The socket file is made
//! mode 0600 (root only) unless configured otherwise, in a directory created
//! 0755 if missing. Each connection is served on a thread of its own, so a
//! slow client never holds up another, and nothing here touches a worker:
//! installs swap the shared table, reads load the workers' published
//! counters.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use detour_common::api::{
    Health, InterfaceHealth, Request, Response, Stats, WorkerCounters, WorkerStats,
};
use detour_common::wire::NodeId;

use crate::routes::Installer;
use crate::stats::{Published, merged_latency, summary};

/// The longest request line accepted: a snapshot of thousands of nodes fits
/// many times over.
const MAX_REQUEST: u64 = 16 << 20;

/// How long a connection may sit idle in the middle of a request.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

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
        let xdp = self
            .installer()
            .classifier()
            .and_then(|c| c.counters().ok())
            .map(|c| {
                c.iter()
                    .map(|(counter, n)| (counter.name().to_string(), n.packets))
                    .collect()
            })
            .unwrap_or_default();
        Stats {
            workers,
            total,
            latency: summary(&merged),
            xdp,
        }
    }

    pub fn health(&self) -> Health {
        Health {
            node_id: self.node_id,
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_s: self.started.elapsed().as_secs(),
            route_version: self.installer().snapshot().map(|s| s.version),
            workers_running: self.running.load(Ordering::Relaxed),
            workers: self.workers.len(),
            interfaces: self.interfaces.clone(),
        }
    }
}

/// A listening API socket; the file is removed when this drops.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Binds `path`, mode 0600. A leftover socket file from a dataplane
    /// that died is replaced; one a live process still answers on is not.
    pub fn bind(path: &Path) -> io::Result<Server> {
        let context = |what: &str, e: io::Error| {
            io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            fs::create_dir_all(dir).map_err(|e| context("creating the directory of", e))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .map_err(|e| context("setting the mode of the directory of", e))?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "API socket {} is in use by another running dataplane",
                        path.display()
                    ),
                ));
            }
            fs::remove_file(path).map_err(|e| context("removing the stale socket", e))?;
        }
        let listener = UnixListener::bind(path).map_err(|e| context("binding", e))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(|e| context("setting the mode of", e))?;
        Ok(Server {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Serves connections until the process ends, on a thread of its own.
    pub fn spawn(&self, state: Arc<State>) -> io::Result<std::thread::JoinHandle<()>> {
        let listener = self.listener.try_clone()?;
        std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let stream = match stream {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!("API accept: {e}");
                            continue;
                        }
                    };
                    let state = Arc::clone(&state);
                    let spawned = std::thread::Builder::new()
                        .name("api-conn".into())
                        .spawn(move || serve(stream, &state));
                    if let Err(e) = spawned {
                        tracing::warn!("API connection thread: {e}");
                    }
                }
            })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Answers the requests of one connection until it closes.
fn serve(stream: UnixStream, state: &State) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_REQUEST).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let response = if !line.ends_with('\n') && line.len() as u64 >= MAX_REQUEST {
            Response::Error {
                message: format!("request longer than {MAX_REQUEST} bytes"),
            }
        } else {
            match serde_json::from_str::<Request>(&line) {
                Ok(request) => state.handle(request),
                Err(e) => Response::Error {
                    message: format!("malformed request: {e}"),
                },
            }
        };
        let mut out = serde_json::to_vec(&response).expect("responses serialize");
        out.push(b'\n');
        if writer.write_all(&out).is_err() {
            return;
        }
        if line.len() as u64 >= MAX_REQUEST {
            // The rest of an oversized line cannot be found reliably.
            return;
        }
    }
}
