//! `detourctl`: the operator's view of a detour node and its levers.
//!
//! It talks to `detour-control` and `detour-dataplane` over their local API
//! sockets (docs/operations.md, "detourctl"). Read commands print aligned
//! tables, or with `--json` the daemons' answers as they come (the shapes
//! of `detour_control::api` and `detour_common::api`); change commands
//! print what they did. Failures are one line on stderr and an exit code.

mod keys;
mod show;
mod top;

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use detour_common::api as dp;
use detour_common::wire::NodeId;
use detour_control::api::{self as cp, Request};
use serde::Serialize;

/// The operator's CLI of a detour node: what the control process and the
/// dataplane are doing, and the levers to pin paths and drain nodes.
///
/// Exit codes: 0 success; 1 the daemon refused the request (an unknown
/// peer, a path that cannot be pinned); 2 bad arguments; 3 a daemon is
/// not running (no socket, or nobody answers on it); 4 no permission to
/// use a socket (they are root's, mode 0600); 5 the daemon's answer made
/// no sense (versions apart?).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// The control process's API socket (its `api.socket`).
    #[arg(
        long,
        global = true,
        env = "DETOUR_CONTROL_SOCKET",
        default_value = "/run/detour/control.sock",
        value_name = "PATH"
    )]
    control_socket: PathBuf,
    /// The dataplane's API socket (its `api.socket`).
    #[arg(
        long,
        global = true,
        env = "DETOUR_DATAPLANE_SOCKET",
        default_value = "/run/detour/dataplane.sock",
        value_name = "PATH"
    )]
    dataplane_socket: PathBuf,
    /// Print JSON instead of tables: one object (`top`: one per refresh,
    /// a line each), shapes in docs/operations.md.
    #[arg(long, global = true)]
    json: bool,
    /// How long to wait for a daemon's answer, in seconds, before giving up
    /// on it (a hung daemon: exit code 3).
    #[arg(
        long,
        global = true,
        default_value = "5",
        value_name = "SECONDS",
        value_parser = parse_timeout
    )]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// This node: id, versions, uptime, health of the control process and
    /// the dataplane, installed route version, XDP and AF_XDP mode per
    /// interface.
    Status,
    /// Each peer: state, RTT, loss, when it last answered.
    Peers,
    /// The measured link table and, per destination, the path in use and
    /// why (its cost, the best alternative, hysteresis, pin).
    Paths,
    /// The route snapshot installed in the dataplane.
    Routes,
    /// Per worker and in total: packets and bytes in and out, drops by
    /// reason, forwarding latency percentiles; the XDP classifier's
    /// counters.
    Stats,
    /// Live rates and drops, refreshed; q or Ctrl-C quits.
    Top(top::Args),
    /// Pin or unpin the path to a destination (until the control process
    /// restarts; `routing.pins` in its file keeps a pin).
    #[command(subcommand)]
    Route(RouteCommand),
    /// Drain a node (it relays for no one) or undrain it.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Have the control process read its configuration file again (as
    /// SIGHUP does): peers added, removed or re-keyed, this node's key,
    /// prefixes and routing policy take effect at once; a file with an
    /// error is refused, and says where.
    Reload,
    /// Make a private key for this node (its `private_key_file`): X25519,
    /// base64, as `wg genkey` writes it.
    Genkey(keys::GenkeyArgs),
    /// Read a private key on standard input, print its public key (the
    /// `public_key` that the other nodes list this node under).
    Pubkey,
}

#[derive(Debug, Subcommand)]
enum RouteCommand {
    /// Use PATH to DST whatever it costs, while it is live: `direct` or
    /// `via RELAY` (e.g. `detourctl route pin 5 via 3`).
    Pin {
        dst: NodeId16,
        #[arg(num_args = 1..=2, required = true, value_name = "PATH")]
        path: Vec<String>,
    },
    /// Let the metric choose the path to DST again.
    Unpin { dst: NodeId16 },
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Without NODE (or with this node's id): this node tells every peer,
    /// in its link state, to relay through it no more; it stays a
    /// destination. With a peer's id: this node alone stops relaying
    /// through that peer.
    Drain { node: Option<NodeId16> },
    /// Undo `drain`.
    Undrain { node: Option<NodeId16> },
}

/// A node id on the command line: 1 to 65534.
#[derive(Debug, Clone, Copy)]
struct NodeId16(NodeId);

impl std::str::FromStr for NodeId16 {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.parse::<u16>() {
            Ok(id) if NodeId(id).is_valid() => Ok(NodeId16(NodeId(id))),
            _ => Err(format!("{s:?} is not a node id (1 to 65534)")),
        }
    }
}

