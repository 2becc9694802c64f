//! The TCP benchmark: one TCP connection (iperf3) from site 1's host to
//! site 2's through detour, encrypted (`encryption = "aead"`) and in the
//! clear (`"none"`), and the same between two namespaces over WireGuard
//! (Debian's `wireguard-go`, the userspace implementation an operator
//! without the kernel module runs), in one invocation, in interleaved
//! rounds so that a noisy spell of the machine hits each setup in one
//! round only; each setup's median round counts.
//!
//! ```text
//!   detour:  host h1 ── n1 [dataplane] ── router ── n2 [dataplane] ── host h2
//!   WireGuard:          wg-a [wireguard-go] ── veth ── wg-b [wireguard-go]
//! ```
//!
//! The two detour testbeds are the built-in one (every link a veth, the
//! path between the two nodes without delay, so the router forwards in the
//! kernel). WireGuard gets the easier setup: its two namespaces are the
//! tunnel's ends themselves, one veth apart, with no site behind them and
//! no forwarding on either side.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use detour_testkit::{Netns, Process, eventually, machine};
use serde::Serialize;

use crate::bed::{Layout, Testbed};
use crate::topology::{Topology, host_address};

/// The port iperf3 listens on.
const IPERF_PORT: &str = "5201";
/// How long a server or tunnel may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Each connection's length.
    pub seconds: u32,
    pub rounds: usize,
    /// The TCP congestion control every connection uses (iperf3 `-C`).
    pub congestion: String,
}

/// The three setups compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Setup {
    DetourAead,
    DetourNone,
    WireguardGo,
}

impl Setup {
    pub const ALL: [Setup; 3] = [Setup::DetourAead, Setup::DetourNone, Setup::WireguardGo];

    pub fn name(self) -> &'static str {
        match self {
            Setup::DetourAead => "detour, encryption = \"aead\"",
            Setup::DetourNone => "detour, encryption = \"none\"",
            Setup::WireguardGo => "wireguard-go",
        }
    }
}

/// One connection's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub setup: Setup,
    pub round: usize,
    /// What the receiver got, in Gbit/s.
    pub gbit_s: f64,
    pub retransmits: u64,
    /// The congestion control iperf3 says the sender used.
    pub congestion: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub date: String,
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub settings: Settings,
    pub runs: Vec<Run>,
    /// Each setup's median round, Gbit/s.
    pub medians: Vec<(Setup, f64)>,
}

impl Report {
    pub fn median(&self, setup: Setup) -> Option<f64> {
        self.medians
            .iter()
            .find(|(s, _)| *s == setup)
            .map(|(_, g)| *g)
    }

    /// The report as Markdown: every round, the medians and the ratios.
    pub fn markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "TCP, one connection (iperf3, {} s, congestion control {}), {} round(s), {}, {} CPUs, kernel {}, {}:\n\n\
             | setup | Gbit/s per round | median Gbit/s | × wireguard-go |\n| --- | --- | ---: | ---: |\n",
            self.settings.seconds,
            self.settings.congestion,
            self.settings.rounds,
            self.cpu_model,
            self.cpus,
            self.kernel,
            self.date,
        );
        let wg = self.median(Setup::WireguardGo);
        for setup in Setup::ALL {
            let rounds: Vec<String> = self
                .runs
                .iter()
                .filter(|r| r.setup == setup)
                .map(|r| format!("{:.2} ({} retr.)", r.gbit_s, r.retransmits))
                .collect();
            let Some(median) = self.median(setup) else {
                continue;
            };
            let ratio = wg.map_or("—".into(), |wg| format!("{:.1}", median / wg));
            let _ = writeln!(
                out,
                "| {} | {} | {median:.2} | {ratio} |",
                setup.name(),
                rounds.join(", ")
            );
        }
        if let (Some(aead), Some(none)) = (
            self.median(Setup::DetourAead),
            self.median(Setup::DetourNone),
        ) {
            let _ = writeln!(
                out,
                "\ndetour encrypted over detour in the clear: {:.2}",
                aead / none
            );
        }
        out
    }
}

