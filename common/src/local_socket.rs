//! The transport of both daemons' local APIs: JSON lines over a Unix
//! socket.
//!
//! One JSON object per line each way; a connection may carry any number of
//! requests, each answered in order. [`Server`] binds the socket (mode
//! 0600, root only, in a directory created 0755 if missing) and answers
//! each connection on a thread of its own, so that a slow client never
//! holds up another; [`Connection`] is the client side. What the requests
//! and answers are is each API's own (`api` for the dataplane, the control
//! process's `api`).

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The longest request line accepted: a route snapshot of thousands of
/// nodes fits many times over.
pub const MAX_REQUEST: u64 = 16 << 20;

/// How long a connection may sit idle in the middle of a request.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What a server does with each request, and how it says that a line
/// could not be read as one.
pub trait Handler: Send + Sync + 'static {
    type Request: DeserializeOwned;
    type Response: Serialize;

    fn handle(&self, request: Self::Request) -> Self::Response;

    /// The answer to a line that is no request (`reason` says why).
    fn refuse(&self, reason: String) -> Self::Response;
}

/// A listening API socket; the file is removed when this drops.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Binds `path`, mode 0600. A leftover socket file from a daemon that
    /// died is replaced; one a live process still answers on is not.
    /// `daemon` names who binds it, for the error.
    pub fn bind(path: &Path, daemon: &str) -> io::Result<Server> {
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
                        "API socket {} is in use by another running {daemon}",
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
    pub fn spawn<H: Handler>(&self, handler: Arc<H>) -> io::Result<std::thread::JoinHandle<()>> {
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
                    let handler = Arc::clone(&handler);
                    let spawned = std::thread::Builder::new()
                        .name("api-conn".into())
                        .spawn(move || serve(stream, &*handler));
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
fn serve<H: Handler>(stream: UnixStream, handler: &H) {
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
        let oversized = !line.ends_with('\n') && line.len() as u64 >= MAX_REQUEST;
        let response = if oversized {
            handler.refuse(format!("request longer than {MAX_REQUEST} bytes"))
        } else {
            match serde_json::from_str::<H::Request>(&line) {
                Ok(request) => handler.handle(request),
                Err(e) => handler.refuse(format!("malformed request: {e}")),
            }
        };
        let mut out = serde_json::to_vec(&response).expect("responses serialize");
        out.push(b'\n');
        if writer.write_all(&out).is_err() {
            return;
        }
        if oversized {
            // The rest of an oversized line cannot be found reliably.
            return;
        }
    }
}

/// A client's connection to an API socket: one request, one answer.
pub struct Connection {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Connection {
    /// Connects to the socket at `path`; `daemon` names who serves it, for
    /// the error ("dataplane API /run/detour/dataplane.sock: ...").
    pub fn connect(path: &Path, daemon: &str) -> io::Result<Connection> {
        let stream = UnixStream::connect(path).map_err(|e| {
            io::Error::new(e.kind(), format!("{daemon} API {}: {e}", path.display()))
        })?;
        let writer = stream.try_clone()?;
        Ok(Connection {
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends `request` and reads the answer.
    pub fn request<Q: Serialize, A: DeserializeOwned>(&mut self, request: &Q) -> io::Result<A> {
        let mut out = serde_json::to_vec(request).map_err(io::Error::other)?;
        out.push(b'\n');
        self.writer.write_all(&out)?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection",
            ));
        }
        serde_json::from_str(&line).map_err(io::Error::other)
    }
}