/// Why a command failed, and its exit code.
#[derive(Debug)]
pub enum Failure {
    /// The daemon said no.
    Refused(String),
    /// A daemon could not be reached.
    Down(String),
    NoPermission(String),
    /// An answer of the wrong kind, or unreadable.
    Protocol(String),
    /// Already reported on the output (`status`): only the exit code.
    Quiet(u8),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Refused(_) => 1,
            Failure::Down(_) => 3,
            Failure::NoPermission(_) => 4,
            Failure::Protocol(_) => 5,
            Failure::Quiet(code) => *code,
        }
    }

    fn message(&self) -> &str {
        match self {
            Failure::Refused(m)
            | Failure::Down(m)
            | Failure::NoPermission(m)
            | Failure::Protocol(m) => m,
            Failure::Quiet(_) => "",
        }
    }

    /// The failure of talking to `daemon` at `path`.
    fn io(daemon: Daemon, path: &std::path::Path, timeout: Duration, e: io::Error) -> Failure {
        let (name, flag) = match daemon {
            Daemon::Control => ("the control process (detour-control)", "--control-socket"),
            Daemon::Dataplane => ("the dataplane (detour-dataplane)", "--dataplane-socket"),
        };
        let path = path.display();
        match e.kind() {
            io::ErrorKind::NotFound => Failure::Down(format!(
                "{name} is not running: no socket at {path} (started? {flag} names another)"
            )),
            io::ErrorKind::ConnectionRefused => Failure::Down(format!(
                "{name} is not running: nobody answers on {path} (it stopped or crashed)"
            )),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Down(format!(
                "{name} at {path} did not answer within {} s (hung? --timeout waits longer)",
                timeout.as_secs_f64()
            )),
            io::ErrorKind::PermissionDenied => Failure::NoPermission(format!(
                "no permission to use {path}, the API socket of {name}: it is root's (mode 0600); run detourctl as root"
            )),
            _ => Failure::Protocol(format!("{name} at {path}: {e}")),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Daemon {
    Control,
    Dataplane,
}

/// The sockets, and how to ask each daemon.
pub struct Sockets {
    control: PathBuf,
    dataplane: PathBuf,
    /// How long each request may take.
    timeout: Duration,
}

impl Sockets {
    pub fn control(&self, request: &Request) -> Result<cp::Response, Failure> {
        let path = &self.control;
        let fail = |e| Failure::io(Daemon::Control, path, self.timeout, e);
        let mut client = cp::Client::connect(path).map_err(fail)?;
        client.set_timeout(Some(self.timeout)).map_err(fail)?;
        match client.request(request).map_err(fail)? {
            cp::Response::Error { message } => Err(Failure::Refused(message)),
            answer => Ok(answer),
        }
    }

    pub fn dataplane(&self, request: &dp::Request) -> Result<dp::Response, Failure> {
        let path = &self.dataplane;
        let fail = |e| Failure::io(Daemon::Dataplane, path, self.timeout, e);
        let mut client = dp::Client::connect(path).map_err(fail)?;
        client.set_timeout(Some(self.timeout)).map_err(fail)?;
        match client.request(request).map_err(fail)? {
            dp::Response::Error { message } => Err(Failure::Refused(message)),
            answer => Ok(answer),
        }
    }

    pub fn stats(&self) -> Result<dp::Stats, Failure> {
        match self.dataplane(&dp::Request::Stats)? {
            dp::Response::Stats(stats) => Ok(stats),
            other => Err(unexpected(other)),
        }
    }
}

pub fn unexpected(answer: impl std::fmt::Debug) -> Failure {
    Failure::Protocol(format!("unexpected answer: {answer:?}"))
}

/// Prints `value` as JSON, pretty, one object.
pub fn print_json(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("answers serialize")
    );
}

/// Prints `value` as JSON or, for people, as `human` does.
fn output<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T)) -> Result<(), Failure> {
    if json {
        print_json(value);
    } else {
        human(value);
    }
    Ok(())
}

/// What `status --json` prints: each daemon's answer, or why there is
/// none.
#[derive(Serialize)]
struct StatusJson {
    control: Option<cp::Status>,
    dataplane: Option<dp::Health>,
    /// Per daemon that could not be asked, the reason.
    errors: std::collections::BTreeMap<&'static str, String>,
}

