//! The dataplane process from start to stop: classifier attached, one
//! pinned worker per queue, route installs and neighbour refreshes, the
//! local API, and a shutdown that loses nothing it already took.
//!
//! Start-up goes in an order that never leaves a half-configured
//! dataplane: every socket is opened before any is registered in the
//! classifier's XSKMAPs, and any error before the workers run undoes what
//! was done (the values drop: sockets closed, programs detached). Shutdown
//! runs the other way: sockets unregistered (their frames go to the kernel
//! or are dropped, by the no-socket policy), workers stopped after sending
//! what they took, programs detached.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwapOption;
use detour_common::api::InterfaceHealth;
use detour_common::maps::XdpConfig;

use crate::api::{State, WorkerView};
use crate::config::{Config, ZeroCopy};
use crate::doorbell::Doorbell;
use crate::icmp::IcmpSource;
use crate::neigh::{self, NetlinkSurvey};
use crate::resolve::HostResolver;
use crate::routes::Installer;
use crate::table::Links;
use crate::watch::{Changes, KernelWatch};
use crate::worker::{SharedTable, Worker, WorkerConfig};
use crate::xdp::{Classifier, Role};
use crate::xsk::{BindMode, wait_readable};
use detour_common::local_socket::Server;
use detour_common::privileges::{self, Capability};

/// What the dataplane keeps once started (docs/security.md): BPF map
/// updates for route installs and the sockets' map, netlink neighbour
/// requests and the detach at the end.
const STEADY_CAPABILITIES: [Capability; 2] = [Capability::NetAdmin, Capability::Bpf];

/// How often the neighbours behind the installed routes are looked at
/// again although the kernel announced no change: to solicit the underlay
/// next hops still unresolved again, and to retire keys past their grace.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// How long the daemon waits at most for a worker's doorbell or a kernel
/// announcement before it looks at the stop flag and the clock again.
const TICK: Duration = Duration::from_millis(50);

/// Announcements closer together than this are taken in one look: a LAN of
/// many hosts churns its neighbour entries, and each look is a few netlink
/// requests per node and a dump of the LAN's neighbours.
const COALESCE_FOR: Duration = Duration::from_millis(5);

