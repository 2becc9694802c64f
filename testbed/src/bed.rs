//! A running testbed: its namespaces, links, daemons and the simulated
//! Internet, built from a [`Topology`] and taken down again.
//!
//! ```text
//!   host h1 ── lan [node n1: detour-dataplane + detour-control] wan ──┐
//!   host h2 ── lan [node n2: ...] wan ───────────────────────── n1..nN [router r]
//!   ...                                                               │ delay (TAP)
//!                                                                   delay line
//! ```
//!
//! Everything is named from the testbed's prefix (`<prefix>-r`,
//! `<prefix>-n<id>`, `<prefix>-h<id>`), and its files (state, each node's key,
//! daemon configurations, API sockets, logs) live in its state directory,
//! so that [`down`] finds all of it again from the prefix alone, also after
//! the process that built it died.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use detour_common::api as dp;
use detour_control::api as cp;
use detour_control::keys::{PrivateKey, PublicKey};
use detour_testkit::Netns;
use serde::{Deserialize, Serialize};

use crate::internet::{self, DELAY_DEVICE, router_interface};
use crate::topology::{
    Impairment, Pair, Topology, host_address, lan_address, router_address, site_prefix, underlay,
};

/// How long a daemon may take to answer on its API socket once started.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a SIGTERM'd process may take before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a testbed lives and what it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Layout {
    /// The start of every namespace's name.
    pub prefix: String,
    /// The state directory: configurations, sockets, logs.
    pub dir: PathBuf,
    /// Where `detour-dataplane`, `detour-control`, `detourctl` and
    /// `detour-testbed` are.
    pub bin_dir: PathBuf,
}

/// One of a node's two daemons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    Dataplane,
    Control,
}

impl Daemon {
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Dataplane => "dataplane",
            Daemon::Control => "control",
        }
    }
}

/// What is kept in the state directory between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    layout: Layout,
    topology: Topology,
    /// Every pair's path as it is now.
    paths: Vec<(Pair, Impairment)>,
}

/// A testbed that is up.
#[derive(Debug)]
pub struct Testbed {
    layout: Layout,
    topology: Topology,
    paths: BTreeMap<Pair, Impairment>,
    /// Take everything down when this handle drops (tests); the command
    /// line's `up` leaves it running.
    down_on_drop: bool,
}

impl Layout {
    pub fn router(&self) -> Netns {
        Netns::existing(&format!("{}-r", self.prefix))
    }

    pub fn node(&self, id: u16) -> Netns {
        Netns::existing(&format!("{}-n{id}", self.prefix))
    }

    pub fn host(&self, id: u16) -> Netns {
        Netns::existing(&format!("{}-h{id}", self.prefix))
    }

    fn node_dir(&self, id: u16) -> PathBuf {
        self.dir.join(format!("n{id}"))
    }

    pub fn control_socket(&self, id: u16) -> PathBuf {
        self.node_dir(id).join("control.sock")
    }

    pub fn dataplane_socket(&self, id: u16) -> PathBuf {
        self.node_dir(id).join("dataplane.sock")
    }

    fn pid_file(&self, id: u16, daemon: Daemon) -> PathBuf {
        self.node_dir(id).join(format!("{}.pid", daemon.name()))
    }

    pub fn log_file(&self, id: u16, daemon: Daemon) -> PathBuf {
        self.node_dir(id).join(format!("{}.log", daemon.name()))
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn delays_file(&self) -> PathBuf {
        self.dir.join("delays")
    }

    fn delay_line_pid(&self) -> PathBuf {
        self.dir.join("delay-line.pid")
    }

    /// Every namespace of this testbed's prefix that exists.
    fn namespaces(&self) -> Vec<Netns> {
        let mut found = Vec::new();
        if let Ok(entries) = std::fs::read_dir("/run/netns") {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(rest) = name.strip_prefix(&format!("{}-", self.prefix))
                    && (rest == "r" || is_member(rest))
                {
                    found.push(Netns::existing(&name));
                }
            }
        }
        found
    }
}

/// `n<id>` or `h<id>`.
fn is_member(rest: &str) -> bool {
    (rest.starts_with('n') || rest.starts_with('h')) && rest[1..].parse::<u16>().is_ok()
}

