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
//!
//! Whatever a client sends, the daemon answers and goes on: a line that is
//! no request (not JSON, not UTF-8, an unknown request) gets an error
//! answer; a line longer than [`MAX_REQUEST`] gets one and the connection
//! closes; a client silent for [`READ_TIMEOUT`] (between requests or in
//! the middle of one) is dropped; and at most [`MAX_CONNECTIONS`] are
//! served at once (each may buffer a whole request), the next told so and
//! closed.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The longest request line accepted: a route snapshot of thousands of
/// nodes fits many times over.
pub const MAX_REQUEST: u64 = 16 << 20;

/// How long a connection may stay silent, between requests or in the
/// middle of one, before it is closed.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once: operators' tools and one control process
/// need a handful; the cap bounds the threads and request buffers a
/// runaway script can make a daemon hold (16 MiB each at most).
pub const MAX_CONNECTIONS: usize = 64;

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
                let open = Arc::new(AtomicUsize::new(0));
                for stream in listener.incoming() {
                    let mut stream = match stream {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!("API accept: {e}");
                            continue;
                        }
                    };
                    if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                        tracing::warn!("API: {MAX_CONNECTIONS} connections open; refusing another");
                        let refusal = handler.refuse(format!(
                            "too many connections ({MAX_CONNECTIONS} open); try again later"
                        ));
                        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                        let _ = stream.write_all(&answer(&refusal));
                        continue;
                    }
                    open.fetch_add(1, Ordering::Relaxed);
                    let handler = Arc::clone(&handler);
                    let done = Arc::clone(&open);
                    let spawned =
                        std::thread::Builder::new()
                            .name("api-conn".into())
                            .spawn(move || {
                                serve(stream, &*handler);
                                done.fetch_sub(1, Ordering::Relaxed);
                            });
                    if let Err(e) = spawned {
                        open.fetch_sub(1, Ordering::Relaxed);
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
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_REQUEST).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let oversized = !line.ends_with(b"\n") && line.len() as u64 >= MAX_REQUEST;
        let response = if oversized {
            handler.refuse(format!("request longer than {MAX_REQUEST} bytes"))
        } else {
            // From bytes: a line that is not UTF-8 is answered like any
            // other that is no request.
            match serde_json::from_slice::<H::Request>(&line) {
                Ok(request) => handler.handle(request),
                Err(e) => handler.refuse(format!("malformed request: {e}")),
            }
        };
        if writer.write_all(&answer(&response)).is_err() {
            return;
        }
        if oversized {
            // The rest of an oversized line cannot be found reliably.
            return;
        }
    }
}

/// A response as its line.
fn answer<R: Serialize>(response: &R) -> Vec<u8> {
    let mut out = serde_json::to_vec(response).expect("responses serialize");
    out.push(b'\n');
    out
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

    /// How long a request may wait for the daemon, writing or reading;
    /// `None`: forever. A daemon that does not answer in time fails the
    /// request with `WouldBlock` or `TimedOut`.
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.writer.set_write_timeout(timeout)?;
        self.reader.get_ref().set_read_timeout(timeout)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Echoes a number back; refuses with the reason.
    struct Echo;

    impl Handler for Echo {
        type Request = u64;
        type Response = String;

        fn handle(&self, request: u64) -> String {
            format!("got {request}")
        }

        fn refuse(&self, reason: String) -> String {
            format!("refused: {reason}")
        }
    }

    fn server() -> (Server, PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "dt-{}-local-socket-{:?}.sock",
            std::process::id(),
            std::thread::current().id()
        ));
        let server = Server::bind(&path, "test").unwrap();
        server.spawn(Arc::new(Echo)).unwrap();
        (server, path)
    }

    /// Sends `bytes` on a fresh connection and reads the first answer.
    fn exchange(path: &Path, bytes: &[u8]) -> String {
        let mut stream = UnixStream::connect(path).unwrap();
        stream.write_all(bytes).unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        line
    }

    #[test]
    fn garbage_is_answered_and_the_connection_goes_on() {
        let (_server, path) = server();
        let mut stream = UnixStream::connect(&path).unwrap();
        stream
            .write_all(b"\xff\xfe\x00garbage\n{\"no\": 1}\n\n7\n")
            .unwrap();
        let lines: Vec<String> = BufReader::new(stream)
            .lines()
            .take(4)
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect();
        assert!(
            lines[0].starts_with("refused: malformed request"),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("refused: malformed request"),
            "{lines:?}"
        );
        assert!(
            lines[2].starts_with("refused: malformed request: EOF"),
            "{lines:?}"
        );
        assert_eq!(lines[3], "got 7");
    }

    #[test]
    fn an_oversized_request_is_refused_and_the_connection_closed() {
        let (_server, path) = server();
        let mut stream = UnixStream::connect(&path).unwrap();
        let chunk = vec![b'1'; 1 << 20];
        let writer = {
            let mut stream = stream.try_clone().unwrap();
            std::thread::spawn(move || {
                // The server stops reading after MAX_REQUEST bytes: the
                // rest may be refused by a closed socket.
                for _ in 0..=(MAX_REQUEST >> 20) {
                    if stream.write_all(&chunk).is_err() {
                        break;
                    }
                }
            })
        };
        let mut line = String::new();
        BufReader::new(&mut stream).read_line(&mut line).unwrap();
        let answer: String = serde_json::from_str(&line).unwrap();
        assert_eq!(
            answer,
            format!("refused: request longer than {MAX_REQUEST} bytes")
        );
        writer.join().unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        assert!(rest.is_empty(), "closed after the refusal");
        // The server goes on.
        assert_eq!(exchange(&path, b"5\n"), "\"got 5\"\n");
    }

    #[test]
    fn connections_beyond_the_cap_are_told_so_and_closed() {
        let (_server, path) = server();
        let held: Vec<UnixStream> = (0..MAX_CONNECTIONS)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        // Each held connection is served: its thread answers.
        for mut s in held.iter().take(1) {
            s.write_all(b"1\n").unwrap();
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).unwrap();
            assert_eq!(line, "\"got 1\"\n");
        }
        let refused = exchange(&path, b"2\n");
        assert!(refused.contains("too many connections"), "{refused}");
        drop(held);
        // The threads notice the closed connections and the cap frees up.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let line = exchange(&path, b"3\n");
            if line == "\"got 3\"\n" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still refused: {line}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