fn status(sockets: &Sockets, json: bool) -> Result<(), Failure> {
    let control = match sockets.control(&Request::Status) {
        Ok(cp::Response::Status(s)) => Ok(*s),
        Ok(other) => Err(unexpected(other)),
        Err(e) => Err(e),
    };
    // A control process that runs without a dataplane has none to ask.
    let without_dataplane = matches!(&control, Ok(s) if s.dataplane.is_none());
    let dataplane = if without_dataplane {
        None
    } else {
        Some(match sockets.dataplane(&dp::Request::Health) {
            Ok(dp::Response::Health(h)) => Ok(h),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(e),
        })
    };
    let mut errors = std::collections::BTreeMap::new();
    if let Err(e) = &control {
        errors.insert("control", e.message().to_string());
    }
    if let Some(Err(e)) = &dataplane {
        errors.insert("dataplane", e.message().to_string());
    }
    let (control_ok, dataplane_ok) = (
        control.as_ref().ok(),
        dataplane.as_ref().and_then(|d| d.as_ref().ok()),
    );
    if json {
        print_json(&StatusJson {
            control: control_ok.cloned(),
            dataplane: dataplane_ok.cloned(),
            errors: errors.clone(),
        });
    } else {
        show::status(control_ok, dataplane_ok, without_dataplane, &errors);
    }
    // The worst failure decides the exit code.
    let failures = [control.err(), dataplane.and_then(Result::err)];
    match failures.into_iter().flatten().map(|f| f.exit_code()).max() {
        Some(code) => Err(Failure::Quiet(code)),
        None => Ok(()),
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Genkey(args) => return keys::genkey(args),
        Command::Pubkey => return keys::pubkey(),
        _ => {}
    }
    let sockets = Sockets {
        control: cli.control_socket,
        dataplane: cli.dataplane_socket,
        timeout: cli.timeout,
    };
    let json = cli.json;
    match cli.command {
        Command::Status => status(&sockets, json),
        Command::Peers => match sockets.control(&Request::Peers)? {
            cp::Response::Peers { peers } => output(json, &peers, |p| show::peers(p)),
            other => Err(unexpected(other)),
        },
        Command::Paths => match sockets.control(&Request::Paths)? {
            cp::Response::Paths(paths) => output(json, &paths, show::paths),
            other => Err(unexpected(other)),
        },
        Command::Routes => match sockets.dataplane(&dp::Request::Routes)? {
            dp::Response::Routes { snapshot } => {
                output(json, &snapshot, |s| show::routes(s.as_ref()))
            }
            other => Err(unexpected(other)),
        },
        Command::Stats => output(json, &sockets.stats()?, show::stats),
        Command::Top(args) => top::run(&sockets, &args, json),
        Command::Route(RouteCommand::Pin { dst, path }) => change(
            &sockets,
            Request::Pin {
                dst: dst.0,
                path: path.join(" "),
            },
            json,
        ),
        Command::Route(RouteCommand::Unpin { dst }) => {
            change(&sockets, Request::Unpin { dst: dst.0 }, json)
        }
        Command::Node(NodeCommand::Drain { node }) => change(
            &sockets,
            Request::Drain {
                node: node.map(|n| n.0),
            },
            json,
        ),
        Command::Node(NodeCommand::Undrain { node }) => change(
            &sockets,
            Request::Undrain {
                node: node.map(|n| n.0),
            },
            json,
        ),
        Command::Reload => change(&sockets, Request::Reload, json),
        Command::Genkey(_) | Command::Pubkey => unreachable!("handled above"),
    }
}

/// Sends a change to the control process and says what it did.
fn change(sockets: &Sockets, request: Request, json: bool) -> Result<(), Failure> {
    match sockets.control(&request)? {
        answer @ cp::Response::Done { .. } if json => {
            print_json(&answer);
            Ok(())
        }
        cp::Response::Done { message } => {
            println!("{message}");
            Ok(())
        }
        other => Err(unexpected(other)),
    }
}

/// `--timeout`: seconds, more than 0 and at most an hour.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(seconds > 0.0 && seconds <= 3600.0) {
        return Err(format!("{seconds} s: give more than 0 and at most 3600"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so that a write to a closed pipe fails with
    // EPIPE, which println! turns into a panic: `detourctl peers | head -1`
    // would end with a backtrace. With the default action back, it ends
    // quietly, killed by SIGPIPE (status 141 in a shell), as coreutils do.
    // SAFETY: setting a signal's disposition to the default, before any
    // thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Quiet(code)) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("detourctl: {}", failure.message());
            ExitCode::from(failure.exit_code())
        }
    }
}
