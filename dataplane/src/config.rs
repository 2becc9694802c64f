//! The dataplane's configuration: a TOML file, flags over it, and the checks
//! that keep a bad value from starting anything.
//!
//! Every key has a default except `node_id` and `wan.interface`. An error
//! names the key and the reason (and, for a file that does not parse, the
//! line and column, as the TOML parser reports them); a file with a key the
//! dataplane does not know is refused, so that a typo never silently becomes
//! a default. The reference with every key is `docs/dataplane-config.md`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use detour_common::maps::{MAX_QUEUES, NoSocket};
use detour_common::source_text::describe_parse_error;
use detour_common::wire::NodeId;
use detour_common::wire::geneve::{DEFAULT_HOP_LIMIT, DEFAULT_PORT};
use serde::{Deserialize, Deserializer};

use crate::hold::HoldLimits;
use crate::icmp::IcmpRate;
use crate::xdp::AttachMode;

/// Where the local API listens unless configured otherwise.
pub const DEFAULT_API_SOCKET: &str = "/run/detour/dataplane.sock";

/// A complete, checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub node_id: NodeId,
    pub wan: String,
    pub lan: Option<String>,
    pub xdp: Xdp,
    pub afxdp: AfXdp,
    pub overlay: Overlay,
    pub neighbours: Neighbours,
    pub icmp: Icmp,
    pub api: Api,
    pub metrics: Metrics,
}

/// `[xdp]`: how the classifier is attached.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Xdp {
    #[serde(deserialize_with = "from_str")]
    pub mode: AttachMode,
    pub replace: bool,
    #[serde(deserialize_with = "from_str")]
    pub no_socket: NoSocket,
}

impl Default for Xdp {
    fn default() -> Self {
        Xdp {
            mode: AttachMode::Native,
            replace: false,
            no_socket: NoSocket::Pass,
        }
    }
}

/// Whether AF_XDP sockets copy frames or map the NIC's buffers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ZeroCopy {
    /// Zero-copy where the driver offers it, copy mode otherwise.
    #[default]
    Auto,
    /// Zero-copy or nothing: refuse to start on a driver without it.
    On,
    /// Copy mode always.
    Off,
}

impl FromStr for ZeroCopy {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(ZeroCopy::Auto),
            "on" => Ok(ZeroCopy::On),
            "off" => Ok(ZeroCopy::Off),
            _ => Err("expected auto, on or off"),
        }
    }
}

impl fmt::Display for ZeroCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ZeroCopy::Auto => "auto",
            ZeroCopy::On => "on",
            ZeroCopy::Off => "off",
        })
    }
}

/// `[afxdp]`: sockets, rings and workers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AfXdp {
    /// The receive queues served, one worker each.
    pub queues: Vec<u32>,
    /// The core of each queue's worker, in the order of `queues`; empty:
    /// chosen at start, away from the cores that feed the queues.
    pub cores: Vec<usize>,
    #[serde(deserialize_with = "from_str")]
    pub zero_copy: ZeroCopy,
    /// Frames handled per ring operation.
    pub batch_size: u32,
    /// Entries in each RX, TX, fill and completion ring.
    pub ring_size: u32,
    /// Bytes per UMEM frame.
    pub frame_size: u32,
    /// UMEM frames per queue, shared by the WAN and LAN sockets.
    pub frame_count: u32,
    /// Spin on the rings instead of sleeping in poll() when idle.
    pub busy_poll: bool,
}

impl Default for AfXdp {
    fn default() -> Self {
        AfXdp {
            queues: vec![0],
            cores: Vec::new(),
            zero_copy: ZeroCopy::Auto,
            batch_size: 64,
            ring_size: 2048,
            frame_size: 4096,
            frame_count: 8192,
            busy_poll: false,
        }
    }
}

/// `[overlay]`: what the overlay's packets carry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Overlay {
    /// The UDP port overlay data uses.
    pub port: u16,
    /// The GENEVE VNI of this overlay (24 bits).
    pub vni: u32,
    /// The hop limit written into each encapsulation.
    pub hop_limit: u8,
    /// TTL / hop limit of the outer IP header.
    pub outer_ttl: u8,
}