/// Runs the dataplane until `stop` is set (by a signal handler).
pub fn run(config: &Config, stop: &AtomicBool) -> anyhow::Result<()> {
    // First, so that a second dataplane on the same socket stops before it
    // touches the interfaces the first one holds.
    let server = Server::bind(&config.api.socket, "dataplane")?;
    let xdp = XdpConfig::new(config.overlay.port, config.xdp.no_socket);
    // Before anything is attached: an interface that is not Ethernet (wg0,
    // ppp0, a tun) is refused with the reason. One that does not exist is
    // left to the attach, which says so.
    for iface in std::iter::once(&config.wan).chain(&config.lan) {
        if let Ok(index) = crate::xdp::iface::ifindex(iface) {
            neigh::link(index).with_context(|| format!("{iface} cannot carry the overlay"))?;
        }
    }
    let mut classifier = Classifier::load(xdp)?;
    let (mode, replace) = (config.xdp.mode, config.xdp.replace);
    let wan = classifier.attach(Role::Wan, &config.wan, mode, replace)?;
    let lan = match &config.lan {
        Some(lan) => Some(classifier.attach(Role::Lan, lan, mode, replace)?),
        None => None,
    };

    let ifindexes = (wan.ifindex, lan.as_ref().map(|l| l.ifindex));
    // Subscribed before the links are read, so that no change after the
    // read goes unannounced.
    let mut watch = KernelWatch::open(ifindexes.0, ifindexes.1)
        .context("subscribing to the kernel's neighbour and link announcements")?;
    let links = read_links(config, ifindexes)?;
    let doorbell = Arc::new(Doorbell::new().context("creating the workers' doorbell")?);
    let icmp_source = match &lan {
        Some(l) => {
            let (v4, v6) = neigh::interface_addrs(l.ifindex)?;
            IcmpSource { v4, v6 }
        }
        None => IcmpSource::default(),
    };

    let table: SharedTable = Arc::new(ArcSwapOption::empty());
    let cores = worker_cores(config);
    let mut workers = Vec::new();
    for (&queue, &core) in config.afxdp.queues.iter().zip(&cores) {
        let worker_config = WorkerConfig {
            queue,
            core,
            batch_size: config.afxdp.batch_size,
            ring_size: config.afxdp.ring_size,
            frame_size: config.afxdp.frame_size,
            frame_count: config.afxdp.frame_count,
            zero_copy: match config.afxdp.zero_copy {
                ZeroCopy::Auto => None,
                ZeroCopy::On => Some(true),
                ZeroCopy::Off => Some(false),
            },
            busy_poll: config.afxdp.busy_poll,
            icmp_source,
            icmp_rate: config.icmp.rate(),
            hold: config.neighbours.limits(),
            doorbell: Some(Arc::clone(&doorbell)),
        };
        let worker = Worker::open(
            &config.wan,
            config.lan.as_deref(),
            worker_config,
            Arc::clone(&table),
        )?;
        let (_, wan_mode) = worker.wan_socket();
        tracing::info!(iface = %config.wan, queue, mode = mode_name(wan_mode), core, "AF_XDP socket open");
        if let (Some(lan), Some((_, lan_mode))) = (&config.lan, worker.lan_socket()) {
            tracing::info!(iface = %lan, queue, mode = mode_name(lan_mode), core, "AF_XDP socket open");
        }
        workers.push(worker);
    }
    for (worker, &queue) in workers.iter().zip(&config.afxdp.queues) {
        classifier.register_socket(Role::Wan, queue, worker.wan_socket().0)?;
        if let Some((fd, _)) = worker.lan_socket() {
            classifier.register_socket(Role::Lan, queue, fd)?;
        }
    }

    let mut interfaces = vec![InterfaceHealth {
        name: wan.iface.clone(),
        role: "wan".into(),
        xdp_mode: wan.mode.to_string(),
        afxdp_mode: socket_modes(workers.iter().map(|w| w.wan_socket().1)),
    }];
    if let Some(lan) = &lan {
        interfaces.push(InterfaceHealth {
            name: lan.iface.clone(),
            role: "lan".into(),
            xdp_mode: lan.mode.to_string(),
            afxdp_mode: socket_modes(workers.iter().filter_map(|w| w.lan_socket()).map(|s| s.1)),
        });
    }
    let mut resolver = HostResolver::new(
        std::iter::once(wan.ifindex)
            .chain(lan.as_ref().map(|l| l.ifindex))
            .collect(),
        workers.iter().map(Worker::unresolved_hosts).collect(),
    );
    let survey = NetlinkSurvey::new(wan.ifindex, lan.as_ref().map(|l| l.ifindex));
    let installer = Installer::new(
        links,
        Arc::clone(&table),
        Some(classifier),
        Box::new(survey),
    );
    let running = Arc::new(AtomicUsize::new(0));
    let state = Arc::new(State {
        node_id: config.node_id,
        started: Instant::now(),
        installer: Mutex::new(installer),
        workers: workers
            .iter()
            .zip(config.afxdp.queues.iter().zip(&cores))
            .map(|(w, (&queue, &core))| WorkerView {
                queue,
                core,
                published: w.published(),
            })
            .collect(),
        running: Arc::clone(&running),
        interfaces,
    });
    let metrics_listener = config
        .metrics
        .listen
        .map(|listen| {
            detour_common::metrics::bind(listen)
                .with_context(|| format!("serving metrics on {listen}"))
        })
        .transpose()?;
    // The programs are attached and the sockets open: from here on, only
    // route installs (BPF map updates), neighbour solicitations and the
    // detach at the end need a capability. Before any thread starts, so
    // that none has more (the workers give up even these).
    let kept = privileges::keep_only(&STEADY_CAPABILITIES).context("giving up capabilities")?;
    tracing::debug!(capabilities = kept, "capabilities given up");
    server.spawn(Arc::clone(&state))?;
    if let Some(listener) = metrics_listener {
        let metrics = Arc::clone(&state);
        let bound =
            detour_common::metrics::serve(listener, move || crate::metrics::render(&metrics))?;
        tracing::info!(%bound, "metrics");
    }

    let workers_stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<JoinHandle<()>> = workers
        .into_iter()
        .zip(&config.afxdp.queues)
        .map(|(worker, queue)| {
            let stop = Arc::clone(&workers_stop);
            let running = RunningGuard::enter(Arc::clone(&running));
            std::thread::Builder::new()
                .name(format!("worker-q{queue}"))
                .spawn(move || {
                    let _running = running;
                    worker.run(&stop);
                })
        })
        .collect::<Result<_, _>>()?;
    tracing::info!(
        node = config.node_id.0,
        api = %server.path().display(),
        workers = handles.len(),
        "forwarding; waiting for a route snapshot; SIGINT or SIGTERM stops"
    );

    let mut next_refresh = Instant::now() + REFRESH_EVERY;
    let mut last_refresh = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let wait = next_refresh
            .saturating_duration_since(Instant::now())
            .min(TICK);
        // An error (EINTR) only ends the wait early.
        let _ = wait_readable(&[doorbell.fd(), watch.fd()], wait.as_millis() as i32);
        doorbell.answer();
        let now = Instant::now();
        // A LAN host solicited now is likely resolved by the time given:
        // refresh early then (the kernel's announcement of the answer
        // usually comes first).
        if let Some(at) = resolver.poll(now) {
            next_refresh = next_refresh.min(at);
        }
        let changes = watch.changes().unwrap_or_else(|e| {
            tracing::warn!("reading the kernel's announcements: {e}");
            Changes::ALL
        });
        let mut installer = state.installer.lock().unwrap_or_else(|e| e.into_inner());
        if changes.links {
            relink(&mut installer, config, ifindexes);
        }
        if changes.any() {
            next_refresh = next_refresh.min(last_refresh + COALESCE_FOR);
        }
        if now >= next_refresh {
            last_refresh = now;
            next_refresh = now + REFRESH_EVERY;
            match installer.refresh() {
                Ok(true) => tracing::debug!(?changes, "neighbours changed; route table recompiled"),
                Ok(false) => {}
                Err(e) => tracing::warn!("recompiling the route table: {e}"),
            }
        }
    }

    tracing::info!("stopping: unregistering sockets, draining workers");
    {
        let mut installer = state.installer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(classifier) = installer.classifier_mut() {
            for &queue in &config.afxdp.queues {
                let _ = classifier.unregister_socket(Role::Wan, queue);
                if config.lan.is_some() {
                    let _ = classifier.unregister_socket(Role::Lan, queue);
                }
            }
        }
    }
    workers_stop.store(true, Ordering::Relaxed);
    for handle in handles {
        let _ = handle.join();
    }
    let stats = state.stats();
    tracing::info!(
        received = stats.total.received,
        forwarded = stats.total.forwarded(),
        answered = stats.total.answered,
        dropped = ?stats.total.dropped,
        "workers stopped"
    );
    drop(server);
    // The classifier (inside the installer) detaches when the state drops;
    // the API threads may still hold it, so detach explicitly.
    let mut installer = state.installer.lock().unwrap_or_else(|e| e.into_inner());
    drop(installer.take_classifier());
    tracing::info!("XDP programs detached");
    Ok(())
}

