//! Network namespaces, veth pairs, bpffs directories and processes for
//! detour's tests, each with a unique name and each removed on drop (so also
//! when a test panics).
//!
//! Names carry the creating process's pid (`dt-<pid>-<n>-<tag>`), so that a
//! test process that was killed before its destructors ran can be cleaned up
//! by the next one: [`Netns::new`] first removes namespaces whose creator is
//! gone. Tests that need this kit call [`require_root`] first; without root it
//! fails, it never skips (filter the tests out by name instead: every test
//! that uses the kit has a name that starts with `netns_`).
//!
//! ```no_run
//! use detour_testkit::{Netns, require_root};
//! require_root();
//! let a = Netns::new("a").unwrap();
//! let b = Netns::new("b").unwrap();
//! a.veth("eth0", &b, "eth0").unwrap();
//! a.ip(&["addr", "add", "10.0.0.1/24", "dev", "eth0"]).unwrap();
//! ```

pub mod classifier_cases;
pub mod ethtool;
pub mod frames;
pub mod machine;
pub mod packet;
pub mod topology;
pub mod wire;

pub use topology::{Family, Gateway};

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

use detour_common::wire::MacAddr;

const PREFIX: &str = "dt-";
const NETNS_DIR: &str = "/run/netns";
const BPFFS: &str = "/sys/fs/bpf";

static SEQUENCE: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// Panics with an explanation unless the process runs as root.
///
/// Privileged tests are never skipped silently: CI runs as root, and a
/// developer without root filters them out by name; their names start with
/// `netns_` (namespaces) or `bpf_` (loading programs).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test builds network namespaces or loads BPF programs and needs root \
         (euid is {euid}); \
         run scripts/test as root, as CI does, or leave these tests out with \
         `cargo test -- --skip netns_ --skip bpf_`"
    );
}

/// A unique name for something a test creates: `dt-<pid>-<n>-<tag>`.
pub fn unique_name(tag: &str) -> String {
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}-{n}-{tag}", std::process::id())
}

/// A path under /tmp with a kit-made name for a file a test's process
/// creates (a Unix socket, say), or a directory; either is removed, with
/// what is in it, when this drops.
#[derive(Debug)]
pub struct ScratchPath(PathBuf);

impl ScratchPath {
    pub fn new(tag: &str) -> ScratchPath {
        ScratchPath(std::env::temp_dir().join(unique_name(tag)))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchPath {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Runs a command to completion; a non-zero exit becomes an error that
/// carries the command line and what it printed.
pub fn run(cmd: &mut Command) -> io::Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {}: {e}", describe(cmd))))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{} failed ({}): {}{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim(),
        )));
    }
    Ok(out)
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// A network namespace, deleted on drop.
///
/// Interfaces inside it (veth ends included, with any XDP program attached to
/// them) go with it.
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// Whether dropping the handle deletes the namespace.
    owned: bool,
}

impl Netns {
    /// Creates `dt-<pid>-<n>-<tag>` with its loopback up.
    pub fn new(tag: &str) -> io::Result<Netns> {
        SWEEP.call_once(sweep_orphans);
        Netns::create(&unique_name(tag))
    }

