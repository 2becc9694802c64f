//! `detour-dataplane`: reads its configuration and runs the dataplane
//! ([`detour_dataplane::daemon`]) until SIGINT or SIGTERM. If it is killed
//! outright, the kernel detaches its XDP programs and closes its sockets.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use detour_common::maps::NoSocket;
use detour_dataplane::config::{Config, ConfigError, ConfigFile, InterfaceSection, ZeroCopy};
use detour_dataplane::daemon;
use detour_dataplane::xdp::AttachMode;
use signal_hook::consts::{SIGINT, SIGTERM};

/// detour's packet engine: XDP classifier and AF_XDP workers.
///
/// Settings come from the configuration file (--config; every key is in
/// docs/dataplane-config.md) and from the flags below, which override it.
/// node_id and the WAN interface have no default.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// TOML configuration file.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Check the configuration, print it, and exit.
    #[arg(long)]
    check: bool,

    /// This node's id in the overlay (1 to 65534). [node_id]
    #[arg(long, value_name = "ID")]
    node_id: Option<u16>,

    /// The interface toward the underlay. [wan.interface]
    #[arg(long, value_name = "IFACE")]
    wan: Option<String>,

    /// The interface toward the local site's hosts (none: a pure relay).
    /// [lan.interface]
    #[arg(long, value_name = "IFACE")]
    lan: Option<String>,

    /// native (in the driver; falls back to skb, with a warning, where the
    /// driver refuses it) or skb (generic, slower, works anywhere).
    /// [xdp.mode, default native]
    #[arg(long, value_name = "MODE")]
    xdp_mode: Option<AttachMode>,

    /// Detach another XDP program found on an interface instead of refusing
    /// to start. [xdp.replace]
    #[arg(long)]
    xdp_replace: bool,

    /// Traffic for a worker whose queue has no socket: pass (to the kernel)
    /// or drop. [xdp.no_socket, default pass]
    #[arg(long, value_name = "POLICY")]
    no_socket: Option<NoSocket>,

    /// Receive queues to serve, one worker each, comma-separated.
    /// [afxdp.queues, default 0]
    #[arg(long, value_name = "Q,..", value_delimiter = ',')]
    queues: Option<Vec<u32>>,

    /// The core of each queue's worker, comma-separated, in queue order.
    /// [afxdp.cores, default: chosen at start]
    #[arg(long, value_name = "CPU,..", value_delimiter = ',')]
    cores: Option<Vec<usize>>,

    /// auto, on or off. [afxdp.zero_copy, default auto]
    #[arg(long, value_name = "WHEN")]
    zero_copy: Option<ZeroCopy>,

    /// Frames per ring operation. [afxdp.batch_size, default 64]
    #[arg(long, value_name = "N")]
    batch_size: Option<u32>,

    /// Entries per ring, a power of two. [afxdp.ring_size, default 2048]
    #[arg(long, value_name = "N")]
    ring_size: Option<u32>,

    /// Bytes per UMEM frame, 2048 or 4096. [afxdp.frame_size, default 4096]
    #[arg(long, value_name = "BYTES")]
    frame_size: Option<u32>,

    /// UMEM frames per queue. [afxdp.frame_count, default 8192]
    #[arg(long, value_name = "N")]
    frame_count: Option<u32>,

    /// Spin on the rings when idle instead of sleeping. [afxdp.busy_poll]
    #[arg(long)]
    busy_poll: bool,

    /// The UDP port of overlay data. [overlay.port, default 6081]
    #[arg(long, value_name = "PORT")]
    overlay_port: Option<u16>,

    /// The overlay's GENEVE VNI. [overlay.vni, default 0]
    #[arg(long, value_name = "VNI")]
    vni: Option<u32>,

    /// The local API's Unix socket. [api.socket, default
    /// /run/detour/dataplane.sock]
    #[arg(long, value_name = "PATH")]
    api_socket: Option<PathBuf>,

    /// Serve Prometheus metrics at http://ADDR:PORT/metrics. [metrics.listen,
    /// default: off]
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<std::net::SocketAddr>,
}

impl Args {
    /// The file's settings with the flags laid over them, checked.
    fn config(&self) -> Result<Config, ConfigError> {
        let mut file = match &self.config {
            Some(path) => ConfigFile::read(path)?,
            None => ConfigFile::default(),
        };
        let interface = |name: &String| InterfaceSection {
            interface: name.clone(),
        };
        // A flag's value replaces the file's, and an error about it names
        // no line of the file.
        macro_rules! flag {
            ($key:literal, $slot:expr, $value:expr) => {
                if let Some(value) = $value {
                    $slot = value;
                    file.set_by_flag($key);
                }
            };
        }
        flag!("node_id", file.node_id, self.node_id.map(Some));
        flag!(
            "wan.interface",
            file.wan,
            self.wan.as_ref().map(|w| Some(interface(w)))
        );
        flag!(
            "lan.interface",
            file.lan,
            self.lan.as_ref().map(|l| Some(interface(l)))
        );
        flag!("xdp.mode", file.xdp.mode, self.xdp_mode);
        file.xdp.replace |= self.xdp_replace;
        flag!("xdp.no_socket", file.xdp.no_socket, self.no_socket);
        flag!("afxdp.queues", file.afxdp.queues, self.queues.clone());
        flag!("afxdp.cores", file.afxdp.cores, self.cores.clone());
        flag!("afxdp.zero_copy", file.afxdp.zero_copy, self.zero_copy);
        flag!("afxdp.batch_size", file.afxdp.batch_size, self.batch_size);
        flag!("afxdp.ring_size", file.afxdp.ring_size, self.ring_size);
        flag!("afxdp.frame_size", file.afxdp.frame_size, self.frame_size);
        flag!(
            "afxdp.frame_count",
            file.afxdp.frame_count,
            self.frame_count
        );
        file.afxdp.busy_poll |= self.busy_poll;
        flag!("overlay.port", file.overlay.port, self.overlay_port);
        flag!("overlay.vni", file.overlay.vni, self.vni);
        flag!("api.socket", file.api.socket, self.api_socket.clone());
        flag!(
            "metrics.listen",
            file.metrics.listen,
            self.metrics_listen.map(Some)
        );
        file.check(&detour_dataplane::config::usable_cores())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DETOUR_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = match args.config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("detour-dataplane: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        // A closed pipe (`| head`) is not an error worth a panic.
        let _ = writeln!(std::io::stdout(), "{config:#?}");
        return ExitCode::SUCCESS;
    }
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, with every cause, and no backtrace.
            eprintln!("detour-dataplane: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: &Config) -> anyhow::Result<()> {
    // Signals are taken before anything is attached, so that a SIGTERM that
    // arrives during start-up still detaches what was attached.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    daemon::run(config, &stop)
}