impl Testbed {
    /// Builds the testbed and starts both daemons on every node; returns
    /// once every control process has settled and installed its routes.
    pub fn up(topology: Topology, layout: Layout) -> anyhow::Result<Testbed> {
        topology.check()?;
        if layout.router().exists() || layout.state_file().exists() {
            bail!(
                "a testbed named {} is already up; take it down first (scripts/testbed down)",
                layout.prefix
            );
        }
        let paths = topology.impairments();
        let mut bed = Testbed {
            layout,
            topology,
            paths,
            down_on_drop: true,
        };
        // Whatever fails from here on, nothing stays behind.
        bed.build().context("building the testbed")?;
        bed.start_all()?;
        Ok(bed)
    }

    /// The testbed whose state directory is `dir` (`scripts/testbed`'s
    /// later commands).
    pub fn open(dir: &Path) -> anyhow::Result<Testbed> {
        let file = dir.join("state.json");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("no testbed is up here ({} is missing)", file.display()))?;
        let state: State = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a testbed's state", file.display()))?;
        Ok(Testbed {
            layout: state.layout,
            topology: state.topology,
            paths: state.paths.into_iter().collect(),
            down_on_drop: false,
        })
    }

    /// Leaves the testbed up when this handle drops.
    pub fn keep(mut self) -> Self {
        self.down_on_drop = false;
        self
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn path(&self, a: u16, b: u16) -> Option<Impairment> {
        self.paths.get(&Pair::new(a, b)).copied()
    }

    fn build(&mut self) -> anyhow::Result<()> {
        let l = &self.layout;
        std::fs::create_dir_all(&l.dir)
            .with_context(|| format!("cannot create {}", l.dir.display()))?;
        std::fs::set_permissions(&l.dir, std::fs::Permissions::from_mode(0o700))?;
        let router = Netns::create(l.router().name())?.persist();
        router.quiet()?;
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ] {
            router.sysctl(key, value)?;
        }
        for spec in &self.topology.nodes {
            let id = spec.id;
            std::fs::create_dir_all(l.node_dir(id))?;
            let node = Netns::create(l.node(id).name())?.persist();
            node.quiet()?;
            node.veth("wan", &router, &router_interface(id))?;
            node.ip(&["addr", "add", &format!("{}/24", underlay(id)), "dev", "wan"])?;
            node.ip(&[
                "route",
                "add",
                "default",
                "via",
                &router_address(id).to_string(),
            ])?;
            router.ip(&[
                "addr",
                "add",
                &format!("{}/24", router_address(id)),
                "dev",
                &router_interface(id),
            ])?;
            if spec.site {
                let host = Netns::create(l.host(id).name())?.persist();
                host.quiet()?;
                node.veth("lan", &host, "eth0")?;
                node.ip(&[
                    "addr",
                    "add",
                    &format!("{}/24", lan_address(id)),
                    "dev",
                    "lan",
                ])?;
                host.ip(&[
                    "addr",
                    "add",
                    &format!("{}/24", host_address(id)),
                    "dev",
                    "eth0",
                ])?;
                host.ip(&[
                    "route",
                    "add",
                    "default",
                    "via",
                    &lan_address(id).to_string(),
                ])?;
                // A wire carries finished checksums; a veth hands on
                // packets whose UDP checksum the receiving kernel was to
                // fill in, which the dataplane forwards as they are.
                host.enter(|| detour_testkit::ethtool::set_tx_checksum("eth0", false))??;
            }
            write_new_key(&l.node_dir(id).join(PRIVATE_KEY))?;
            if spec.wrong_key {
                write_new_key(&l.node_dir(id).join(LISTED_KEY))?;
            }
        }
        for id in self.topology.ids() {
            std::fs::write(
                l.node_dir(id).join("control.toml"),
                self.control_config(id)?,
            )?;
        }
        self.save()?;
        std::fs::write(l.delays_file(), internet::delays(&self.paths))?;
        self.start_delay_line()?;
        self.apply_rules()
    }

    /// The public key the other nodes list node `id` under: its own, or
    /// for a node with the wrong key one whose private half it lacks.
    fn listed_public_key(&self, id: u16) -> anyhow::Result<PublicKey> {
        let dir = self.layout.node_dir(id);
        let listed = dir.join(LISTED_KEY);
        let file = if listed.exists() {
            listed
        } else {
            dir.join(PRIVATE_KEY)
        };
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        Ok(PrivateKey::from_base64(&text)
            .with_context(|| format!("{}", file.display()))?
            .public_key())
    }

    /// The control process's configuration for node `id`.
    fn control_config(&self, id: u16) -> anyhow::Result<String> {
        let l = &self.layout;
        let spec = self.topology.node(id).expect("a node of the topology");
        let prefixes = |id: u16| {
            if self.topology.node(id).is_some_and(|n| n.site) {
                format!("[{:?}]", site_prefix(id))
            } else {
                "[]".to_owned()
            }
        };
        let mut s = format!(
            "# Written by detour-testbed for node {id}.\nnode_id = {id}\nprivate_key_file = \"{PRIVATE_KEY}\"\n\
             underlay = \"{}\"\nprefixes = {}\n",
            underlay(id),
            prefixes(id)
        );
        if let Some(encryption) = &spec.encryption {
            s += &format!("encryption = {encryption:?}\n");
        }
        for peer in self.topology.ids().filter(|&p| p != id) {
            s += &format!(
                "\n[[peers]]\nid = {peer}\npublic_key = \"{}\"\nunderlay = \"{}\"\nprefixes = {}\n",
                self.listed_public_key(peer)?,
                underlay(peer),
                prefixes(peer)
            );
        }
        s += &format!(
            "\n[routing]\ndrained = {}\n\n[dataplane]\nsocket = {:?}\n\n[api]\nsocket = {:?}\n",
            spec.drained,
            l.dataplane_socket(id),
            l.control_socket(id)
        );
        if let Some(rekey) = spec.rekey_after_s {
            s += &format!("\n[session]\nrekey_after_s = {rekey}\n");
        }
        Ok(s)
    }

    fn start_delay_line(&self) -> anyhow::Result<()> {
        let l = &self.layout;
        let log = l.dir.join("delay-line.log");
        let mut cmd = l.router().command(l.bin_dir.join("detour-testbed"));
        cmd.arg("delay-line").arg(l.delays_file());
        let pid = spawn_detached(&mut cmd, &log)?;
        std::fs::write(l.delay_line_pid(), pid.to_string())?;
        let router = l.router();
        let up = detour_testkit::eventually(START_TIMEOUT, || {
            router.link_details(DELAY_DEVICE).is_ok() || !alive(pid)
        });
        if !up || !alive(pid) {
            bail!("the delay line did not start: {}", tail(&log));
        }
        Ok(())
    }

    /// Loads the router's rules for the paths as they are now.
    fn apply_rules(&self) -> anyhow::Result<()> {
        let ids: Vec<u16> = self.topology.ids().collect();
        let file = self.layout.dir.join("router.nft");
        std::fs::write(&file, internet::ruleset(&ids, &self.paths))?;
        self.layout
            .router()
            .exec("nft", &["-f", &file.to_string_lossy()])
            .context("loading the router's nftables rules")?;
        Ok(())
    }

    fn save(&self) -> anyhow::Result<()> {
        let state = State {
            layout: self.layout.clone(),
            topology: self.topology.clone(),
            paths: self.paths.iter().map(|(p, i)| (*p, *i)).collect(),
        };
        let file = self.layout.state_file();
        std::fs::write(&file, serde_json::to_string_pretty(&state)?)
            .with_context(|| format!("cannot write {}", file.display()))
    }

    /// Changes the path between `a` and `b`, both ways, at once.
    pub fn set_path(&mut self, a: u16, b: u16, path: Impairment) -> anyhow::Result<()> {
        path.check()?;
        let pair = Pair::new(a, b);
        if a == b || !self.paths.contains_key(&pair) {
            bail!("there is no path between {a} and {b}");
        }
        let before = self.paths.insert(pair, path);
        std::fs::write(self.layout.delays_file(), internet::delays(&self.paths))?;
        // The delay line learns new delays before the rules send it more.
        if before.map(|p| p.delay_ms) != Some(path.delay_ms) {
            let pid = read_pid(&self.layout.delay_line_pid())?;
            signal(pid, libc::SIGHUP)?;
            std::thread::sleep(Duration::from_millis(20));
        }
        self.apply_rules()?;
        self.save()
    }

    /// Drops everything between `a` and `b`.
    pub fn cut(&mut self, a: u16, b: u16) -> anyhow::Result<()> {
        let mut path = self.path(a, b).context("no such path")?;
        path.cut = true;
        self.set_path(a, b, path)
    }

    /// Undoes [`Self::cut`].
    pub fn restore(&mut self, a: u16, b: u16) -> anyhow::Result<()> {
        let mut path = self.path(a, b).context("no such path")?;
        path.cut = false;
        self.set_path(a, b, path)
    }

    fn start_all(&self) -> anyhow::Result<()> {
        for id in self.topology.ids() {
            self.start_daemon(id, Daemon::Dataplane)?;
        }
        for id in self.topology.ids() {
            self.start_daemon(id, Daemon::Control)?;
        }
        for id in self.topology.ids() {
            self.wait_ready(id, Daemon::Dataplane)?;
        }
        for id in self.topology.ids() {
            self.wait_ready(id, Daemon::Control)?;
        }
        Ok(())
    }

    /// Starts one daemon of node `id` (it must not be running); see
    /// [`Self::wait_ready`].
    pub fn start_daemon(&self, id: u16, daemon: Daemon) -> anyhow::Result<()> {
        let l = &self.layout;
        let spec = self.topology.node(id).context("no such node")?;
        if self.pid(id, daemon).is_some() {
            bail!("node {id}'s {} is running", daemon.name());
        }
        let mut cmd = l
            .node(id)
            .command(l.bin_dir.join(format!("detour-{}", daemon.name())));
        match daemon {
            Daemon::Dataplane => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                cmd.args(["--node-id", &id.to_string(), "--wan", "wan"]);
                if spec.site {
                    cmd.args(["--lan", "lan"]);
                }
                cmd.arg("--api-socket").arg(l.dataplane_socket(id));
                // Spread the nodes' workers over the cores.
                cmd.args(["--cores", &(usize::from(id) % cores).to_string()]);
            }
            Daemon::Control => {
                cmd.arg("-c").arg(l.node_dir(id).join("control.toml"));
            }
        }
        cmd.env(
            "DETOUR_LOG",
            std::env::var("DETOUR_LOG").unwrap_or("info".into()),
        );
        let pid = spawn_detached(&mut cmd, &l.log_file(id, daemon))?;
        std::fs::write(l.pid_file(id, daemon), pid.to_string())?;
        Ok(())
    }

    /// Waits until node `id`'s daemon answers: the dataplane its health,
    /// the control process with routes settled and installed.
    pub fn wait_ready(&self, id: u16, daemon: Daemon) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let Some(pid) = self.pid(id, daemon) else {
                bail!(
                    "node {id}'s {} exited: {}",
                    daemon.name(),
                    tail(&self.layout.log_file(id, daemon))
                );
            };
            let ready = match daemon {
                Daemon::Dataplane => self.dataplane(id).and_then(|mut c| Ok(c.health()?)).is_ok(),
                Daemon::Control => self.control_status(id).is_ok_and(|s| {
                    s.settled && s.dataplane.is_none_or(|d| d.installed_version.is_some())
                }),
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "node {id}'s {} (pid {pid}) is not ready after {} s: {}",
                    daemon.name(),
                    START_TIMEOUT.as_secs(),
                    tail(&self.layout.log_file(id, daemon))
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops one daemon with SIGTERM (SIGKILL after 5 s), or with SIGKILL
    /// at once.
    pub fn stop_daemon(&self, id: u16, daemon: Daemon, kill: bool) -> anyhow::Result<()> {
        let file = self.layout.pid_file(id, daemon);
        if let Some(pid) = self.pid(id, daemon) {
            terminate(pid, if kill { libc::SIGKILL } else { libc::SIGTERM });
        }
        let _ = std::fs::remove_file(file);
        Ok(())
    }

    /// The pid of node `id`'s daemon, if it runs.
    pub fn pid(&self, id: u16, daemon: Daemon) -> Option<u32> {
        read_pid(&self.layout.pid_file(id, daemon))
            .ok()
            .filter(|&pid| alive(pid))
    }

    /// A client of node `id`'s control API.
    pub fn control(&self, id: u16) -> anyhow::Result<cp::Client> {
        let path = self.layout.control_socket(id);
        cp::Client::connect(&path).with_context(|| format!("node {id}'s control process"))
    }

    pub fn control_status(&self, id: u16) -> anyhow::Result<cp::Status> {
        match self.control(id)?.request(&cp::Request::Status)? {
            cp::Response::Status(s) => Ok(*s),
            other => bail!("node {id}: unexpected answer {other:?}"),
        }
    }

    pub fn control_paths(&self, id: u16) -> anyhow::Result<cp::PathsView> {
        match self.control(id)?.request(&cp::Request::Paths)? {
            cp::Response::Paths(p) => Ok(p),
            other => bail!("node {id}: unexpected answer {other:?}"),
        }
    }

    /// Node `id`'s route to `dst` as its control process has it: `"direct"`,
    /// `"via 3"`, or `None` (unreachable).
    pub fn route(&self, id: u16, dst: u16) -> anyhow::Result<Option<String>> {
        let paths = self.control_paths(id)?;
        Ok(paths
            .routes
            .into_iter()
            .find(|r| r.dst.0 == dst)
            .and_then(|r| r.path))
    }

    /// A client of node `id`'s dataplane API.
    pub fn dataplane(&self, id: u16) -> anyhow::Result<dp::Client> {
        let path = self.layout.dataplane_socket(id);
        dp::Client::connect(&path).with_context(|| format!("node {id}'s dataplane"))
    }

    pub fn dataplane_stats(&self, id: u16) -> anyhow::Result<dp::Stats> {
        Ok(self.dataplane(id)?.stats()?)
    }

    /// Runs `detourctl ARGS` against node `id`'s daemons.
    pub fn detourctl(&self, id: u16, args: &[&str]) -> anyhow::Result<Output> {
        let l = &self.layout;
        Command::new(l.bin_dir.join("detourctl"))
            .arg("--control-socket")
            .arg(l.control_socket(id))
            .arg("--dataplane-socket")
            .arg(l.dataplane_socket(id))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("cannot run detourctl")
    }

    /// What `scripts/testbed status` prints.
    pub fn status(&self) -> String {
        let l = &self.layout;
        let mut s = format!("testbed {} (state in {})\n", l.prefix, l.dir.display());
        let delay_line = read_pid(&l.delay_line_pid()).ok().filter(|&p| alive(p));
        s += &format!(
            "router {}: delay line {}\n",
            l.router().name(),
            delay_line.map_or("NOT RUNNING".to_owned(), |p| format!("pid {p}"))
        );
        for id in self.topology.ids() {
            let daemon = |d: Daemon| {
                self.pid(id, d)
                    .map_or("DOWN".to_owned(), |p| format!("pid {p}"))
            };
            let summary = match self.control_status(id) {
                Ok(st) => format!(
                    "{}/{} peers up, {} direct, {} relayed, {} unreachable{}",
                    st.peers_up,
                    st.peers,
                    st.routes_direct,
                    st.routes_relayed,
                    st.unreachable,
                    if st.drained { ", drained" } else { "" }
                ),
                Err(_) => "no answer".to_owned(),
            };
            s += &format!(
                "node {id} ({}, underlay {}{}): dataplane {}, control {}: {summary}\n",
                l.node(id).name(),
                underlay(id),
                if self.topology.node(id).is_some_and(|n| n.site) {
                    format!(", site {} host {}", site_prefix(id), host_address(id))
                } else {
                    ", relay only".to_owned()
                },
                daemon(Daemon::Dataplane),
                daemon(Daemon::Control),
            );
        }
        s += "paths (one-way delay, loss, cut):\n";
        for (pair, p) in &self.paths {
            s += &format!(
                "  {pair}: {} ms, {} %{}\n",
                p.delay_ms,
                p.loss_percent,
                if p.cut { ", CUT" } else { "" }
            );
        }
        s
    }

    /// Takes everything down; see [`down`].
    pub fn down(mut self) -> anyhow::Result<()> {
        self.down_on_drop = false;
        down(&self.layout)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if self.down_on_drop
            && let Err(e) = down(&self.layout)
        {
            eprintln!("detour-testbed: taking {} down: {e:#}", self.layout.prefix);
        }
    }
}