impl Default for Overlay {
    fn default() -> Self {
        Overlay {
            port: DEFAULT_PORT,
            vni: 0,
            hop_limit: DEFAULT_HOP_LIMIT,
            outer_ttl: 64,
        }
    }
}

/// `[neighbours]`: frames held while a neighbour's MAC address is
/// resolved (docs/dataplane-config.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Neighbours {
    /// Frames on hold at most per worker, for all neighbours together.
    pub hold_frames: u32,
    /// Bytes on hold at most per neighbour (Linux: `unres_qlen_bytes`).
    pub hold_bytes: u32,
    /// How long a frame waits at most, in milliseconds.
    pub hold_ms: u32,
}

impl Default for Neighbours {
    fn default() -> Self {
        let limits = HoldLimits::default();
        Neighbours {
            hold_frames: limits.frames as u32,
            hold_bytes: limits.bytes_per_neighbour as u32,
            hold_ms: limits.max_age.as_millis() as u32,
        }
    }
}

impl Neighbours {
    pub fn limits(&self) -> HoldLimits {
        HoldLimits {
            frames: self.hold_frames as usize,
            bytes_per_neighbour: self.hold_bytes as usize,
            max_age: Duration::from_millis(u64::from(self.hold_ms)),
        }
    }
}

/// `[icmp]`: how often one LAN sender is answered with an ICMP error.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Icmp {
    /// Answers per second per source; 0: no limit.
    pub rate_per_s: u32,
    /// Answers in a row before the rate applies.
    pub burst: u32,
}

impl Default for Icmp {
    fn default() -> Self {
        let rate = IcmpRate::default();
        Icmp {
            rate_per_s: rate.per_second,
            burst: rate.burst,
        }
    }
}

impl Icmp {
    pub fn rate(&self) -> IcmpRate {
        IcmpRate {
            per_second: self.rate_per_s,
            burst: self.burst,
        }
    }
}

/// `[api]`: the local control socket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Api {
    pub socket: PathBuf,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            socket: PathBuf::from(DEFAULT_API_SOCKET),
        }
    }
}

/// `[metrics]`: the Prometheus endpoint, off unless `listen` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    pub listen: Option<std::net::SocketAddr>,
}

/// The file as written: the two required keys may come from flags instead.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub node_id: Option<u16>,
    pub wan: Option<InterfaceSection>,
    pub lan: Option<InterfaceSection>,
    #[serde(default)]
    pub xdp: Xdp,
    #[serde(default)]
    pub afxdp: AfXdp,
    #[serde(default)]
    pub overlay: Overlay,
    #[serde(default)]
    pub neighbours: Neighbours,
    #[serde(default)]
    pub icmp: Icmp,
    #[serde(default)]
    pub api: Api,
    #[serde(default)]
    pub metrics: Metrics,
    /// The file and its text, to name the line of a value the checks refuse.
    #[serde(skip)]
    source: Option<(PathBuf, String)>,
    /// Keys whose value a flag gave, not the file.
    #[serde(skip)]
    from_flags: Vec<&'static str>,
}

/// `[wan]` and `[lan]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSection {
    pub interface: String,
}

/// The CPUs this process may run on: its affinity mask
/// (`sched_getaffinity`, which `isolcpus`, `taskset` and systemd's
/// `CPUAffinity=` narrow), in order; every CPU if it cannot be read.
pub fn usable_cores() -> Vec<usize> {
    let mut cores: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    if cores.is_empty() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        cores = (0..cpus).collect();
    }
    cores.sort_unstable();
    cores
}

/// What is wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    /// A value that parsed but cannot be used; `at` is the file and line
    /// it was read from (`None` for a flag's, or a missing key).
    #[error("{}{key}: {reason}", .at.as_ref().map(|(path, line)| format!("{}: line {line}: ", path.display())).unwrap_or_default())]
    Invalid {
        key: &'static str,
        reason: String,
        at: Option<(PathBuf, usize)>,
    },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
        at: None,
    }
}

