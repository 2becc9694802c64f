//! `detour-dataplane`: loads detour's XDP classifier onto the gateway's
//! interfaces and holds it there until told to stop.
//!
//! The AF_XDP workers, the route table and the local API join this process
//! with the dataplane issue; until then it attaches the classifier, so that
//! overlay and remote-site traffic meet the no-socket policy, and detaches it
//! on SIGINT or SIGTERM (the kernel does so by itself if the process is
//! killed).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use detour_common::maps::{NoSocket, XdpConfig};
use detour_common::wire::geneve::DEFAULT_PORT;
use detour_dataplane::xdp::{AttachMode, Classifier, Role};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// detour's packet engine: XDP classifier and AF_XDP workers.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// The interface toward the underlay, where overlay data arrives.
    #[arg(long, value_name = "IFACE")]
    wan: String,

    /// The interface toward the local site's hosts (none: a pure relay).
    #[arg(long, value_name = "IFACE")]
    lan: Option<String>,

    /// XDP mode: native (in the driver; falls back to skb, with a warning,
    /// where the driver refuses it) or skb (generic, slower, works anywhere).
    #[arg(long, value_name = "MODE", default_value_t = AttachMode::Native)]
    xdp_mode: AttachMode,

    /// Detach another XDP program found on an interface instead of refusing
    /// to start.
    #[arg(long)]
    xdp_replace: bool,

    /// The UDP port overlay data arrives on.
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_PORT)]
    overlay_port: u16,

    /// What to do with traffic for a worker whose queue has no socket:
    /// pass it to the kernel, or drop it.
    #[arg(long, value_name = "POLICY", default_value = "pass", value_parser = parse_no_socket)]
    no_socket: NoSocket,
}

fn parse_no_socket(s: &str) -> Result<NoSocket, String> {
    match s {
        "pass" => Ok(NoSocket::Pass),
        "drop" => Ok(NoSocket::Drop),
        other => Err(format!("unknown policy {other:?}: expected pass or drop")),
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
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, with every cause, and no backtrace.
            eprintln!("detour-dataplane: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    // Signals are taken before anything is attached, so that a SIGTERM that
    // arrives during start-up still detaches what was attached.
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let mut classifier = Classifier::load(XdpConfig::new(args.overlay_port, args.no_socket))?;
    classifier.attach(Role::Wan, &args.wan, args.xdp_mode, args.xdp_replace)?;
    if let Some(lan) = &args.lan {
        classifier.attach(Role::Lan, lan, args.xdp_mode, args.xdp_replace)?;
    }
    tracing::info!("ready; SIGINT or SIGTERM detaches and exits");
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "stopping");
    }
    let counters = classifier.counters()?;
    drop(classifier);
    tracing::info!(counters = ?counters.nonzero(), "detached");
    Ok(())
}