/// Takes the testbed with this layout down, whatever state it is in: stops
/// every process in its namespaces, deletes the namespaces (and with them
/// every link, XDP program and rule) and the state directory. Doing it
/// twice, or for a testbed half built, is fine.
pub fn down(layout: &Layout) -> anyhow::Result<()> {
    let namespaces = layout.namespaces();
    // The processes first: a namespace with a process in it lives on
    // after `ip netns del`. Only processes inside this testbed's own
    // namespaces are stopped.
    let mut pids = Vec::new();
    for ns in &namespaces {
        pids.extend(ns.pids().unwrap_or_default());
    }
    for &pid in &pids {
        signal(pid, libc::SIGTERM).ok();
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &pid in pids.iter().filter(|&&p| alive(p)) {
        terminate(pid, libc::SIGKILL);
    }
    let mut failed = Vec::new();
    // Nodes and hosts before the router, whose links they hold.
    for ns in namespaces.into_iter().rev() {
        let name = ns.name().to_owned();
        if let Err(e) = ns.delete() {
            failed.push(format!("{name}: {e}"));
        }
    }
    if layout.dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&layout.dir)
    {
        failed.push(format!("{}: {e}", layout.dir.display()));
    }
    if !failed.is_empty() {
        bail!("could not remove {}", failed.join("; "));
    }
    Ok(())
}