/// The line, from 1, of the value of dotted `key` in TOML `text`, if the
/// text sets it.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let document = toml::de::DeTable::parse(text).ok()?;
    let mut table = document.get_ref();
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let (_, value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == part)?;
        if parts.peek().is_none() {
            let start = value.span().start;
            return Some(text[..start].matches('\n').count() + 1);
        }
        match value.get_ref() {
            toml::de::DeValue::Table(t) => table = t,
            _ => return None,
        }
    }
    None
}

impl ConfigFile {
    /// Reads and parses a configuration file (not yet checked).
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        ConfigFile::from_text(path, text)
    }

    /// Parses the text of the file at `path` (not yet checked); errors
    /// name the file, and the checks' errors its line too.
    pub fn from_text(path: &Path, text: String) -> Result<ConfigFile, ConfigError> {
        let mut file = ConfigFile::parse(&text).map_err(|reason| ConfigError::Parse {
            path: path.to_owned(),
            reason,
        })?;
        file.source = Some((path.to_owned(), text));
        Ok(file)
    }

    /// Notes that a flag set `key`, so that an error about it names no
    /// line of the file.
    pub fn set_by_flag(&mut self, key: &'static str) {
        self.from_flags.push(key);
    }

    /// Parses TOML text; the error is the parser's message, after the line
    /// and column it points at and followed by that line.
    pub fn parse(text: &str) -> Result<ConfigFile, String> {
        toml::from_str(text)
            .map_err(|e| describe_parse_error(text, e.message(), e.span().map(|s| s.start)))
    }

    /// Checks everything and returns the complete configuration.
    /// `cpus` are the CPUs the workers may run on (the process's affinity,
    /// [`usable_cores`]).
    pub fn check(mut self, cpus: &[usize]) -> Result<Config, ConfigError> {
        let source = self.source.take();
        let from_flags = std::mem::take(&mut self.from_flags);
        self.check_values(cpus).map_err(|e| match (e, source) {
            (ConfigError::Invalid { key, reason, .. }, Some((path, text)))
                if !from_flags.contains(&key) =>
            {
                ConfigError::Invalid {
                    key,
                    reason,
                    at: line_of(&text, key).map(|line| (path, line)),
                }
            }
            (e, _) => e,
        })
    }

    fn check_values(self, cpus: &[usize]) -> Result<Config, ConfigError> {
        let node_id = self
            .node_id
            .ok_or_else(|| invalid("node_id", "missing (set it in the file or with --node-id)"))?;
        let node_id = NodeId(node_id);
        if !node_id.is_valid() {
            return Err(invalid("node_id", "0 and 65535 are reserved"));
        }
        let wan = self.wan.ok_or_else(|| {
            invalid(
                "wan.interface",
                "missing (set it in the file or with --wan)",
            )
        })?;
        check_interface("wan.interface", &wan.interface)?;
        let lan = match self.lan {
            Some(lan) => {
                check_interface("lan.interface", &lan.interface)?;
                if lan.interface == wan.interface {
                    return Err(invalid(
                        "lan.interface",
                        "the same interface as wan.interface",
                    ));
                }
                Some(lan.interface)
            }
            None => None,
        };
        check_afxdp(&self.afxdp, cpus)?;
        check_overlay(&self.overlay)?;
        check_neighbours(&self.neighbours, &self.afxdp)?;
        check_icmp(&self.icmp)?;
        if self.api.socket.as_os_str().is_empty() {
            return Err(invalid("api.socket", "empty path"));
        }
        if let Some(listen) = self.metrics.listen
            && listen.port() == 0
        {
            return Err(invalid(
                "metrics.listen",
                format!("{listen}: port 0 is no port to scrape"),
            ));
        }
        Ok(Config {
            node_id,
            wan: wan.interface,
            lan,
            xdp: self.xdp,
            afxdp: self.afxdp,
            overlay: self.overlay,
            neighbours: self.neighbours,
            icmp: self.icmp,
            api: self.api,
            metrics: self.metrics,
        })
    }
}

fn check_interface(key: &'static str, name: &str) -> Result<(), ConfigError> {
    // IFNAMSIZ is 16 with the terminating NUL.
    let bad = name.is_empty()
        || name.len() > 15
        || name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        return Err(invalid(
            key,
            format!("{name:?} is not an interface name (1 to 15 characters, no '/', ':' or space)"),
        ));
    }
    Ok(())
}