/// Runs the benchmark; `layouts` are where the two detour testbeds go
/// (encrypted, in the clear), `stop` ends it early (an error). Everything
/// it set up is taken down before it returns.
pub fn run(
    settings: &Settings,
    layouts: [Layout; 2],
    say: &dyn Fn(&str),
    stop: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<Report> {
    let [aead_layout, none_layout] = layouts;
    let wg_prefix = format!("{}-wg", aead_layout.prefix);
    say("building two testbeds of two sites (encrypted, in the clear) and a WireGuard pair");
    let aead = Testbed::up(two_sites("aead")?, aead_layout)?;
    let none = Testbed::up(two_sites("none")?, none_layout)?;
    let wireguard = WireguardPair::up(&wg_prefix, &aead.layout().dir)?;
    let servers = [
        Server::start(&aead.layout().host(2))?,
        Server::start(&none.layout().host(2))?,
        Server::start(&wireguard.b)?,
    ];
    let mut runs = Vec::new();
    let outcome = (|| -> anyhow::Result<()> {
        for round in 0..settings.rounds {
            for (setup, server) in Setup::ALL.into_iter().zip(&servers) {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    bail!("interrupted");
                }
                let (client, to) = match setup {
                    Setup::DetourAead => (aead.layout().host(1), host_address(2).to_string()),
                    Setup::DetourNone => (none.layout().host(1), host_address(2).to_string()),
                    Setup::WireguardGo => (wireguard.a_handle(), WireguardPair::B_ADDRESS.into()),
                };
                server.wait_listening()?;
                let run = connection(&client, &to, settings, setup, round)
                    .with_context(|| format!("{}, round {}", setup.name(), round + 1))?;
                say(&format!(
                    "round {}: {}: {:.2} Gbit/s, {} retransmits ({})",
                    round + 1,
                    setup.name(),
                    run.gbit_s,
                    run.retransmits,
                    run.congestion
                ));
                runs.push(run);
            }
        }
        Ok(())
    })();
    drop(servers);
    drop(wireguard);
    let downs = [aead.down(), none.down()];
    outcome?;
    for d in downs {
        d?;
    }
    let medians = Setup::ALL
        .into_iter()
        .filter_map(|setup| {
            let mut of: Vec<f64> = runs
                .iter()
                .filter(|r| r.setup == setup)
                .map(|r| r.gbit_s)
                .collect();
            of.sort_by(f64::total_cmp);
            of.get(of.len() / 2).map(|m| (setup, *m))
        })
        .collect();
    Ok(Report {
        date: machine::now_utc(),
        kernel: machine::kernel(),
        cpu_model: machine::cpu_model(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        settings: settings.clone(),
        runs,
        medians,
    })
}

/// Two sites, nodes 1 and 2, directly connected without delay.
fn two_sites(encryption: &str) -> anyhow::Result<Topology> {
    let node = |id| format!("[[nodes]]\nid = {id}\nencryption = \"{encryption}\"\n");
    Topology::parse(&format!(
        "[defaults]\ndelay_ms = 0\n\n{}\n{}",
        node(1),
        node(2)
    ))
}

/// One iperf3 connection from `client`'s namespace to `to`.
fn connection(
    client: &Netns,
    to: &str,
    settings: &Settings,
    setup: Setup,
    round: usize,
) -> anyhow::Result<Run> {
    let seconds = settings.seconds.to_string();
    let out = client.exec(
        "iperf3",
        &[
            "--client",
            to,
            "--port",
            IPERF_PORT,
            "--time",
            &seconds,
            "--congestion",
            &settings.congestion,
            "--json",
        ],
    )?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3's answer is no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(error) = json["error"].as_str() {
        bail!("iperf3: {error}");
    }
    let end = &json["end"];
    let bits = end["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 reported no received rate")?;
    Ok(Run {
        setup,
        round,
        gbit_s: bits / 1e9,
        retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        congestion: end["sender_tcp_congestion"]
            .as_str()
            .unwrap_or("unknown")
            .into(),
    })
}

/// An iperf3 server in a namespace, killed when it drops.
struct Server {
    ns: Netns,
    _process: Process,
}

impl Server {
    fn start(ns: &Netns) -> anyhow::Result<Server> {
        let mut cmd = ns.command("iperf3");
        cmd.args(["--server", "--port", IPERF_PORT])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        Ok(Server {
            ns: Netns::existing(ns.name()),
            _process: Process::spawn(&mut cmd)?,
        })
    }

    fn wait_listening(&self) -> anyhow::Result<()> {
        let filter = format!("sport = :{IPERF_PORT}");
        let listening = eventually(START_TIMEOUT, || {
            self.ns
                .exec("ss", &["-Hltn", &filter])
                .is_ok_and(|o| !o.stdout.is_empty())
        });
        if !listening {
            bail!("iperf3's server in {} never listened", self.ns.name());
        }
        Ok(())
    }
}

/// Two namespaces one veth apart, a wireguard-go tunnel between them.
struct WireguardPair {
    a: Netns,
    b: Netns,
    /// Stopped by `Drop` before the namespaces go.
    processes: Vec<Process>,
    devices: [String; 2],
}

impl WireguardPair {
    const A_ADDRESS: &str = "10.99.0.1";
    const B_ADDRESS: &str = "10.99.0.2";
    const PORT: &str = "51820";

