//! `detour-control`: the control process, and its simulator.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Parser, Subcommand};
use detour_control::config::Config;
use detour_control::daemon;
use detour_control::sim::{self, Scenario, SimConfig};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// detour's control process: probes every peer, floods link state, picks
/// the best direct or one-hop path to every node and installs the routes
/// in the dataplane.
///
/// Without a subcommand it runs the control process with the configuration
/// file given by --config (every key is in docs/control-config.md). It
/// keeps running until SIGINT or SIGTERM; the dataplane keeps forwarding
/// by the routes last installed while it is stopped or restarting. SIGHUP
/// (or `detourctl reload`) reads the file again and applies what may
/// change live: peers and their keys, this node's key, prefixes, the
/// routing policy; a file with an error, or with another change, is
/// refused and the running configuration stays.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    /// The configuration file.
    #[arg(short, long, default_value = "/etc/detour/control.toml")]
    config: PathBuf,
    /// Check the configuration (and the key file), print it, and exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the routing core of every node of a synthetic overlay on a
    /// virtual clock, inject a failure, and report detection and failover
    /// times, probe and link-state traffic and route computation time.
    /// Deterministic for a seed (computation times aside).
    Sim(SimArgs),
}

#[derive(Debug, clap::Args)]
struct SimArgs {
    /// What goes wrong: steady, link-cut, relay-failure, flapping,
    /// partition, gradual-loss.
    #[arg(long, default_value = "link-cut")]
    scenario: Scenario,
    /// Nodes in the overlay (2 to 65534).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(2..=65534))]
    nodes: u16,
    /// Seed of the overlay, loss and jitter.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds before the event (the overlay settles meanwhile).
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// Seconds the run goes on after the event [default: 3, or 12 for
    /// flapping and gradual-loss].
    #[arg(long)]
    after: Option<f64>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

fn seconds(s: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| anyhow::anyhow!("--{what}: {s} is not a duration in seconds"))
}

fn simulate(args: SimArgs) -> anyhow::Result<()> {
    let mut config = SimConfig::new(args.scenario, usize::from(args.nodes), args.seed);
    config.warmup = seconds(args.warmup, "warmup")?;
    if let Some(after) = args.after {
        config.after = seconds(after, "after")?;
    }
    let report = sim::run(&config);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

fn serve(path: &std::path::Path, check: bool) -> anyhow::Result<()> {
    let config = match Config::read(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("detour-control: configuration: {e}");
            std::process::exit(2);
        }
    };
    if check {
        println!("{config:#?}");
        return Ok(());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(SIGHUP, Arc::clone(&reload))?;
    daemon::run(config, path, &stop, &reload)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DETOUR_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match cli.command {
        Some(Command::Sim(args)) => simulate(args),
        None => serve(&cli.config, cli.check),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("detour-control: {e:#}");
            ExitCode::FAILURE
        }
    }
}