fn check_afxdp(a: &AfXdp, cpus: &[usize]) -> Result<(), ConfigError> {
    if a.queues.is_empty() {
        return Err(invalid("afxdp.queues", "at least one queue"));
    }
    for (i, q) in a.queues.iter().enumerate() {
        if *q >= MAX_QUEUES {
            return Err(invalid(
                "afxdp.queues",
                format!("queue {q} is beyond the {MAX_QUEUES} the XDP socket maps hold"),
            ));
        }
        if a.queues[..i].contains(q) {
            return Err(invalid(
                "afxdp.queues",
                format!("queue {q} is listed twice"),
            ));
        }
    }
    if !a.cores.is_empty() {
        if a.cores.len() != a.queues.len() {
            return Err(invalid(
                "afxdp.cores",
                format!(
                    "{} cores for {} queues: give one core per queue, or none to choose automatically",
                    a.cores.len(),
                    a.queues.len()
                ),
            ));
        }
        if let Some(c) = a.cores.iter().find(|c| !cpus.contains(c)) {
            return Err(invalid(
                "afxdp.cores",
                format!(
                    "core {c} is not one this process may run on (its CPU affinity: {})",
                    cpus.iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    let power_of_two = |n: u32| n.is_power_of_two();
    if !power_of_two(a.ring_size) || !(64..=16384).contains(&a.ring_size) {
        return Err(invalid(
            "afxdp.ring_size",
            format!("{} is not a power of two from 64 to 16384", a.ring_size),
        ));
    }
    if a.batch_size == 0 || a.batch_size > a.ring_size {
        return Err(invalid(
            "afxdp.batch_size",
            format!(
                "{} is not from 1 to ring_size ({})",
                a.batch_size, a.ring_size
            ),
        ));
    }
    if a.frame_size != 2048 && a.frame_size != 4096 {
        return Err(invalid(
            "afxdp.frame_size",
            format!(
                "{} is not 2048 or 4096 (the sizes AF_XDP supports)",
                a.frame_size
            ),
        ));
    }
    // Each queue's UMEM feeds two fill rings (WAN and LAN) and has frames in
    // flight on two TX rings: less than that starves a ring.
    let least = 4 * a.ring_size;
    if a.frame_count < least || a.frame_count > 1 << 20 {
        return Err(invalid(
            "afxdp.frame_count",
            format!(
                "{} is not from 4 × ring_size ({least}) to 1048576",
                a.frame_count
            ),
        ));
    }
    Ok(())
}

fn check_neighbours(n: &Neighbours, a: &AfXdp) -> Result<(), ConfigError> {
    // Held frames keep their UMEM buffers from the rings: an eighth of them
    // at most leaves the rings fed.
    let most = a.frame_count / 8;
    if n.hold_frames > most {
        return Err(invalid(
            "neighbours.hold_frames",
            format!(
                "{} is more than an eighth of afxdp.frame_count ({most}): held frames would starve the rings",
                n.hold_frames
            ),
        ));
    }
    if n.hold_ms > 60_000 {
        return Err(invalid(
            "neighbours.hold_ms",
            format!("{} ms: a frame held over a minute helps no one", n.hold_ms),
        ));
    }
    Ok(())
}

fn check_icmp(i: &Icmp) -> Result<(), ConfigError> {
    if i.rate_per_s > 1_000_000_000 {
        return Err(invalid(
            "icmp.rate_per_s",
            format!("{}: at most one answer a nanosecond", i.rate_per_s),
        ));
    }
    if i.rate_per_s > 0 && i.burst == 0 {
        return Err(invalid(
            "icmp.burst",
            "0 would answer nothing; set icmp.rate_per_s = 0 for no limit, or a burst of 1 or more",
        ));
    }
    Ok(())
}

fn check_overlay(o: &Overlay) -> Result<(), ConfigError> {
    if o.port == 0 {
        return Err(invalid("overlay.port", "0 is not a port"));
    }
    if o.vni >= 1 << 24 {
        return Err(invalid(
            "overlay.vni",
            format!("{} does not fit in 24 bits", o.vni),
        ));
    }
    if o.hop_limit < 2 {
        return Err(invalid(
            "overlay.hop_limit",
            format!("{}: a path through a relay needs at least 2", o.hop_limit),
        ));
    }
    if o.outer_ttl == 0 {
        return Err(invalid(
            "overlay.outer_ttl",
            "0 would be dropped by the first router",
        ));
    }
    Ok(())
}

/// Deserializes a value through its `FromStr`, keeping its error message.
fn from_str<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let s = String::deserialize(d)?;
    s.parse()
        .map_err(|e: T::Err| serde::de::Error::custom(format!("{s:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
node_id = 3

[wan]
interface = "eth0"

[lan]
interface = "eth1"

[xdp]
mode = "skb"
replace = true
no_socket = "drop"

[afxdp]
queues = [0, 1]
cores = [1, 0]
zero_copy = "off"
batch_size = 32
ring_size = 1024
frame_size = 2048
frame_count = 4096
busy_poll = true

[overlay]
port = 7000
vni = 42
hop_limit = 3
outer_ttl = 32

[neighbours]
hold_frames = 100
hold_bytes = 65536
hold_ms = 500

[icmp]
rate_per_s = 100
burst = 10

[api]
socket = "/tmp/dp.sock"

[metrics]
listen = "127.0.0.1:9481"
"#;

    fn check(text: &str) -> Result<Config, ConfigError> {
        ConfigFile::from_text(Path::new("t.toml"), text.to_owned())?.check(&[0, 1])
    }

    #[test]
    fn every_key_is_read() {
        let c = check(FULL).unwrap();
        assert_eq!(c.node_id, NodeId(3));
        assert_eq!((c.wan.as_str(), c.lan.as_deref()), ("eth0", Some("eth1")));
        assert_eq!(
            c.xdp,
            Xdp {
                mode: AttachMode::Skb,
                replace: true,
                no_socket: NoSocket::Drop
            }
        );
        assert_eq!(
            c.afxdp,
            AfXdp {
                queues: vec![0, 1],
                cores: vec![1, 0],
                zero_copy: ZeroCopy::Off,
                batch_size: 32,
                ring_size: 1024,
                frame_size: 2048,
                frame_count: 4096,
                busy_poll: true,
            }
        );
        assert_eq!(
            c.overlay,
            Overlay {
                port: 7000,
                vni: 42,
                hop_limit: 3,
                outer_ttl: 32
            }
        );
        assert_eq!(
            c.neighbours.limits(),
            HoldLimits {
                frames: 100,
                bytes_per_neighbour: 65536,
                max_age: Duration::from_millis(500),
            }
        );
        assert_eq!(
            c.icmp.rate(),
            IcmpRate {
                per_second: 100,
                burst: 10
            }
        );
        assert_eq!(c.api.socket, PathBuf::from("/tmp/dp.sock"));
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9481".parse().unwrap()));
    }

    #[test]
    fn the_operations_guide_example_is_valid() {
        let doc = include_str!("../../docs/operations.md");
        // The first TOML block is site A's dataplane.toml.
        let example = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("docs/operations.md has site A's dataplane.toml");
        let c = check(example).unwrap();
        assert_eq!((c.node_id, c.lan.as_deref()), (NodeId(1), Some("eth1")));
        assert_eq!(c.afxdp.queues, [0, 1, 2, 3]);
    }

    #[test]
    fn two_keys_are_enough() {
        let c = check("node_id = 1\n[wan]\ninterface = \"wan0\"\n").unwrap();
        assert_eq!(c.afxdp, AfXdp::default());
        assert_eq!(c.overlay, Overlay::default());
        assert_eq!(c.xdp, Xdp::default());
        assert_eq!(c.lan, None);
        assert_eq!(c.metrics.listen, None, "metrics are off by default");
        assert_eq!(c.neighbours.limits(), HoldLimits::default());
        assert_eq!(c.neighbours.hold_bytes, 212_992, "Linux's unres_qlen_bytes");
        assert_eq!(c.icmp.rate(), IcmpRate::default());
    }

    #[test]
    fn each_bad_value_names_its_file_line_and_key() {
        let cases = [
            (
                "node_id = 3",
                "node_id = 0",
                "node_id: 0 and 65535 are reserved",
            ),
            ("node_id = 3\n", "", "node_id: missing"),
            (
                "hold_frames = 100",
                "hold_frames = 600",
                "neighbours.hold_frames: 600 is more than an eighth of afxdp.frame_count (512)",
            ),
            (
                "hold_ms = 500",
                "hold_ms = 70000",
                "neighbours.hold_ms: 70000 ms",
            ),
            (
                "burst = 10",
                "burst = 0",
                "icmp.burst: 0 would answer nothing",
            ),
            (
                "listen = \"127.0.0.1:9481\"",
                "listen = \"127.0.0.1:0\"",
                "metrics.listen: 127.0.0.1:0: port 0 is no port to scrape",
            ),
            (
                "interface = \"eth1\"",
                "interface = \"eth0\"",
                "lan.interface: the same interface",
            ),
            (
                "interface = \"eth0\"",
                "interface = \"a/b\"",
                "wan.interface: \"a/b\" is not",
            ),
            (
                "queues = [0, 1]",
                "queues = [1, 1]",
                "afxdp.queues: queue 1 is listed twice",
            ),
            (
                "queues = [0, 1]",
                "queues = [0, 64]",
                "afxdp.queues: queue 64 is beyond",
            ),
            (
                "queues = [0, 1]",
                "queues = []",
                "afxdp.queues: at least one queue",
            ),
            (
                "cores = [1, 0]",
                "cores = [1]",
                "afxdp.cores: 1 cores for 2 queues",
            ),
            (
                "cores = [1, 0]",
                "cores = [1, 5]",
                "afxdp.cores: core 5 is not one this process may run on (its CPU affinity: 0, 1)",
            ),
            (
                "ring_size = 1024",
                "ring_size = 1000",
                "afxdp.ring_size: 1000 is not a power of two",
            ),
            (
                "batch_size = 32",
                "batch_size = 0",
                "afxdp.batch_size: 0 is not from 1",
            ),
            (
                "frame_size = 2048",
                "frame_size = 3000",
                "afxdp.frame_size: 3000 is not 2048 or 4096",
            ),
            (
                "frame_count = 4096",
                "frame_count = 100",
                "afxdp.frame_count: 100 is not from",
            ),
            ("port = 7000", "port = 0", "overlay.port: 0 is not a port"),
            (
                "vni = 42",
                "vni = 16777216",
                "overlay.vni: 16777216 does not fit",
            ),
            (
                "hop_limit = 3",
                "hop_limit = 1",
                "overlay.hop_limit: 1: a path through a relay",
            ),
            (
                "outer_ttl = 32",
                "outer_ttl = 0",
                "overlay.outer_ttl: 0 would be dropped",
            ),
            (
                "mode = \"skb\"",
                "mode = \"fast\"",
                "unknown XDP mode \"fast\"",
            ),
            (
                "no_socket = \"drop\"",
                "no_socket = \"keep\"",
                "\"keep\": expected pass or drop",
            ),
            (
                "zero_copy = \"off\"",
                "zero_copy = \"yes\"",
                "\"yes\": expected auto, on or off",
            ),
            (
                "batch_size = 32",
                "bach_size = 32",
                "unknown field `bach_size`",
            ),
            (
                "port = 7000",
                "port = 70000",
                "t.toml: line 26, column 8: invalid value: integer `70000`",
            ),
        ];
        for (from, to, expected) in cases {
            assert!(FULL.contains(from), "{from}");
            let text = FULL.replacen(from, to, 1);
            let err = check(&text).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{to:?}: got {err:?}, expected {expected:?}"
            );
            // The file and the line of the value, but for a missing key.
            if !to.is_empty() {
                let line = FULL[..FULL.find(from).unwrap()].matches('\n').count() + 1;
                assert!(
                    err.starts_with(&format!("t.toml: line {line}")),
                    "{to:?}: {err:?} does not name line {line}"
                );
            }
        }
    }
}