    /// Builds `<prefix>-a` and `<prefix>-b` (first removing what a killed
    /// run left of them); keys go to files in `dir`.
    fn up(prefix: &str, dir: &Path) -> anyhow::Result<WireguardPair> {
        for end in ["a", "b"] {
            let left = Netns::existing(&format!("{prefix}-{end}"));
            if left.exists() {
                left.delete()?;
            }
        }
        let a = Netns::create(&format!("{prefix}-a"))?;
        let b = Netns::create(&format!("{prefix}-b"))?;
        a.veth("eth0", &b, "eth0")?;
        a.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"])?;
        b.ip(&["addr", "add", "192.0.2.2/24", "dev", "eth0"])?;
        // The UAPI socket (/var/run/wireguard/NAME.sock) is global: the
        // names must differ between the namespaces, and be ours.
        let short = prefix.trim_start_matches("dtb-");
        let devices = [format!("wg{short}a"), format!("wg{short}b")];
        if devices.iter().any(|d| d.len() > 15) {
            bail!("the WireGuard device names {devices:?} are longer than 15 bytes");
        }
        let mut pair = WireguardPair {
            a,
            b,
            processes: Vec::new(),
            devices,
        };
        let keys = [genkey(dir, "wg-a.key")?, genkey(dir, "wg-b.key")?];
        let ends = [
            (&pair.a, Self::A_ADDRESS, "192.0.2.2", Self::B_ADDRESS),
            (&pair.b, Self::B_ADDRESS, "192.0.2.1", Self::A_ADDRESS),
        ];
        let mut processes = Vec::new();
        for (i, (ns, address, peer_underlay, peer_address)) in ends.into_iter().enumerate() {
            let device = &pair.devices[i];
            let mut cmd = ns.command("wireguard-go");
            cmd.args(["-f", device])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            processes.push(Process::spawn(&mut cmd)?);
            let socket = PathBuf::from(format!("/var/run/wireguard/{device}.sock"));
            if !eventually(START_TIMEOUT, || socket.exists()) {
                bail!("wireguard-go never opened {}", socket.display());
            }
            let (own_key, peer_key) = (&keys[i], &keys[1 - i]);
            let allowed = format!("{peer_address}/32");
            let endpoint = format!("{peer_underlay}:{}", Self::PORT);
            checked(ns.command("wg").args([
                "set",
                device,
                "private-key",
                own_key.file.to_str().context("a key file name")?,
                "listen-port",
                Self::PORT,
                "peer",
                &peer_key.public,
                "allowed-ips",
                &allowed,
                "endpoint",
                &endpoint,
            ]))?;
            ns.ip(&["addr", "add", &format!("{address}/24"), "dev", device])?;
            ns.ip(&["link", "set", device, "up"])?;
        }
        pair.processes = processes;
        Ok(pair)
    }

    fn a_handle(&self) -> Netns {
        Netns::existing(self.a.name())
    }
}

impl Drop for WireguardPair {
    fn drop(&mut self) {
        // Killed, wireguard-go leaves its socket behind.
        self.processes.clear();
        for device in &self.devices {
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{device}.sock"));
        }
    }
}

/// A WireGuard private key in `dir/name` (0600) and its public key.
struct WgKey {
    file: PathBuf,
    public: String,
}

fn genkey(dir: &Path, name: &str) -> anyhow::Result<WgKey> {
    let private = checked(Command::new("wg").arg("genkey"))?;
    let file = dir.join(name);
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&file)
        .and_then(|mut f| f.write_all(private.as_bytes()))
        .with_context(|| format!("writing {}", file.display()))?;
    let mut pubkey = Command::new("wg")
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running wg pubkey")?;
    pubkey
        .stdin
        .take()
        .context("wg pubkey's stdin")?
        .write_all(private.as_bytes())?;
    let out = pubkey.wait_with_output()?;
    if !out.status.success() {
        bail!("wg pubkey failed");
    }
    Ok(WgKey {
        file,
        public: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    })
}

/// Runs `cmd`; its stdout, or an error with its stderr.
fn checked(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(setup: Setup, round: usize, gbit_s: f64) -> Run {
        Run {
            setup,
            round,
            gbit_s,
            retransmits: 0,
            congestion: "bbr".into(),
        }
    }

    #[test]
    fn the_report_compares_each_setups_median_round_with_wireguard() {
        let report = Report {
            date: "today".into(),
            kernel: "6.18".into(),
            cpu_model: "a CPU".into(),
            cpus: 2,
            settings: Settings {
                seconds: 10,
                rounds: 3,
                congestion: "bbr".into(),
            },
            runs: vec![
                run(Setup::DetourAead, 0, 1.5),
                run(Setup::WireguardGo, 0, 0.5),
                run(Setup::DetourAead, 1, 1.8),
                run(Setup::WireguardGo, 1, 0.4),
            ],
            medians: vec![(Setup::DetourAead, 1.8), (Setup::WireguardGo, 0.5)],
        };
        let text = report.markdown();
        assert!(
            text.contains(
                "| detour, encryption = \"aead\" | 1.50 (0 retr.), 1.80 (0 retr.) | 1.80 | 3.6 |"
            ),
            "{text}"
        );
        assert!(
            !text.contains("\"none\""),
            "a setup not run has no row: {text}"
        );
        assert!(text.contains("congestion control bbr"), "{text}");
    }

    #[test]
    fn both_detour_setups_are_two_sites_without_delay() {
        for encryption in ["aead", "none"] {
            let t = two_sites(encryption).unwrap();
            assert_eq!(t.traffic_sites(), [1, 2]);
            assert_eq!(t.defaults.delay_ms, 0);
            assert!(
                t.nodes
                    .iter()
                    .all(|n| n.encryption.as_deref() == Some(encryption))
            );
        }
    }
}