/// What the route table needs of the WAN and LAN interfaces, read from the
/// kernel, with the overlay's settings.
fn read_links(config: &Config, (wan, lan): (u32, Option<u32>)) -> anyhow::Result<Links> {
    let wan_link = neigh::link(wan).with_context(|| format!("reading {}", config.wan))?;
    let lan_link = match (lan, &config.lan) {
        (Some(index), Some(name)) => {
            Some(neigh::link(index).with_context(|| format!("reading {name}"))?)
        }
        _ => None,
    };
    for (name, link) in
        std::iter::once((&config.wan, &wan_link)).chain(config.lan.iter().zip(&lan_link))
    {
        if !link.carrier {
            tracing::warn!(iface = %name, "no carrier");
        }
    }
    Ok(Links {
        wan_mac: wan_link.mac,
        lan_mac: lan_link.as_ref().map(|l| l.mac),
        wan_mtu: wan_link.mtu.min(u32::from(u16::MAX)) as u16,
        overlay_port: config.overlay.port,
        vni: config.overlay.vni,
        hop_limit: config.overlay.hop_limit,
        outer_ttl: config.overlay.outer_ttl,
    })
}

/// The kernel announced a change to the WAN or LAN interface: the table
/// takes the new MTU and MAC addresses.
fn relink(installer: &mut Installer, config: &Config, interfaces: (u32, Option<u32>)) {
    let links = match read_links(config, interfaces) {
        Ok(links) => links,
        Err(e) => {
            tracing::warn!("{e:#}");
            return;
        }
    };
    let old = *installer.links();
    match installer.set_links(links) {
        Ok(true) => tracing::info!(
            wan_mtu = links.wan_mtu,
            old_wan_mtu = old.wan_mtu,
            "interfaces changed; route table recompiled"
        ),
        Ok(false) => {}
        Err(e) => tracing::warn!("recompiling the route table for the new links: {e}"),
    }
}