/// Starts `cmd` in a process group of its own (so that the terminal's
/// Ctrl-C reaches the demo, which stops it in order, not the daemon
/// directly), its output appended to `log`.
fn spawn_detached(cmd: &mut Command, log: &Path) -> anyhow::Result<u32> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    Ok(child.id())
}

fn read_pid(file: &Path) -> anyhow::Result<u32> {
    let text = std::fs::read_to_string(file)?;
    Ok(text.trim().parse()?)
}

/// Whether process `pid` still runs. A child of ours is gone only once
/// reaped (which this does): a multi-threaded child whose main thread has
/// exited shows as a zombie while its other threads are still exiting, and
/// cannot be reaped before they are (a test saw one left after `down`, on a
/// loaded machine). Another's process is gone once it is a zombie.
fn alive(pid: u32) -> bool {
    // SAFETY: waitpid with WNOHANG on a pid; a process that is not our
    // child just gives ECHILD.
    match unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) } {
        0 => true,
        r if r == pid as libc::pid_t => false,
        _ => std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        }),
    }
}

fn signal(pid: u32, signal: libc::c_int) -> anyhow::Result<()> {
    // SAFETY: kill has no memory effects.
    if unsafe { libc::kill(pid as libc::pid_t, signal) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("kill {pid}"));
    }
    Ok(())
}

/// Sends `sig` and waits for the process to go (SIGKILL after 5 s).
fn terminate(pid: u32, sig: libc::c_int) {
    if signal(pid, sig).is_err() {
        return;
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while alive(pid) {
        if Instant::now() > deadline {
            let _ = signal(pid, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The last lines a daemon wrote, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    let lines: Vec<&str> = lines.into_iter().rev().collect();
    format!("{} says: {}", log.display(), lines.join(" | "))
}

/// A node's private key, in its directory.
const PRIVATE_KEY: &str = "private.key";
/// For a node with the wrong key: the key whose public half the others
/// list it under, which it does not use.
const LISTED_KEY: &str = "listed.key";

/// Writes a new private key to `path`, which only its owner may read.
fn write_new_key(path: &Path) -> anyhow::Result<()> {
    let key = PrivateKey::generate().context("no random numbers from the OS")?;
    write_secret(path, &key.to_base64())
}

/// Writes a file only its owner may read, as a key file must be.
fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}
