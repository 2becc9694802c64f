//! `detour-testbed`: the built-in overlay testbed and the demo. Run through
//! `scripts/testbed` and `scripts/demo`, which install and build what is
//! missing first.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use detour_testbed::bed::{self, Layout, Testbed};
use detour_testbed::demo::{self, Progress};
use detour_testbed::{Impairment, Topology, delay_line, soak, tcp};

/// Where each testbed keeps its state, `<STATE_ROOT>/<name>`.
const STATE_ROOT: &str = "/run/detour-testbed";

/// detour's built-in testbed: overlay nodes in network namespaces around a
/// simulated Internet (a router namespace with per-path delay, loss and
/// cuts), both daemons on every node, a host behind every site.
///
/// Node i's underlay address is 198.18.i.2, its site 10.i.0.0/24 with the
/// host at 10.i.0.2. Namespaces are dtb-NAME-r (the router), dtb-NAME-nI
/// (node I), dtb-NAME-hI (its host); state, configurations, sockets and
/// logs are in /run/detour-testbed/NAME. Needs root.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Builds the testbed of a topology file and starts both daemons on
    /// every node; returns once every node has its routes.
    Up {
        /// The topology (examples/testbed/*.toml).
        topology: PathBuf,
        /// Its name [default: the file's name without .toml].
        #[arg(long)]
        name: Option<String>,
    },
    /// Stops everything of the testbed and removes it, also after a crash
    /// [default: every testbed that is up].
    Down { name: Option<String> },
    /// The nodes, their daemons and routes, and the paths.
    Status { name: Option<String> },
    /// Drops everything between two nodes, both ways.
    Cut {
        a: u16,
        b: u16,
        #[arg(long)]
        name: Option<String>,
    },
    /// Undoes `cut`.
    Restore {
        a: u16,
        b: u16,
        #[arg(long)]
        name: Option<String>,
    },
    /// Sets the one-way delay and the loss of the path between two nodes
    /// (both ways), keeping what is not given.
    Set {
        a: u16,
        b: u16,
        #[arg(long)]
        delay_ms: Option<u32>,
        #[arg(long)]
        loss_percent: Option<f64>,
        #[arg(long)]
        name: Option<String>,
    },
    /// Runs detourctl against a node's daemons: `detour-testbed ctl 1 paths`.
    Ctl {
        node: u16,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
        #[arg(long)]
        name: Option<String>,
    },
    /// The demo: builds a testbed, sends traffic between two sites, cuts
    /// their path, restores it, slows it down, and prints what detour did
    /// (failover time, packets lost, latency) and the throughput. Ctrl-C
    /// stops it and takes everything down.
    Demo {
        /// The topology, at least 3 nodes and 2 sites.
        topology: PathBuf,
        /// Print the summary as JSON on stdout (the progress goes to
        /// stderr).
        #[arg(long)]
        json: bool,
    },
    /// The soak: the overlay under steady traffic for MINUTES while its
    /// routes change every 3 s (a path slowed and sped up, another cut and
    /// restored); reports each daemon's memory over time, the drops by
    /// reason and any loss no cut explains. Exit status 1 when a daemon
    /// grew by 1 % or more, died, or traffic was lost unexpectedly.
    Soak {
        /// The topology, at least 4 sites.
        topology: PathBuf,
        /// How long to soak.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Also write the report (Markdown) to this file.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Print the report as JSON on stdout (the progress goes to
        /// stderr).
        #[arg(long)]
        json: bool,
    },
    /// TCP throughput from site 1's host to site 2's (iperf3, one
    /// connection) through detour encrypted and in the clear, and between
    /// two namespaces over wireguard-go, in interleaved rounds; each
    /// setup's median round and the ratios. Builds and takes down its own
    /// testbeds (tcp-aead, tcp-none). Not a test: the numbers depend on the
    /// machine.
    Tcp {
        /// Each connection's length in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Rounds over the three setups.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// The TCP congestion control (iperf3 --congestion); the figure
        /// depends on it.
        #[arg(long, default_value = "bbr")]
        congestion: String,
        /// Print the report as JSON on stdout (the progress goes to
        /// stderr).
        #[arg(long)]
        json: bool,
    },
    /// The delay line, run by `up` inside the router namespace.
    #[command(hide = true)]
    DelayLine { delays: PathBuf },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("detour-testbed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if !matches!(cli.command, Cmd::DelayLine { .. }) {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            bail!("needs root: it creates network namespaces and runs the XDP dataplane");
        }
    }
    match cli.command {
        Cmd::Up { topology, name } => {
            let name = match name {
                Some(n) => n,
                None => file_stem(&topology)?,
            };
            let t = Topology::load(&topology)?;
            let bed = Testbed::up(t, layout(&name)?)?.keep();
            print!("{}", bed.status());
            println!(
                "\nnext: detour-testbed ctl {} paths | cut A B | set A B --delay-ms MS | status | down {name}",
                bed.topology().nodes[0].id
            );
        }
        Cmd::Down { name } => {
            let names = match name {
                Some(n) => vec![n],
                None => up_names(),
            };
            for name in names {
                bed::down(&layout(&name)?)?;
                println!("testbed {name} is down");
            }
        }
        Cmd::Status { name } => {
            let names = match name {
                Some(n) => vec![n],
                None => up_names(),
            };
            if names.is_empty() {
                println!("no testbed is up");
            }
            for name in names {
                print!("{}", open(Some(name))?.status());
            }
        }
        Cmd::Cut { a, b, name } => open(name)?.cut(a, b)?,
        Cmd::Restore { a, b, name } => open(name)?.restore(a, b)?,
        Cmd::Set {
            a,
            b,
            delay_ms,
            loss_percent,
            name,
        } => {
            let mut bed = open(name)?;
            let now = bed.path(a, b).context("no such path")?;
            let path = Impairment {
                delay_ms: delay_ms.unwrap_or(now.delay_ms),
                loss_percent: loss_percent.unwrap_or(now.loss_percent),
                cut: now.cut,
            };
            bed.set_path(a, b, path)?;
        }
        Cmd::Ctl { node, args, name } => {
            let bed = open(name)?;
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = bed.detourctl(node, &args)?;
            print!("{}", String::from_utf8_lossy(&out.stdout));
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            return Ok(ExitCode::from(out.status.code().unwrap_or(1) as u8));
        }
        Cmd::Demo { topology, json } => return run_demo(&topology, json),
        Cmd::Soak {
            topology,
            minutes,
            report,
            json,
        } => return run_soak(&topology, minutes, report.as_deref(), json),
        Cmd::Tcp {
            seconds,
            rounds,
            congestion,
            json,
        } => {
            let settings = tcp::Settings {
                seconds: seconds.max(1),
                rounds: rounds.max(1),
                congestion,
            };
            return run_tcp(&settings, json);
        }
        Cmd::DelayLine { delays } => delay_line::run(&delays)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn run_demo(topology: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let progress = Progress::new(json);
    let Some(summary) = on_own_testbed("demo", topology, &progress, demo::run)? else {
        return Ok(ExitCode::from(130));
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", demo::render(&summary));
    }
    Ok(ExitCode::SUCCESS)
}

fn run_soak(
    topology: &Path,
    minutes: f64,
    report: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if !(minutes > 0.0 && minutes <= 24.0 * 60.0) {
        bail!("--minutes {minutes}: give a duration from a moment to a day");
    }
    let progress = Progress::new(json);
    let Some(r) = on_own_testbed("soak", topology, &progress, |bed, progress, stop| {
        soak::run(bed, minutes, progress, stop)
    })?
    else {
        return Ok(ExitCode::from(130));
    };
    let text = soak::render(&r);
    if let Some(path) = report {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{text}");
    }
    Ok(if r.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run_tcp(settings: &tcp::Settings, json: bool) -> anyhow::Result<ExitCode> {
    let progress = Progress::new(json);
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(libc::SIGINT, stop.clone())?;
    signal_hook::flag::register(libc::SIGTERM, stop.clone())?;
    let layouts = [layout("tcp-aead")?, layout("tcp-none")?];
    for l in &layouts {
        bed::down(l)?;
    }
    let report = match tcp::run(settings, layouts, &|s| progress.say(s), &stop) {
        Err(e) if stop.load(std::sync::atomic::Ordering::Relaxed) => {
            progress.say(&format!("{e}; everything is taken down"));
            return Ok(ExitCode::from(130));
        }
        r => r?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.markdown());
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds testbed `name` of `topology` (taking down what a run killed
/// before it could clean up left), runs `scenario` on it, and takes it
/// down, also on Ctrl-C (then `None`).
fn on_own_testbed<T>(
    name: &str,
    topology: &Path,
    progress: &Progress,
    scenario: impl FnOnce(&mut Testbed, &Progress, &AtomicBool) -> anyhow::Result<T>,
) -> anyhow::Result<Option<T>> {
    let t = Topology::load(topology)?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(libc::SIGINT, stop.clone())?;
    signal_hook::flag::register(libc::SIGTERM, stop.clone())?;
    let layout = layout(name)?;
    bed::down(&layout)?;
    progress.say(&format!(
        "building the testbed: {} nodes around a router namespace, both daemons on each",
        t.nodes.len()
    ));
    let mut bed = Testbed::up(t, layout)?;
    let result = scenario(&mut bed, progress, &stop);
    progress.say("taking the testbed down");
    let down = bed.down();
    let value = match result {
        Err(e) if stop.load(std::sync::atomic::Ordering::Relaxed) => {
            progress.say(&format!("{e}; everything is taken down"));
            return Ok(None);
        }
        r => r?,
    };
    down?;
    Ok(Some(value))
}

fn layout(name: &str) -> anyhow::Result<Layout> {
    if name.is_empty()
        || name.len() > 24
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        bail!("testbed name {name:?}: use 1 to 24 of a-z, 0-9 and -");
    }
    let exe = std::env::current_exe().context("where is detour-testbed?")?;
    Ok(Layout {
        prefix: format!("dtb-{name}"),
        dir: Path::new(STATE_ROOT).join(name),
        bin_dir: exe
            .parent()
            .context("detour-testbed's directory")?
            .to_owned(),
    })
}

fn file_stem(path: &Path) -> anyhow::Result<String> {
    Ok(path
        .file_stem()
        .context("a topology file name")?
        .to_string_lossy()
        .into_owned())
}

/// The testbeds that are up: with a state directory or namespaces left.
fn up_names() -> Vec<String> {
    let mut names = std::collections::BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(STATE_ROOT) {
        names.extend(
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned()),
        );
    }
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(name) = n.strip_prefix("dtb-").and_then(|r| r.strip_suffix("-r")) {
                names.insert(name.to_owned());
            }
        }
    }
    names.into_iter().collect()
}

/// The testbed named, or the only one up.
fn open(name: Option<String>) -> anyhow::Result<Testbed> {
    let name = match name {
        Some(n) => n,
        None => match up_names().as_slice() {
            [one] => one.clone(),
            [] => bail!("no testbed is up (scripts/testbed up TOPOLOGY)"),
            many => bail!(
                "{} testbeds are up; name one with --name: {}",
                many.len(),
                many.join(", ")
            ),
        },
    };
    Testbed::open(&layout(&name)?.dir)
}