/// Counts a worker as running from its start until its thread ends, even
/// by a panic, so that health never reports a dead worker as running.
struct RunningGuard(Arc<AtomicUsize>);

impl RunningGuard {
    fn enter(count: Arc<AtomicUsize>) -> RunningGuard {
        count.fetch_add(1, Ordering::Relaxed);
        RunningGuard(count)
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The core of each queue's worker: as configured, or chosen from the
/// cores the process may run on (its affinity mask), the last first, so
/// that the first cores (where the kernel's receive work and most
/// interrupts land first) feed the workers rather than share with them.
/// With fewer cores than workers, cores are shared.
fn worker_cores(config: &Config) -> Vec<Option<usize>> {
    if !config.afxdp.cores.is_empty() {
        return config.afxdp.cores.iter().map(|c| Some(*c)).collect();
    }
    pick_cores(&crate::config::usable_cores(), config.afxdp.queues.len())
}

/// `workers` cores from `usable`, the last first, round robin.
fn pick_cores(usable: &[usize], workers: usize) -> Vec<Option<usize>> {
    (0..workers)
        .map(|i| usable.iter().rev().nth(i % usable.len().max(1)).copied())
        .collect()
}

fn mode_name(mode: BindMode) -> &'static str {
    match mode {
        BindMode::ZeroCopy => "zero-copy",
        BindMode::Copy => "copy",
    }
}

fn socket_modes(modes: impl Iterator<Item = BindMode>) -> String {
    let mut names: Vec<&str> = modes.map(mode_name).collect();
    names.dedup();
    names.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_take_the_last_usable_cores_first_and_share_when_short() {
        // An affinity of 2, 3, 6 and 7 (isolcpus, CPUAffinity=).
        let usable = [2, 3, 6, 7];
        let picked = |n| pick_cores(&usable, n);
        assert_eq!(picked(2), [Some(7), Some(6)]);
        assert_eq!(picked(5), [Some(7), Some(6), Some(3), Some(2), Some(7)]);
        assert_eq!(pick_cores(&[], 1), [None], "no core known: unpinned");
    }
}