    /// Creates the namespace `name`, exactly so named, with its loopback
    /// up; deleted on drop unless [`Netns::persist`] is called.
    pub fn create(name: &str) -> io::Result<Netns> {
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Netns {
            name: name.to_owned(),
            owned: true,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle on the existing namespace `name` that leaves it in place
    /// when it drops.
    pub fn existing(name: &str) -> Netns {
        Netns {
            name: name.to_owned(),
            owned: false,
        }
    }

    /// Leaves the namespace in place when this handle drops (a testbed that
    /// outlives the command that built it).
    pub fn persist(mut self) -> Netns {
        self.owned = false;
        self
    }

    /// Whether the namespace exists.
    pub fn exists(&self) -> bool {
        Path::new(NETNS_DIR).join(&self.name).exists()
    }

    /// The pids of the processes inside the namespace (`ip netns pids`).
    pub fn pids(&self) -> io::Result<Vec<u32>> {
        let out = run(Command::new("ip").args(["netns", "pids", &self.name]))?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect())
    }

    /// Deletes the namespace now (the handle's drop would).
    pub fn delete(mut self) -> io::Result<()> {
        self.owned = false;
        run(Command::new("ip").args(["netns", "del", &self.name])).map(drop)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> io::Result<Output> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs inside the namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs a command inside the namespace to completion.
    pub fn exec(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        run(self.command(program).args(args))
    }

    /// Sets a sysctl inside the namespace (`net.ipv6.conf.all.disable_ipv6`).
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")])
            .map(drop)
    }

    /// Turns IPv6 off, so that no router or neighbour solicitation, MLD
    /// report or DAD probe puts a frame on the namespace's links that the
    /// test did not send.
    pub fn quiet(&self) -> io::Result<()> {
        self.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        self.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
    }

    /// The MAC address of `iface`, as `ip` writes it.
    pub fn mac(&self, iface: &str) -> io::Result<String> {
        let out = self.exec("cat", &[&format!("/sys/class/net/{iface}/address")])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The MAC address of `iface`, parsed.
    pub fn mac_addr(&self, iface: &str) -> io::Result<MacAddr> {
        let text = self.mac(iface)?;
        parse_mac(&text)
            .ok_or_else(|| io::Error::other(format!("{iface}: no MAC address in {text:?}")))
    }

    /// A permanent neighbour entry: `addr` is at `mac` on `dev` (no ARP).
    pub fn static_neighbour(&self, dev: &str, addr: &str, mac: &str) -> io::Result<()> {
        self.ip(&[
            "neigh",
            "replace",
            addr,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])
        .map(drop)
    }

    /// `ip -d link show dev <iface>`: names the XDP program attached, if
    /// any ("prog/xdp id N name P", "xdpgeneric" in skb mode).
    pub fn link_details(&self, iface: &str) -> io::Result<String> {
        let out = self.ip(&["-d", "link", "show", "dev", iface])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether an XDP program is attached to `iface`.
    pub fn xdp_attached(&self, iface: &str) -> bool {
        self.link_details(iface)
            .is_ok_and(|d| d.contains("prog/xdp"))
    }

    /// Creates a veth pair: `name` here, `peer_name` in `peer`, both up.
    pub fn veth(&self, name: &str, peer: &Netns, peer_name: &str) -> io::Result<()> {
        self.veth_with_queues(name, peer, peer_name, 1)
    }

    /// [`Netns::veth`] with `queues` receive and transmit queues at each end.
    pub fn veth_with_queues(
        &self,
        name: &str,
        peer: &Netns,
        peer_name: &str,
        queues: u32,
    ) -> io::Result<()> {
        let q = queues.to_string();
        self.ip(&[
            "link",
            "add",
            "name",
            name,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            peer_name,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "netns",
            &peer.name,
        ])?;
        self.ip(&["link", "set", name, "up"])?;
        peer.ip(&["link", "set", peer_name, "up"])?;
        Ok(())
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it
    /// opens, interfaces it names and programs it attaches are the
    /// namespace's. The calling thread's namespace is untouched.
    pub fn enter<F, R>(&self, f: F) -> io::Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file = self.file()?;
        std::thread::scope(|s| {
            s.spawn(move || {
                join_namespace(&file)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Like [`Netns::enter`], for work that outlives the call (a daemon
    /// run in process): `f` runs on a new thread in this namespace, and so
    /// do the threads it starts. The namespace must outlive the thread.
    pub fn spawn<F, R>(&self, f: F) -> io::Result<std::thread::JoinHandle<R>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let file = self.file()?;
        let (entered, joined) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            if let Err(e) = join_namespace(&file) {
                let _ = entered.send(Err(e));
                // Ends the thread without running `f` in the wrong
                // namespace (and without the panic message: the caller
                // gets the error).
                std::panic::resume_unwind(Box::new("setns failed"));
            }
            let _ = entered.send(Ok(()));
            f()
        });
        joined.recv().map_err(io::Error::other)??;
        Ok(handle)
    }

    fn file(&self) -> io::Result<File> {
        File::open(Path::new(NETNS_DIR).join(&self.name))
    }
}

/// Moves the calling thread into the network namespace `file` is open on.
fn join_namespace(file: &File) -> io::Result<()> {
    // SAFETY: setns on a valid namespace fd; it changes only the namespace
    // of the calling thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("detour-testkit: cleanup: {e}");
        }
    }
}

/// A MAC address as `ip` and sysfs write it (`02:00:5e:10:00:01`),
/// surrounding whitespace ignored.
pub fn parse_mac(text: &str) -> Option<MacAddr> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(MacAddr(mac))
}

/// The file the network tests write what they measured to, in the target's
/// temporary directory (`CARGO_TARGET_TMPDIR`, which only tests see), for
/// `scripts/test` to print after the suite: cargo shows a passing test's
/// output only on request.
pub const REPORT_FILE: &str = "e2e-report.txt";

/// Prints a measurement, and appends it to [`REPORT_FILE`] in `tmpdir`.
pub fn report(tmpdir: &str, line: &str) {
    use std::io::Write;
    eprintln!("{line}");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(Path::new(tmpdir).join(REPORT_FILE))
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes;
/// returns whether it held.
pub fn eventually(timeout: std::time::Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Removes namespaces left by test processes that no longer exist. Runs once
/// per process before the first [`Netns::new`]; public for its own test.
pub fn sweep_orphans() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = creator_pid(&name)
            && !Path::new("/proc").join(pid.to_string()).exists()
        {
            let _ = run(Command::new("ip").args(["netns", "del", &name]));
        }
    }
}

/// The pid embedded in a kit-made name, if `name` is one.
fn creator_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// A field of a `/proc` status file (`/proc/PID/status`, or a thread's
/// `/proc/PID/task/TID/status`), its value trimmed: `VmRSS:` gives `"6000
/// kB"`, `CapEff:` a hexadecimal set. `None` when the process or thread has
/// ended, or the field is not there.
pub fn proc_status_field(status: &Path, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(status).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// The resident memory of process `pid`, kB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = PathBuf::from(format!("/proc/{pid}/status"));
    proc_status_field(&status, "VmRSS")?
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The (user, system) CPU time in a `/proc` stat file (`/proc/PID/stat`:
/// every thread of a process together; `/proc/PID/task/TID/stat`: one
/// thread), in ns. `None` when it has ended.
pub fn cpu_ns(stat: &Path) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(stat).ok()?;
    // Fields after the command name, which may hold spaces: utime is the
    // 14th field of the line, the 12th after ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: no arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ns = |v: &str| v.parse::<u64>().ok().map(|t| t * 1_000_000_000 / hz);
    Some((ns(f.get(11)?)?, ns(f.get(12)?)?))
}

/// A process started inside a namespace; killed and reaped on drop.
#[derive(Debug)]
pub struct Process {
    child: Child,
}

impl Process {
    /// Starts `cmd` (usually from [`Netns::command`]); it is killed when the
    /// returned guard drops.
    pub fn spawn(cmd: &mut Command) -> io::Result<Process> {
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("cannot start {}: {e}", describe(cmd)))
        })?;
        Ok(Process { child })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child itself, to wait for it, read its pipes or signal it.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A directory on the BPF filesystem for a test's pins, removed with
/// everything in it on drop.
#[derive(Debug)]
pub struct BpffsDir {
    path: PathBuf,
}

impl BpffsDir {
    pub fn new(tag: &str) -> io::Result<BpffsDir> {
        let path = Path::new(BPFFS).join(unique_name(tag));
        std::fs::create_dir(&path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot create {} ({e}); is bpffs mounted? scripts/setup mounts it",
                    path.display()
                ),
            )
        })?;
        Ok(BpffsDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BpffsDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("detour-testkit: cleanup of {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_pid_and_never_repeat() {
        let a = unique_name("x");
        let b = unique_name("x");
        assert_ne!(a, b);
        assert_eq!(creator_pid(&a), Some(std::process::id()));
    }

    #[test]
    fn macs_parse_as_ip_writes_them() {
        assert_eq!(
            parse_mac("02:00:5e:10:00:0a\n"),
            Some(MacAddr([2, 0, 0x5e, 0x10, 0, 10]))
        );
        assert_eq!(parse_mac("02:00:5e:10:00"), None);
        assert_eq!(parse_mac("02:00:5e:10:00:0a:01"), None);
        assert_eq!(parse_mac("02:00:5e:10:00:zz"), None);
    }

    #[test]
    fn foreign_names_are_not_ours_to_sweep() {
        assert_eq!(creator_pid("blue"), None);
        assert_eq!(creator_pid("dt-notapid-1-x"), None);
    }
}
