//! detourctl as scripts use it, without any daemon: a hung daemon fails
//! the call after `--timeout`, and a closed pipe ends it quietly.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DETOURCTL: &str = env!("CARGO_BIN_EXE_detourctl");

/// A daemon that takes the connection and never answers.
#[test]
fn a_daemon_that_never_answers_fails_the_call_after_the_timeout() {
    let path = std::env::temp_dir().join(format!("dt-{}-hung.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let holder = std::thread::spawn(move || {
        let (connection, _) = listener.accept().unwrap();
        // Held, unanswered, until detourctl gave up.
        std::thread::sleep(Duration::from_secs(3));
        drop(connection);
    });
    let started = Instant::now();
    let out = Command::new(DETOURCTL)
        .args([
            "--control-socket",
            path.to_str().unwrap(),
            "--timeout",
            "0.5",
            "peers",
        ])
        .output()
        .unwrap();
    let took = started.elapsed();
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("did not answer within 0.5 s"), "{stderr}");
    assert!(
        took < Duration::from_secs(3),
        "gave up before the daemon let go: {took:?}"
    );
    holder.join().unwrap();
}

#[test]
fn a_timeout_that_is_no_time_is_refused_as_usage() {
    for bad in ["0", "-1", "soon", "7200"] {
        let out = Command::new(DETOURCTL)
            .args(["--timeout", bad, "status"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--timeout {bad}");
    }
}

/// Output into a pipe whose reader is gone (`detourctl ... | head -1` once
/// head exited): detourctl is ended by SIGPIPE, with nothing on stderr,
/// not a panic.
#[test]
fn a_closed_pipe_ends_it_quietly() {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two new descriptors into `fds`.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both are new descriptors owned here alone.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    let out = Command::new(DETOURCTL)
        .arg("genkey")
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
