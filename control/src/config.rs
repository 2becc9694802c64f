//! The control process's configuration: a TOML file, the key files it
//! names, and the checks that keep a bad value from starting anything.
//!
//! Only `node_id`, `private_key_file`, `underlay` and each peer's `id`,
//! `underlay` and `public_key` are required; every other key
//! has a default, taken from the routing core's own defaults
//! ([`ProbeConfig`], [`LinkStateConfig`], [`NodeConfig`]). A file with a key
//! the control process does not know is refused, so that a typo never
//! silently becomes a default.
//!
//! Every error names the file, the line and the key: the parser's errors
//! (syntax, types, unknown keys) by the line and column it reports, the
//! checks here by the line of the value they refuse, which the parsed file
//! keeps ([`toml::Spanned`]). Only a required key that is missing has no
//! line to name. The reference with every key is `docs/control-config.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use detour_common::source_text::describe_parse_error;
use detour_common::wire::NodeId;
use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;
use zeroize::Zeroizing;

use crate::keys::{KeyError, PresharedKey, PrivateKey, PublicKey};
use crate::linkstate::LinkStateConfig;
use crate::node::NodeConfig;
use crate::paths::{Hop, Hysteresis, Metric, Policy, check_relay};
use crate::probe::ProbeConfig;
use crate::session::{Encryption, Limits, PeerKeys};

/// The control port, where probes and link state arrive, unless
/// `control.listen` says otherwise; peers are reached on it too unless
/// their `port` says otherwise.
pub const DEFAULT_PORT: u16 = 6082;
/// Where the control process listens unless configured otherwise.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT);
/// The dataplane's local API (`detour-dataplane`'s own default).
pub const DEFAULT_DATAPLANE_SOCKET: &str = "/run/detour/dataplane.sock";
/// Where the control process's local API listens unless configured
/// otherwise.
pub const DEFAULT_API_SOCKET: &str = "/run/detour/control.sock";
/// The longest any `_ms` key may be: an hour. Longer is a typo, not a
/// setting (a link down for an hour before anyone notices is no overlay).
pub const MAX_MS: u64 = 3_600_000;
/// The most probes loss may be measured over.
pub const MAX_LOSS_WINDOW: usize = 1000;

/// A complete, checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: NodeId,
    /// This node's identity, read from `private_key_file`.
    pub private_key: PrivateKey,
    /// The control socket's address.
    pub listen: SocketAddr,
    /// This node's underlay address, where its peers reach it.
    pub underlay: IpAddr,
    /// The site prefixes this node serves.
    pub prefixes: Vec<IpNet>,
    /// Every other node of the overlay, by ascending id.
    pub peers: Vec<Peer>,
    /// Probing, link state, routing policy and computation pace.
    pub node: NodeConfig,
    /// The dataplane's API socket, where routes are installed; `None`
    /// (`dataplane.install = false`) runs without a dataplane, e.g. a node
    /// that only probes and relays link state.
    pub dataplane_socket: Option<PathBuf>,
    /// The control process's own API socket.
    pub api_socket: PathBuf,
    /// Where the Prometheus endpoint listens; `None`: off.
    pub metrics_listen: Option<SocketAddr>,
    /// Whether overlay data is encrypted end to end (`encryption`).
    pub encryption: Encryption,
    /// Session timers (`[session]`).
    pub session: Limits,
}

/// Another node of the overlay.
#[derive(Debug, Clone)]
pub struct Peer {
    pub id: NodeId,
    /// Its identity: only a handshake under this key speaks for it.
    pub public_key: PublicKey,
    /// The pair's pre-shared key, from `preshared_key_file`; all zeros
    /// when none is set.
    pub preshared_key: PresharedKey,
    pub underlay: IpAddr,
    /// Its control port: `control.listen`'s port unless configured.
    pub port: u16,
    /// The site prefixes it serves.
    pub prefixes: Vec<IpNet>,
}

impl Peer {
    /// What the session endpoint needs of it.
    pub fn session_keys(&self) -> PeerKeys {
        PeerKeys {
            id: self.id,
            public: self.public_key,
            psk: self.preshared_key.clone(),
        }
    }

    /// Where its control process listens.
    pub fn control_addr(&self) -> SocketAddr {
        SocketAddr::new(self.underlay, self.port)
    }
}

impl Config {
    /// Reads, parses and checks the file at `path`, and reads the key file
    /// it names.
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        ConfigFile::read(path)?.check(path)
    }

    /// Parses and checks `text`, the content of the file at `path`: `path`
    /// names it in errors, and relative key files are relative to its
    /// directory.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        ConfigFile::parse(text)
            .map_err(|reason| ConfigError::Parse {
                path: path.to_owned(),
                reason,
            })?
            .check(path)
    }
}

/// The file as written, each value that a check may refuse with the span
/// of its text.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub node_id: Option<Spanned<u16>>,
    pub private_key_file: Option<Spanned<PathBuf>>,
    /// The shared overlay key of detour before per-node keys: refused,
    /// with the way to migrate.
    pub key_file: Option<Spanned<PathBuf>>,
    pub underlay: Option<Spanned<IpAddr>>,
    #[serde(default)]
    pub prefixes: Vec<Spanned<IpNet>>,
    /// `"aead"` (the default) or `"none"`.
    pub encryption: Option<Spanned<String>>,
    #[serde(default)]
    pub control: ControlSection,
    #[serde(default)]
    pub peers: Vec<PeerSection>,
    #[serde(default)]
    pub probe: ProbeSection,
    #[serde(default)]
    pub linkstate: LinkStateSection,
    #[serde(default)]
    pub routing: RoutingSection,
    #[serde(default)]
    pub dataplane: DataplaneSection,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub session: SessionSection,
    /// Where the lines of the parsed text start, to turn spans into lines.
    #[serde(skip)]
    lines: Lines,
}

/// `[session]`: the sessions' timers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSection {
    /// Seconds after which a session's initiator starts a new one.
    pub rekey_after_s: Option<Spanned<u64>>,
}

/// The range `session.rekey_after_s` may take: no longer than WireGuard's
/// 120 s, and not so short that handshakes become most of the control
/// traffic.
pub const REKEY_AFTER_S: std::ops::RangeInclusive<u64> = 10..=120;

/// `[metrics]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub listen: Option<Spanned<SocketAddr>>,
}

/// `[control]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    pub listen: Option<Spanned<SocketAddr>>,
}

/// One `[[peers]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    pub id: Spanned<u16>,
    pub public_key: Option<Spanned<String>>,
    pub preshared_key_file: Option<Spanned<PathBuf>>,
    pub underlay: Spanned<IpAddr>,
    pub port: Option<Spanned<u16>>,
    #[serde(default)]
    pub prefixes: Vec<Spanned<IpNet>>,
}

/// `[probe]`: [`ProbeConfig`], durations in milliseconds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSection {
    pub interval_ms: Option<Spanned<u64>>,
    pub retry_interval_ms: Option<Spanned<u64>>,
    pub down_after: Option<Spanned<u32>>,
    pub up_after: Option<Spanned<u32>>,
    pub min_timeout_ms: Option<Spanned<u64>>,
    pub max_timeout_ms: Option<Spanned<u64>>,
    pub initial_timeout_ms: Option<Spanned<u64>>,
    pub loss_window: Option<Spanned<usize>>,
}

/// `[linkstate]`: [`LinkStateConfig`], durations in milliseconds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkStateSection {
    pub min_interval_ms: Option<Spanned<u64>>,
    pub max_age_ms: Option<Spanned<u64>>,
}

/// `[routing]`: the [`Policy`] and the pace of route computation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSection {
    pub metric: Option<Spanned<String>>,
    pub hysteresis: Option<bool>,
    #[serde(default)]
    pub drain: Vec<Spanned<u16>>,
    /// This node drained from the start.
    pub drained: Option<bool>,
    /// Destination id (a TOML key is a string) to `"direct"` or
    /// `"via <relay id>"`.
    #[serde(default)]
    pub pins: BTreeMap<Spanned<String>, Spanned<String>>,
    pub compute_interval_ms: Option<Spanned<u64>>,
}

/// `[dataplane]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneSection {
    pub socket: Option<Spanned<PathBuf>>,
    pub install: Option<bool>,
}

/// `[api]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    pub socket: Option<Spanned<PathBuf>>,
}

/// What is wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("{path}: {reason}")]
    Read { path: PathBuf, reason: String },
    /// Not TOML, or not this configuration's shape (a wrong type, an
    /// unknown key); the reason starts with the line and column.
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    /// A value that parsed but cannot be used, on `line` (`None` for a
    /// required key that is missing).
    #[error("{path}: {}{key}: {reason}", At(*.line))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        reason: String,
    },
    /// The key file `file`, which `key` names on `line`, gave no usable
    /// key.
    #[error("{path}: {}{key} {file}: {reason}", At(Some(*.line)))]
    KeyFile {
        path: PathBuf,
        line: usize,
        key: &'static str,
        file: PathBuf,
        reason: KeyFileError,
    },
}

/// `line N: ` before a key, when there is a line.
struct At(Option<usize>);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, "line {line}: "),
            None => Ok(()),
        }
    }
}

/// Why a key file gave no key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    /// Opening or reading it failed; the OS's reason.
    #[error("{0}")]
    Unreadable(String),
    #[error("not a regular file")]
    NotAFile,
    /// Its permission bits: group or others may read or write it.
    #[error("mode {0:04o} lets others read the key; chmod 600 it")]
    Exposed(u32),
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// The longest key file read.
const MAX_KEY_FILE: u64 = 4096;

/// Reads a key from the file at `path`: base64, surrounding whitespace
/// ignored, in a file that only its owner may read (no group or other
/// permission bits), since whoever holds a node's private key speaks for
/// it.
pub fn read_key_file<K>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<K, KeyError>,
) -> Result<K, KeyFileError> {
    let unreadable = |e: std::io::Error| KeyFileError::Unreadable(e.to_string());
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    // The mode of the file opened, not of whatever the path names by now.
    let metadata = file.metadata().map_err(unreadable)?;
    if !metadata.is_file() {
        return Err(KeyFileError::NotAFile);
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Exposed(mode));
    }
    // 44 characters and some whitespace: a file much longer is no key
    // file, and is refused unread (a mistyped path could name a huge one).
    if metadata.len() > MAX_KEY_FILE {
        return Err(KeyError::NotBase64.into());
    }
    let mut bytes = Zeroizing::new(Vec::new());
    (&mut file)
        .take(MAX_KEY_FILE)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| KeyError::NotBase64)?;
    Ok(parse(text)?)
}

/// What refusing the old shared key says.
const KEY_FILE_IS_GONE: &str = "the shared overlay key is gone: every node has a key pair of its own. \
On each node run `detourctl genkey > /etc/detour/private.key` and `detourctl pubkey < /etc/detour/private.key`, \
set private_key_file, and give each [[peers]] the public_key its node printed \
(docs/control-config.md, \"Migrating from key_file\")";

/// The peer sections in the order [`Checker::peers`] returns the peers:
/// by id.
fn sorted(sections: &[PeerSection]) -> Vec<&PeerSection> {
    let mut sorted: Vec<&PeerSection> = sections.iter().collect();
    sorted.sort_unstable_by_key(|s| *s.id.get_ref());
    sorted
}

/// Byte offsets of the newlines of a text, to number its lines.
#[derive(Debug, Default, Clone)]
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Lines {
        Lines(text.match_indices('\n').map(|(i, _)| i).collect())
    }

    /// The line, from 1, of the byte at `offset`.
    fn line(&self, offset: usize) -> usize {
        self.0.partition_point(|&newline| newline < offset) + 1
    }
}

impl ConfigFile {
    /// Reads and parses a configuration file (not yet checked).
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        ConfigFile::parse(&text).map_err(|reason| ConfigError::Parse {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses TOML text; the error is the parser's message, after the line
    /// and column it points at and followed by that line, which names the
    /// key (the parser's message does not always).
    pub fn parse(text: &str) -> Result<ConfigFile, String> {
        let lines = Lines::new(text);
        let mut file: ConfigFile = toml::from_str(text)
            .map_err(|e| describe_parse_error(text, e.message(), e.span().map(|s| s.start)))?;
        file.lines = lines;
        Ok(file)
    }

    /// Checks everything, reads the key file, and returns the complete
    /// configuration. `path` is the file's (or, for text that came from
    /// elsewhere, the name errors give it): a relative `key_file` is
    /// relative to its directory.
    pub fn check(self, path: &Path) -> Result<Config, ConfigError> {
        let c = Checker {
            path,
            lines: &self.lines,
        };
        let node_id = c.required("node_id", &self.node_id)?;
        let node_id = c.node_id("node_id", node_id)?;
        if let Some(key_file) = &self.key_file {
            return Err(c.invalid(key_file, "key_file", KEY_FILE_IS_GONE));
        }
        let private_key_file = c.required("private_key_file", &self.private_key_file)?;
        let underlay = c.required("underlay", &self.underlay)?;
        c.underlay("underlay", underlay)?;
        let underlay = *underlay.get_ref();

        let listen = match &self.control.listen {
            Some(listen) => {
                if listen.get_ref().port() == 0 {
                    return Err(c.invalid(
                        listen,
                        "control.listen",
                        format!("{}: port 0 is no port peers can send to", listen.get_ref()),
                    ));
                }
                *listen.get_ref()
            }
            None => DEFAULT_LISTEN,
        };

        let mut prefixes = Prefixes::default();
        let own_prefixes = prefixes.add(&c, "prefixes", &self.prefixes)?;
        let peers = c.peers(node_id, listen.port(), &self.peers, &mut prefixes)?;
        let peer_ids: BTreeSet<NodeId> = peers.iter().map(|p| p.id).collect();

        let probe = c.probe(&self.probe)?;
        let node = NodeConfig {
            linkstate: c.linkstate(&self.linkstate, &probe, &self.probe)?,
            probe,
            policy: c.policy(node_id, &peer_ids, &self.routing)?,
            drained: self.routing.drained.unwrap_or(false),
            compute_interval: c.millis(
                "routing.compute_interval_ms",
                &self.routing.compute_interval_ms,
                NodeConfig::default().compute_interval,
                "route computations need a gap of at least 1 ms",
            )?,
        };

        let dataplane_socket = c.socket(
            "dataplane.socket",
            &self.dataplane.socket,
            DEFAULT_DATAPLANE_SOCKET,
        )?;
        let api_socket = c.socket("api.socket", &self.api.socket, DEFAULT_API_SOCKET)?;
        let install = self.dataplane.install.unwrap_or(true);
        if install && api_socket == dataplane_socket {
            // Blame the one that was set, api.socket if both were.
            let (key, at, other) = match &self.api.socket {
                Some(at) => ("api.socket", at, "dataplane.socket"),
                None => (
                    "dataplane.socket",
                    self.dataplane.socket.as_ref().expect("the defaults differ"),
                    "api.socket (the default)",
                ),
            };
            return Err(c.invalid(
                at,
                key,
                format!(
                    "{} is also {other}: the control process serves its own API on another socket than the dataplane's",
                    api_socket.display()
                ),
            ));
        }

        let metrics_listen = match &self.metrics.listen {
            Some(at) if at.get_ref().port() == 0 => {
                return Err(c.invalid(
                    at,
                    "metrics.listen",
                    format!("{}: port 0 is no port to scrape", at.get_ref()),
                ));
            }
            Some(at) => Some(*at.get_ref()),
            None => None,
        };

        let encryption = match &self.encryption {
            None => Encryption::Aead,
            Some(at) => match at.get_ref().as_str() {
                "aead" => Encryption::Aead,
                "none" => Encryption::None,
                other => {
                    return Err(c.invalid(
                        at,
                        "encryption",
                        format!("{other:?} is not \"aead\" (the default) or \"none\""),
                    ));
                }
            },
        };

        let session = c.session(&self.session)?;

        // The keys last: a file with a mistake in it is refused for that
        // mistake whatever the state of the keys.
        let private_key = c.key_file(
            "private_key_file",
            private_key_file,
            PrivateKey::from_base64,
        )?;
        let mut peers = peers;
        c.own_key_is_no_peers(&private_key.public_key(), &peers, &self.peers)?;
        for (peer, section) in peers.iter_mut().zip(sorted(&self.peers)) {
            if let Some(file) = &section.preshared_key_file {
                peer.preshared_key =
                    c.key_file("peers.preshared_key_file", file, PresharedKey::from_base64)?;
            }
        }

        Ok(Config {
            node_id,
            private_key,
            listen,
            underlay,
            prefixes: own_prefixes,
            peers,
            node,
            dataplane_socket: install.then_some(dataplane_socket),
            api_socket,
            metrics_listen,
            encryption,
            session,
        })
    }
}

/// The checks, with what they need to name the file and line.
struct Checker<'a> {
    path: &'a Path,
    lines: &'a Lines,
}

impl Checker<'_> {
    fn invalid_at(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line: span.map(|s| self.lines.line(s.start)),
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn invalid<T>(
        &self,
        at: &Spanned<T>,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) -> ConfigError {
        self.invalid_at(Some(at.span()), key, reason)
    }

    fn line<T>(&self, at: &Spanned<T>) -> usize {
        self.lines.line(at.span().start)
    }

    fn required<'v, T>(
        &self,
        key: &str,
        value: &'v Option<Spanned<T>>,
    ) -> Result<&'v Spanned<T>, ConfigError> {
        value
            .as_ref()
            .ok_or_else(|| self.invalid_at(None, key, "required, and not set"))
    }

    fn node_id(&self, key: &str, id: &Spanned<u16>) -> Result<NodeId, ConfigError> {
        let node = NodeId(*id.get_ref());
        if !node.is_valid() {
            return Err(self.invalid(
                id,
                key,
                format!("{node} is reserved: node ids are 1 to 65534"),
            ));
        }
        Ok(node)
    }

    fn underlay(&self, key: &str, address: &Spanned<IpAddr>) -> Result<(), ConfigError> {
        let a = address.get_ref();
        if a.is_unspecified() || a.is_multicast() {
            return Err(self.invalid(
                address,
                key,
                format!("{a} is no address a node can be reached at"),
            ));
        }
        Ok(())
    }

    fn peers(
        &self,
        local: NodeId,
        default_port: u16,
        sections: &[PeerSection],
        prefixes: &mut Prefixes,
    ) -> Result<Vec<Peer>, ConfigError> {
        let mut seen: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut peers = Vec::with_capacity(sections.len());
        for section in sections {
            let id = self.node_id("peers.id", &section.id)?;
            if id == local {
                return Err(self.invalid(
                    &section.id,
                    "peers.id",
                    format!("{id} is this node's node_id; list only the other nodes"),
                ));
            }
            if let Some(first) = seen.insert(id, self.line(&section.id)) {
                return Err(self.invalid(
                    &section.id,
                    "peers.id",
                    format!("{id} is listed twice (also at line {first})"),
                ));
            }
            self.underlay("peers.underlay", &section.underlay)?;
            let port = match &section.port {
                Some(port) if *port.get_ref() == 0 => {
                    return Err(self.invalid(port, "peers.port", "0 is not a port"));
                }
                Some(port) => *port.get_ref(),
                None => default_port,
            };
            let public_key = self.public_key(id, section, &peers, sections)?;
            peers.push(Peer {
                id,
                public_key,
                preshared_key: PresharedKey::default(),
                underlay: *section.underlay.get_ref(),
                port,
                prefixes: prefixes.add(self, "peers.prefixes", &section.prefixes)?,
            });
        }
        peers.sort_unstable_by_key(|p| p.id);
        Ok(peers)
    }

    /// The `public_key` of the peer `section`, which must be no other
    /// peer's (those in `before`, from `sections`).
    fn public_key(
        &self,
        id: NodeId,
        section: &PeerSection,
        before: &[Peer],
        sections: &[PeerSection],
    ) -> Result<PublicKey, ConfigError> {
        let Some(text) = &section.public_key else {
            return Err(self.invalid(
                &section.id,
                "peers.public_key",
                format!(
                    "peer {id} has no public_key: `detourctl pubkey < private.key` on that node prints it"
                ),
            ));
        };
        let key: PublicKey = text
            .get_ref()
            .parse()
            .map_err(|e: KeyError| self.invalid(text, "peers.public_key", e.to_string()))?;
        if let Some(other) = before.iter().find(|p| p.public_key == key) {
            let line = sections
                .iter()
                .find(|s| *s.id.get_ref() == other.id.0)
                .map_or(0, |s| self.line(&s.id));
            return Err(self.invalid(
                text,
                "peers.public_key",
                format!(
                    "the same key as peer {} (line {line}): every node has a key pair of its own",
                    other.id
                ),
            ));
        }
        Ok(key)
    }

    /// Refuses a peer listed under this node's own public key.
    fn own_key_is_no_peers(
        &self,
        own: &PublicKey,
        peers: &[Peer],
        sections: &[PeerSection],
    ) -> Result<(), ConfigError> {
        let Some(peer) = peers.iter().find(|p| p.public_key == *own) else {
            return Ok(());
        };
        let section = sections
            .iter()
            .find(|s| *s.id.get_ref() == peer.id.0)
            .expect("every peer has its section");
        let at = section.public_key.as_ref().expect("every peer has a key");
        Err(self.invalid(
            at,
            "peers.public_key",
            format!(
                "peer {} is given this node's own public key (from private_key_file): each node has a key pair of its own",
                peer.id
            ),
        ))
    }

    /// Reads the key file that `key` names at `file` (relative to the
    /// configuration's directory).
    fn key_file<K>(
        &self,
        key: &'static str,
        file: &Spanned<PathBuf>,
        parse: impl FnOnce(&str) -> Result<K, KeyError>,
    ) -> Result<K, ConfigError> {
        let full = match self.path.parent() {
            Some(dir) => dir.join(file.get_ref()),
            None => file.get_ref().clone(),
        };
        read_key_file(&full, parse).map_err(|reason| ConfigError::KeyFile {
            path: self.path.to_owned(),
            line: self.line(file),
            key,
            file: full.clone(),
            reason,
        })
    }

    /// A duration key in milliseconds: 1 to [`MAX_MS`], `default` when
    /// unset. `why_not_zero` ends the error for a zero.
    fn millis(
        &self,
        key: &str,
        value: &Option<Spanned<u64>>,
        default: Duration,
        why_not_zero: &str,
    ) -> Result<Duration, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let ms = *value.get_ref();
        if ms == 0 {
            return Err(self.invalid(value, key, format!("0 is not allowed; {why_not_zero}")));
        }
        if ms > MAX_MS {
            return Err(self.invalid(
                value,
                key,
                format!("{ms} is over the limit of {MAX_MS} (an hour)"),
            ));
        }
        Ok(Duration::from_millis(ms))
    }

    /// `[session]`: WireGuard's timers, or those for another rekey time.
    fn session(&self, s: &SessionSection) -> Result<Limits, ConfigError> {
        let Some(value) = &s.rekey_after_s else {
            return Ok(Limits::default());
        };
        let secs = *value.get_ref();
        if !REKEY_AFTER_S.contains(&secs) {
            return Err(self.invalid(
                value,
                "session.rekey_after_s",
                format!(
                    "{secs} is not from {} to {} (seconds)",
                    REKEY_AFTER_S.start(),
                    REKEY_AFTER_S.end()
                ),
            ));
        }
        Ok(Limits::rekeying_after(Duration::from_secs(secs)))
    }

    /// A count that must be at least 1.
    fn count<T: Copy + Into<u64>>(
        &self,
        key: &str,
        value: &Option<Spanned<T>>,
        default: T,
        why_not_zero: &str,
    ) -> Result<T, ConfigError> {
        match value {
            Some(v) if (*v.get_ref()).into() == 0 => {
                Err(self.invalid(v, key, format!("0 is not allowed; {why_not_zero}")))
            }
            Some(v) => Ok(*v.get_ref()),
            None => Ok(default),
        }
    }

    /// Refuses `low` above `high` (or equal to it, with `strict`), naming
    /// whichever of the two was set (the later one in the file if both
    /// were: the one that contradicts what came before).
    fn ordered(&self, low: Bound, high: Bound, strict: bool, why: &str) -> Result<(), ConfigError> {
        let fine = if strict {
            low.value < high.value
        } else {
            low.value <= high.value
        };
        if fine {
            return Ok(());
        }
        let blame_low = match (&low.span, &high.span) {
            (Some(l), Some(h)) => l.start > h.start,
            (l, _) => l.is_some(),
        };
        let (blamed, other, relation) = if blame_low {
            (
                &low,
                &high,
                if strict { "not less than" } else { "more than" },
            )
        } else {
            (
                &high,
                &low,
                if strict { "not more than" } else { "less than" },
            )
        };
        let default = if other.span.is_none() {
            ", the default"
        } else {
            ""
        };
        Err(self.invalid_at(
            blamed.span.clone(),
            blamed.key,
            format!(
                "{} is {relation} {} ({}{default}); {why}",
                blamed.value.as_millis(),
                other.key,
                other.value.as_millis()
            ),
        ))
    }

    fn probe(&self, s: &ProbeSection) -> Result<ProbeConfig, ConfigError> {
        let d = ProbeConfig::default();
        let timeout = "a probe needs at least 1 ms to be answered";
        let config = ProbeConfig {
            interval: self.millis(
                "probe.interval_ms",
                &s.interval_ms,
                d.interval,
                "probes need a gap of at least 1 ms",
            )?,
            retry_interval: self.millis(
                "probe.retry_interval_ms",
                &s.retry_interval_ms,
                d.retry_interval,
                "re-probes need a gap of at least 1 ms",
            )?,
            down_after: self.count(
                "probe.down_after",
                &s.down_after,
                d.down_after,
                "a link goes down after at least one lost probe",
            )?,
            up_after: self.count(
                "probe.up_after",
                &s.up_after,
                d.up_after,
                "a link comes up after at least one answer",
            )?,
            min_timeout: self.millis(
                "probe.min_timeout_ms",
                &s.min_timeout_ms,
                d.min_timeout,
                timeout,
            )?,
            max_timeout: self.millis(
                "probe.max_timeout_ms",
                &s.max_timeout_ms,
                d.max_timeout,
                timeout,
            )?,
            initial_timeout: self.millis(
                "probe.initial_timeout_ms",
                &s.initial_timeout_ms,
                d.initial_timeout,
                timeout,
            )?,
            loss_window: match &s.loss_window {
                Some(w) if !(1..=MAX_LOSS_WINDOW).contains(w.get_ref()) => {
                    return Err(self.invalid(
                        w,
                        "probe.loss_window",
                        format!("{} is not from 1 to {MAX_LOSS_WINDOW} probes", w.get_ref()),
                    ));
                }
                Some(w) => *w.get_ref(),
                None => d.loss_window,
            },
        };
        self.ordered(
            Bound::millis(
                "probe.retry_interval_ms",
                config.retry_interval,
                &s.retry_interval_ms,
            ),
            Bound::millis("probe.interval_ms", config.interval, &s.interval_ms),
            false,
            "re-probes after a loss come at least as often as steady probes",
        )?;
        self.ordered(
            Bound::millis(
                "probe.min_timeout_ms",
                config.min_timeout,
                &s.min_timeout_ms,
            ),
            Bound::millis(
                "probe.max_timeout_ms",
                config.max_timeout,
                &s.max_timeout_ms,
            ),
            false,
            "they are the probe timeout's lower and upper bounds",
        )?;
        Ok(config)
    }

    fn linkstate(
        &self,
        s: &LinkStateSection,
        probe: &ProbeConfig,
        probe_section: &ProbeSection,
    ) -> Result<LinkStateConfig, ConfigError> {
        let d = LinkStateConfig::default();
        let config = LinkStateConfig {
            min_interval: self.millis(
                "linkstate.min_interval_ms",
                &s.min_interval_ms,
                d.min_interval,
                "changes need a gap of at least 1 ms",
            )?,
            max_age: self.millis(
                "linkstate.max_age_ms",
                &s.max_age_ms,
                d.max_age,
                "a row must be kept at least 1 ms",
            )?,
        };
        self.ordered(
            Bound::millis(
                "probe.interval_ms",
                probe.interval,
                &probe_section.interval_ms,
            ),
            Bound::millis("linkstate.max_age_ms", config.max_age, &s.max_age_ms),
            true,
            "a row lives on while its origin's probes come, so it must outlive the gap between them",
        )?;
        Ok(config)
    }

    fn policy(
        &self,
        local: NodeId,
        peers: &BTreeSet<NodeId>,
        s: &RoutingSection,
    ) -> Result<Policy, ConfigError> {
        let metric = match &s.metric {
            Some(name) => name
                .get_ref()
                .parse::<Metric>()
                .map_err(|e| self.invalid(name, "routing.metric", e.to_string()))?,
            None => Metric::default(),
        };
        let hysteresis = if s.hysteresis.unwrap_or(true) {
            Hysteresis::for_metric(metric)
        } else {
            Hysteresis::OFF
        };

        let mut drained = BTreeSet::new();
        for id in &s.drain {
            let node = self.node_id("routing.drain", id)?;
            if node == local {
                return Err(self.invalid(
                    id,
                    "routing.drain",
                    format!(
                        "{node} is this node: `routing.drained = true` drains this node for every other node"
                    ),
                ));
            }
            self.peer(peers, "routing.drain", id, node)?;
            if !drained.insert(node) {
                return Err(self.invalid(id, "routing.drain", format!("{node} is listed twice")));
            }
        }

        let mut pins = BTreeMap::new();
        for (dst, hop) in &s.pins {
            let key = format!("routing.pins.{}", dst.get_ref());
            let dst_id = match dst.get_ref().parse::<u16>() {
                Ok(id) => self.node_id(&key, &Spanned::new(dst.span(), id))?,
                Err(_) => {
                    return Err(self.invalid(
                        dst,
                        &key,
                        format!("{:?} is not a node id", dst.get_ref()),
                    ));
                }
            };
            if dst_id == local {
                return Err(self.invalid(
                    dst,
                    &key,
                    format!("{dst_id} is this node, which needs no path"),
                ));
            }
            self.peer(peers, &key, dst, dst_id)?;
            let parsed = hop
                .get_ref()
                .parse::<Hop>()
                .map_err(|reason| self.invalid(hop, &key, reason))?;
            if let Hop::Via(relay) = parsed
                && let Err(reason) = check_relay(local, dst_id, relay, |n| peers.contains(&n))
            {
                return Err(self.invalid(hop, &key, reason));
            }
            if pins.insert(dst_id, parsed).is_some() {
                return Err(self.invalid(dst, &key, format!("node {dst_id} is pinned twice")));
            }
        }

        Ok(Policy {
            metric,
            hysteresis,
            pins,
            drained,
        })
    }

    fn peer<T>(
        &self,
        peers: &BTreeSet<NodeId>,
        key: &str,
        at: &Spanned<T>,
        node: NodeId,
    ) -> Result<(), ConfigError> {
        if peers.contains(&node) {
            Ok(())
        } else {
            Err(self.invalid(
                at,
                key,
                format!("{node} is not a peer (no [[peers]] has that id)"),
            ))
        }
    }

    fn socket(
        &self,
        key: &str,
        value: &Option<Spanned<PathBuf>>,
        default: &str,
    ) -> Result<PathBuf, ConfigError> {
        match value {
            Some(path) if path.get_ref().as_os_str().is_empty() => {
                Err(self.invalid(path, key, "empty path"))
            }
            Some(path) => Ok(path.get_ref().clone()),
            None => Ok(PathBuf::from(default)),
        }
    }
}

/// One side of [`Checker::ordered`]: a duration key, its value (set or
/// default) and, if set, where.
struct Bound {
    key: &'static str,
    value: Duration,
    span: Option<Range<usize>>,
}

impl Bound {
    fn millis(key: &'static str, value: Duration, set: &Option<Spanned<u64>>) -> Bound {
        Bound {
            key,
            value,
            span: set.as_ref().map(Spanned::span),
        }
    }
}

/// The site prefixes seen so far, over this node and its peers: a prefix
/// is served by one node, once.
#[derive(Default)]
struct Prefixes(BTreeMap<IpNet, usize>);

impl Prefixes {
    fn add(
        &mut self,
        c: &Checker<'_>,
        key: &str,
        list: &[Spanned<IpNet>],
    ) -> Result<Vec<IpNet>, ConfigError> {
        let mut out = Vec::with_capacity(list.len());
        for prefix in list {
            let p = *prefix.get_ref();
            if p.trunc() != p {
                return Err(c.invalid(
                    prefix,
                    key,
                    format!("{p} has bits set past its length; write {}", p.trunc()),
                ));
            }
            if let Some(first) = self.0.insert(p, c.line(prefix)) {
                return Err(c.invalid(
                    prefix,
                    key,
                    format!("{p} is listed twice (also at line {first}); one node serves a prefix"),
                ));
            }
            out.push(p);
        }
        Ok(out)
    }
}

/// A pin's path: `"direct"` or `"via <relay id>"`.
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const FULL: &str = r#"
node_id = 3
private_key_file = "private.key"
underlay = "192.0.2.3"
prefixes = ["10.3.0.0/16", "2001:db8:3::/48"]

[control]
listen = "192.0.2.3:7082"

[[peers]]
id = 5
underlay = "192.0.2.5"
prefixes = ["10.5.0.0/16"]
public_key = "@5"
[[peers]]
id = 4
underlay = "2001:db8::4"
port = 7000
public_key = "@4"
[[peers]]
id = 6
underlay = "198.51.100.6"
prefixes = ["10.6.0.0/16", "10.6.128.0/24"]
public_key = "@6"
[probe]
interval_ms = 250
retry_interval_ms = 120
down_after = 4
up_after = 2
min_timeout_ms = 40
max_timeout_ms = 600
initial_timeout_ms = 300
loss_window = 100

[linkstate]
min_interval_ms = 30
max_age_ms = 13000

[routing]
metric = "latency"
hysteresis = false
drain = [6]
compute_interval_ms = 20
drained = true

[routing.pins]
"5" = "via 4"
"6" = "direct"

[dataplane]
socket = "/tmp/dp.sock"

[api]
socket = "/tmp/control.sock"

[metrics]
listen = "127.0.0.1:9482"

[session]
rekey_after_s = 60
"#;

    /// This node's private key in the tests' key files, and its public
    /// key.
    const PRIVATE_KEY: [u8; 32] = [0x42; 32];

    fn private_key_text() -> String {
        PrivateKey::from_bytes(PRIVATE_KEY).to_base64().to_string()
    }

    /// Node `id`'s public key in the tests (its private key is `id` in
    /// every byte).
    fn public_key(id: u8) -> PublicKey {
        PrivateKey::from_bytes([id; 32]).public_key()
    }

    /// `text` with each `"@N"` (N a digit) replaced by node N's public
    /// key: the tests' files name peers' keys so, to keep their lines
    /// short.
    fn with_keys(text: &str) -> String {
        (0..=9u8).fold(text.to_string(), |text, id| {
            text.replace(&format!("\"@{id}\""), &format!("\"{}\"", public_key(id)))
        })
    }

    /// A directory of its own under the system's temporary one, removed
    /// when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "detour-control-config-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        /// Writes `content` into `name` with permission bits `mode`.
        fn write(&self, name: &str, content: &str, mode: u32) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, content).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Checks `text` (after [`with_keys`]) as `control.toml` in a
    /// directory that holds a good `private.key`.
    fn check(text: &str) -> Result<Config, String> {
        let dir = TempDir::new();
        dir.write("private.key", &private_key_text(), 0o600);
        dir.write(
            "pair.psk",
            &PrivateKey::from_bytes([7; 32]).to_base64(),
            0o600,
        );
        Config::parse(&dir.0.join("control.toml"), &with_keys(text)).map_err(|e| {
            // The directory differs from run to run.
            e.to_string()
                .replacen(&format!("{}/", dir.0.display()), "", 1)
        })
    }

    fn node(id: u16) -> NodeId {
        NodeId(id)
    }

    /// Whether `key` is the tests' private key.
    fn is_test_key(key: &PrivateKey) -> bool {
        key.public_key() == PrivateKey::from_bytes(PRIVATE_KEY).public_key()
    }

    #[test]
    fn every_key_is_read() {
        let c = check(FULL).unwrap();
        assert_eq!(c.node_id, node(3));
        assert!(is_test_key(&c.private_key));
        assert_eq!(c.listen, "192.0.2.3:7082".parse().unwrap());
        assert_eq!(c.underlay, "192.0.2.3".parse::<IpAddr>().unwrap());
        assert_eq!(
            c.prefixes,
            ["10.3.0.0/16", "2001:db8:3::/48"].map(|p| p.parse::<IpNet>().unwrap())
        );
        let peer = |id, underlay: &str, port, prefixes: &[&str]| {
            (
                node(id),
                public_key(id as u8),
                underlay.parse::<IpAddr>().unwrap(),
                port,
                prefixes
                    .iter()
                    .map(|p| p.parse().unwrap())
                    .collect::<Vec<IpNet>>(),
            )
        };
        let peers: Vec<_> = c
            .peers
            .iter()
            .map(|p| (p.id, p.public_key, p.underlay, p.port, p.prefixes.clone()))
            .collect();
        assert_eq!(
            peers,
            [
                peer(4, "2001:db8::4", 7000, &[]),
                peer(5, "192.0.2.5", 7082, &["10.5.0.0/16"]),
                peer(6, "198.51.100.6", 7082, &["10.6.0.0/16", "10.6.128.0/24"]),
            ]
        );
        assert_eq!(
            c.peers[0].control_addr(),
            "[2001:db8::4]:7000".parse().unwrap()
        );
        let ms = Duration::from_millis;
        assert_eq!(
            c.node,
            NodeConfig {
                probe: ProbeConfig {
                    interval: ms(250),
                    retry_interval: ms(120),
                    down_after: 4,
                    up_after: 2,
                    min_timeout: ms(40),
                    max_timeout: ms(600),
                    initial_timeout: ms(300),
                    loss_window: 100,
                },
                linkstate: LinkStateConfig {
                    min_interval: ms(30),
                    max_age: ms(13000),
                },
                policy: Policy {
                    metric: Metric::Latency,
                    hysteresis: Hysteresis::OFF,
                    pins: BTreeMap::from([(node(5), Hop::Via(node(4))), (node(6), Hop::Direct)]),
                    drained: BTreeSet::from([node(6)]),
                },
                drained: true,
                compute_interval: ms(20),
            }
        );
        assert_eq!(c.dataplane_socket, Some(PathBuf::from("/tmp/dp.sock")));
        assert_eq!(c.api_socket, PathBuf::from("/tmp/control.sock"));
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9482".parse().unwrap()));
        assert_eq!(
            (
                c.session.rekey_after_time,
                c.session.responder_rekey_delay,
                c.session.reject_after_time
            ),
            (Duration::from_secs(60), ms(5000), Duration::from_secs(90)),
            "WireGuard's timers, scaled to the rekey time"
        );
    }

    #[test]
    fn three_keys_are_enough() {
        let text = "node_id = 1\nprivate_key_file = \"private.key\"\nunderlay = \"2001:db8::1\"\n";
        let c = check(text).unwrap();
        assert_eq!(c.node_id, node(1));
        assert!(is_test_key(&c.private_key));
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.listen, "0.0.0.0:6082".parse().unwrap());
        assert!(c.prefixes.is_empty() && c.peers.is_empty());
        assert_eq!(c.node, NodeConfig::default());
        assert_eq!(
            c.node.policy.hysteresis,
            Hysteresis::for_metric(Metric::Combined)
        );
        assert_eq!(
            c.dataplane_socket,
            Some(PathBuf::from("/run/detour/dataplane.sock"))
        );
        assert_eq!(c.api_socket, PathBuf::from("/run/detour/control.sock"));
        assert_eq!(c.metrics_listen, None, "metrics are off by default");
    }

    #[test]
    fn a_peer_port_defaults_to_the_listen_port() {
        let text = "node_id = 1\nprivate_key_file = \"private.key\"\nunderlay = \"192.0.2.1\"\n\
                    [[peers]]\nid = 2\nunderlay = \"192.0.2.2\"\npublic_key = \"@2\"\n";
        let c = check(text).unwrap();
        assert_eq!(c.peers[0].control_addr(), "192.0.2.2:6082".parse().unwrap());
    }

    #[test]
    fn install_false_runs_without_a_dataplane() {
        let text = FULL.replacen("[dataplane]\n", "[dataplane]\ninstall = false\n", 1);
        assert_eq!(check(&text).unwrap().dataplane_socket, None);
    }

    #[test]
    fn each_bad_value_names_its_file_line_and_key() {
        let cases = [
            (
                "node_id = 3",
                "node_id = 0",
                "control.toml: line 2: node_id: 0 is reserved",
            ),
            (
                "node_id = 3",
                "node_id = 65535",
                "control.toml: line 2: node_id: 65535 is reserved",
            ),
            (
                "node_id = 3\n",
                "",
                "control.toml: node_id: required, and not set",
            ),
            (
                "private_key_file = \"private.key\"\n",
                "",
                "control.toml: private_key_file: required, and not set",
            ),
            (
                "underlay = \"192.0.2.3\"\n",
                "",
                "control.toml: underlay: required, and not set",
            ),
            (
                "underlay = \"192.0.2.3\"",
                "underlay = \"0.0.0.0\"",
                "control.toml: line 4: underlay: 0.0.0.0 is no address",
            ),
            (
                "\"2001:db8:3::/48\"",
                "\"10.5.0.0/16\"",
                "control.toml: line 13: peers.prefixes: 10.5.0.0/16 is listed twice (also at line 5)",
            ),
            (
                "\"2001:db8:3::/48\"",
                "\"10.3.0.0/16\"",
                "control.toml: line 5: prefixes: 10.3.0.0/16 is listed twice (also at line 5)",
            ),
            (
                "\"10.3.0.0/16\"",
                "\"10.3.1.0/16\"",
                "control.toml: line 5: prefixes: 10.3.1.0/16 has bits set past its length; write 10.3.0.0/16",
            ),
            (
                "listen = \"192.0.2.3:7082\"",
                "listen = \"192.0.2.3:0\"",
                "control.toml: line 8: control.listen: 192.0.2.3:0: port 0",
            ),
            (
                "id = 5",
                "id = 3",
                "control.toml: line 11: peers.id: 3 is this node's node_id",
            ),
            (
                "id = 4",
                "id = 5",
                "control.toml: line 16: peers.id: 5 is listed twice (also at line 11)",
            ),
            (
                "id = 6",
                "id = 0",
                "control.toml: line 21: peers.id: 0 is reserved",
            ),
            (
                "underlay = \"192.0.2.5\"",
                "underlay = \"224.0.0.5\"",
                "control.toml: line 12: peers.underlay: 224.0.0.5 is no address",
            ),
            (
                "port = 7000",
                "port = 0",
                "control.toml: line 18: peers.port: 0 is not a port",
            ),
            (
                "interval_ms = 250",
                "interval_ms = 0",
                "control.toml: line 26: probe.interval_ms: 0 is not allowed; probes need a gap of at least 1 ms",
            ),
            (
                "interval_ms = 250",
                "interval_ms = 3600001",
                "control.toml: line 26: probe.interval_ms: 3600001 is over the limit of 3600000",
            ),
            (
                "retry_interval_ms = 120",
                "retry_interval_ms = 0",
                "control.toml: line 27: probe.retry_interval_ms: 0 is not allowed",
            ),
            (
                "retry_interval_ms = 120",
                "retry_interval_ms = 300",
                "control.toml: line 27: probe.retry_interval_ms: 300 is more than probe.interval_ms (250); re-probes",
            ),
            (
                "down_after = 4",
                "down_after = 0",
                "control.toml: line 28: probe.down_after: 0 is not allowed",
            ),
            (
                "up_after = 2",
                "up_after = 0",
                "control.toml: line 29: probe.up_after: 0 is not allowed",
            ),
            (
                "min_timeout_ms = 40",
                "min_timeout_ms = 0",
                "control.toml: line 30: probe.min_timeout_ms: 0 is not allowed",
            ),
            (
                "max_timeout_ms = 600",
                "max_timeout_ms = 30",
                "control.toml: line 31: probe.max_timeout_ms: 30 is less than probe.min_timeout_ms (40)",
            ),
            (
                "initial_timeout_ms = 300",
                "initial_timeout_ms = 0",
                "control.toml: line 32: probe.initial_timeout_ms: 0 is not allowed",
            ),
            (
                "loss_window = 100",
                "loss_window = 0",
                "control.toml: line 33: probe.loss_window: 0 is not from 1 to 1000",
            ),
            (
                "loss_window = 100",
                "loss_window = 1001",
                "control.toml: line 33: probe.loss_window: 1001 is not from 1 to 1000",
            ),
            (
                "rekey_after_s = 60",
                "rekey_after_s = 9",
                "control.toml: line 60: session.rekey_after_s: 9 is not from 10 to 120 (seconds)",
            ),
            (
                "rekey_after_s = 60",
                "rekey_after_s = 121",
                "control.toml: line 60: session.rekey_after_s: 121 is not from 10 to 120 (seconds)",
            ),
            (
                "min_interval_ms = 30",
                "min_interval_ms = 0",
                "control.toml: line 36: linkstate.min_interval_ms: 0 is not allowed",
            ),
            (
                "max_age_ms = 13000",
                "max_age_ms = 250",
                "control.toml: line 37: linkstate.max_age_ms: 250 is not more than probe.interval_ms (250)",
            ),
            (
                "metric = \"latency\"",
                "metric = \"fastest\"",
                "control.toml: line 40: routing.metric: unknown routing metric \"fastest\"",
            ),
            (
                "drain = [6]",
                "drain = [6, 9]",
                "control.toml: line 42: routing.drain: 9 is not a peer",
            ),
            (
                "drain = [6]",
                "drain = [3]",
                "control.toml: line 42: routing.drain: 3 is this node",
            ),
            (
                "drain = [6]",
                "drain = [6, 6]",
                "control.toml: line 42: routing.drain: 6 is listed twice",
            ),
            (
                "compute_interval_ms = 20",
                "compute_interval_ms = 0",
                "control.toml: line 43: routing.compute_interval_ms: 0 is not allowed",
            ),
            (
                "\"5\" = \"via 4\"",
                "\"5\" = \"via 3\"",
                "control.toml: line 47: routing.pins.5: relay 3 is this node",
            ),
            (
                "\"5\" = \"via 4\"",
                "\"5\" = \"via 5\"",
                "control.toml: line 47: routing.pins.5: relay 5 is the destination itself",
            ),
            (
                "\"5\" = \"via 4\"",
                "\"5\" = \"via 9\"",
                "control.toml: line 47: routing.pins.5: relay 9 is not a peer",
            ),
            (
                "\"5\" = \"via 4\"",
                "\"5\" = \"through 4\"",
                "control.toml: line 47: routing.pins.5: \"through 4\" is not a path",
            ),
            (
                "\"5\" = \"via 4\"",
                "\"9\" = \"via 4\"",
                "control.toml: line 47: routing.pins.9: 9 is not a peer",
            ),
            (
                "\"5\" = \"via 4\"",
                "\"3\" = \"via 4\"",
                "control.toml: line 47: routing.pins.3: 3 is this node",
            ),
            (
                "\"5\" = \"via 4\"",
                "\"05\" = \"via 4\"\n\"5\" = \"direct\"",
                "control.toml: line 48: routing.pins.5: node 5 is pinned twice",
            ),
            (
                "\"6\" = \"direct\"",
                "\"six\" = \"direct\"",
                "control.toml: line 48: routing.pins.six: \"six\" is not a node id",
            ),
            (
                "socket = \"/tmp/dp.sock\"",
                "socket = \"\"",
                "control.toml: line 51: dataplane.socket: empty path",
            ),
            (
                "socket = \"/tmp/control.sock\"",
                "socket = \"/tmp/dp.sock\"",
                "control.toml: line 54: api.socket: /tmp/dp.sock is also dataplane.socket",
            ),
            (
                "listen = \"127.0.0.1:9482\"",
                "listen = \"127.0.0.1:0\"",
                "control.toml: line 57: metrics.listen: 127.0.0.1:0: port 0 is no port to scrape",
            ),
            // The parser's own errors: types, ranges, unknown keys.
            (
                "up_after = 2",
                "up_afte = 2",
                "control.toml: line 29, column 1: unknown field `up_afte`, expected one of `interval_ms`,",
            ),
            (
                "port = 7000",
                "port = 70000",
                "control.toml: line 18, column 8: invalid value: integer `70000`, expected u16 (in `port = 70000`)",
            ),
            (
                "node_id = 3",
                "node_id = \"3\"",
                "control.toml: line 2, column 11: invalid type: string \"3\", expected u16 (in `node_id = \"3\"`)",
            ),
            (
                "node_id = 3",
                "node_id = 3\nnode_id = 4",
                "control.toml: line 3, column 1: duplicate key (in `node_id = 4`)",
            ),
            (
                "underlay = \"192.0.2.5\"\n",
                "",
                "control.toml: line 10, column 1: missing field `underlay` (in `[[peers]]`)",
            ),
            (
                "[routing.pins]",
                "[routing.pin]",
                "control.toml: line 46, column 10: unknown field `pin`",
            ),
            (
                "\"6\" = \"direct\"",
                "\"6\" = 6",
                "control.toml: line 48, column 7: invalid type: integer `6`, expected a string (in `\"6\" = 6`)",
            ),
            (
                "underlay = \"192.0.2.5\"",
                "underlay = \"192.0.2.500\"",
                "control.toml: line 12, column 12: invalid IP address syntax (in `underlay = \"192.0.2.500\"`)",
            ),
            (
                "hysteresis = false",
                "hysteresis = \"no\"",
                "control.toml: line 41, column 14: invalid type: string \"no\", expected a boolean (in `hysteresis = \"no\"`)",
            ),
        ];
        for (from, to, expected) in cases {
            assert!(FULL.contains(from), "{from}");
            let text = FULL.replacen(from, to, 1);
            let err = check(&text).unwrap_err();
            assert!(
                err.starts_with(expected),
                "{to:?}:\n got      {err:?}\n expected {expected:?}"
            );
        }
    }

    #[test]
    fn an_order_conflict_names_the_key_that_was_set() {
        let base = "node_id = 1\nprivate_key_file = \"private.key\"\nunderlay = \"192.0.2.1\"\n";
        let cases = [
            (
                "[probe]\ninterval_ms = 50\n",
                "control.toml: line 5: probe.interval_ms: 50 is less than probe.retry_interval_ms (100, the default)",
            ),
            (
                "[probe]\nmin_timeout_ms = 800\n",
                "control.toml: line 5: probe.min_timeout_ms: 800 is more than probe.max_timeout_ms (500, the default)",
            ),
            (
                "[probe]\ninterval_ms = 20000\nretry_interval_ms = 100\n",
                "control.toml: line 5: probe.interval_ms: 20000 is not less than linkstate.max_age_ms (16000, the default)",
            ),
            (
                "[linkstate]\nmax_age_ms = 200\n",
                "control.toml: line 5: linkstate.max_age_ms: 200 is not more than probe.interval_ms (200, the default)",
            ),
        ];
        for (section, expected) in cases {
            let err = check(&format!("{base}{section}")).unwrap_err();
            assert!(
                err.starts_with(expected),
                "got {err:?}\nexpected {expected:?}"
            );
        }
    }

    #[test]
    fn the_api_socket_is_not_the_dataplane_socket() {
        let base = "node_id = 1\nprivate_key_file = \"private.key\"\nunderlay = \"192.0.2.1\"\n";
        let text = format!("{base}[dataplane]\nsocket = \"/run/detour/control.sock\"\n");
        assert_eq!(
            check(&text).unwrap_err(),
            "control.toml: line 5: dataplane.socket: /run/detour/control.sock is also api.socket (the default): \
             the control process serves its own API on another socket than the dataplane's"
        );
        let text = format!("{text}install = false\n");
        assert_eq!(check(&text).unwrap().dataplane_socket, None);
    }

    #[test]
    fn a_peer_of_the_other_family_is_fine() {
        let text = "node_id = 1\nprivate_key_file = \"private.key\"\nunderlay = \"192.0.2.1\"\n\
                    [[peers]]\nid = 2\nunderlay = \"2001:db8::2\"\npublic_key = \"@2\"\n";
        assert!(check(text).is_ok());
    }

    /// A configuration in `dir` whose private key file is `name`.
    fn with_key_file(dir: &TempDir, name: &str) -> Result<Config, String> {
        let text =
            format!("node_id = 1\nprivate_key_file = \"{name}\"\nunderlay = \"192.0.2.1\"\n");
        Config::parse(&dir.0.join("control.toml"), &text).map_err(|e| e.to_string())
    }

    fn private(text: &str) -> Result<PrivateKey, KeyError> {
        PrivateKey::from_base64(text)
    }

    #[test]
    fn a_key_file_others_may_read_is_refused() {
        let dir = TempDir::new();
        let key = dir.write("private.key", &private_key_text(), 0o644);
        assert_eq!(
            with_key_file(&dir, "private.key").unwrap_err(),
            format!(
                "{}: line 2: private_key_file {}: mode 0644 lets others read the key; chmod 600 it",
                dir.0.join("control.toml").display(),
                key.display()
            )
        );
        for mode in [0o640, 0o604, 0o660, 0o602] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(
                read_key_file(&key, private).unwrap_err(),
                KeyFileError::Exposed(mode)
            );
        }
    }

    #[test]
    fn a_key_file_only_its_owner_may_read_is_accepted() {
        let dir = TempDir::new();
        let text = private_key_text();
        for (mode, content) in [
            (0o600, text.clone()),
            (0o400, format!("  {}  \n\n", text.trim())),
        ] {
            let path = dir.write("private.key", &content, mode);
            assert!(is_test_key(&read_key_file(&path, private).unwrap()));
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn a_relative_key_file_is_found_beside_the_config_file() {
        let dir = TempDir::new();
        std::fs::create_dir(dir.0.join("keys")).unwrap();
        dir.write("keys/private.key", &private_key_text(), 0o600);
        assert!(is_test_key(
            &with_key_file(&dir, "keys/private.key").unwrap().private_key
        ));
        let absolute = dir.0.join("keys/private.key");
        assert!(with_key_file(&TempDir::new(), absolute.to_str().unwrap()).is_ok());
    }

    #[test]
    fn a_key_file_without_a_key_is_refused() {
        let dir = TempDir::new();
        let config = dir.0.join("control.toml");
        let text = private_key_text();
        let short = dir.write("short.key", &text[..40], 0o600);
        assert_eq!(
            with_key_file(&dir, "short.key").unwrap_err(),
            format!(
                "{}: line 2: private_key_file {}: a key is 32 bytes, this base64 holds 30",
                config.display(),
                short.display()
            )
        );
        // A key of the old format: 64 hexadecimal digits.
        let hex = dir.write("hex.key", &"ab".repeat(32), 0o600);
        assert_eq!(
            read_key_file(&hex, private).unwrap_err(),
            KeyFileError::Key(KeyError::Length(33))
        );
        let not_base64 = dir.write("bad.key", &format!("#{}", &text[1..]), 0o600);
        assert!(with_key_file(&dir, "bad.key").unwrap_err().ends_with(
            "not a key: a key is 32 bytes in base64 (44 characters, as `detourctl genkey` or `wg genkey` writes it)"
        ));
        let _ = not_base64;
        let binary = dir.0.join("binary.key");
        std::fs::write(&binary, [0xff; 64]).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_key_file(&binary, private).unwrap_err(),
            KeyFileError::Key(KeyError::NotBase64)
        );
        // A gigabyte (sparse): refused by its size, not read.
        let huge = dir.write("huge.key", &text, 0o600);
        std::fs::File::options()
            .write(true)
            .open(&huge)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        assert_eq!(
            read_key_file(&huge, private).unwrap_err(),
            KeyFileError::Key(KeyError::NotBase64)
        );
    }

    #[test]
    fn a_missing_key_file_names_the_path_and_the_reason() {
        let dir = TempDir::new();
        assert_eq!(
            with_key_file(&dir, "absent.key").unwrap_err(),
            format!(
                "{}: line 2: private_key_file {}: No such file or directory (os error 2)",
                dir.0.join("control.toml").display(),
                dir.0.join("absent.key").display()
            )
        );
        std::fs::create_dir(dir.0.join("dir.key")).unwrap();
        assert_eq!(
            read_key_file(&dir.0.join("dir.key"), private).unwrap_err(),
            KeyFileError::NotAFile
        );
    }

    #[test]
    fn the_key_file_is_read_only_once_the_rest_is_valid() {
        let dir = TempDir::new();
        dir.write("private.key", &private_key_text(), 0o644);
        let text = "node_id = 0\nprivate_key_file = \"private.key\"\nunderlay = \"192.0.2.1\"\n";
        let err = Config::parse(Path::new("control.toml"), text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "control.toml: line 1: node_id: 0 is reserved: node ids are 1 to 65534"
        );
    }

    #[test]
    fn the_shared_key_file_is_refused_with_the_way_to_migrate() {
        let text = "node_id = 1\nunderlay = \"192.0.2.1\"\nkey_file = \"overlay.key\"\n";
        let err = check(text).unwrap_err();
        assert!(
            err.starts_with("control.toml: line 3: key_file: the shared overlay key is gone"),
            "{err}"
        );
        assert!(err.contains("detourctl genkey") && err.contains("Migrating from key_file"));
    }

    #[test]
    fn peers_need_keys_of_their_own() {
        let base = "node_id = 1\nprivate_key_file = \"private.key\"\nunderlay = \"192.0.2.1\"\n\
                    [[peers]]\nid = 2\nunderlay = \"192.0.2.2\"\n";
        assert_eq!(
            check(base).unwrap_err(),
            "control.toml: line 5: peers.public_key: peer 2 has no public_key: `detourctl pubkey < private.key` on that node prints it"
        );
        assert!(
            check(&format!("{base}public_key = \"abcd\"\n"))
                .unwrap_err()
                .starts_with(
                    "control.toml: line 7: peers.public_key: a key is 32 bytes, this base64 holds 3"
                )
        );
        let twice = format!(
            "{base}public_key = \"@2\"\n[[peers]]\nid = 3\nunderlay = \"192.0.2.3\"\npublic_key = \"@2\"\n"
        );
        assert_eq!(
            check(&twice).unwrap_err(),
            "control.toml: line 11: peers.public_key: the same key as peer 2 (line 5): every node has a key pair of its own"
        );
        let own = format!(
            "{base}public_key = \"{}\"\n",
            PrivateKey::from_bytes(PRIVATE_KEY).public_key()
        );
        assert!(check(&own).unwrap_err().starts_with(
            "control.toml: line 7: peers.public_key: peer 2 is given this node's own public key"
        ));
    }

    #[test]
    fn a_preshared_key_is_read_from_its_own_file() {
        let dir = TempDir::new();
        dir.write("private.key", &private_key_text(), 0o600);
        let psk = PrivateKey::from_bytes([9; 32]).to_base64();
        dir.write("pair.psk", &psk, 0o600);
        let text = with_keys(
            "node_id = 1\nprivate_key_file = \"private.key\"\nunderlay = \"192.0.2.1\"\n\
             [[peers]]\nid = 2\nunderlay = \"192.0.2.2\"\npublic_key = \"@2\"\npreshared_key_file = \"pair.psk\"\n",
        );
        let c = Config::parse(&dir.0.join("control.toml"), &text).unwrap();
        assert_eq!(c.peers[0].preshared_key.as_bytes(), &[9; 32]);
        assert_eq!(
            format!("{:?}", c.peers[0].preshared_key),
            "PresharedKey(..)"
        );
        std::fs::set_permissions(
            dir.0.join("pair.psk"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let err = Config::parse(&dir.0.join("control.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 8: peers.preshared_key_file"), "{err}");
        assert!(err.ends_with("mode 0644 lets others read the key; chmod 600 it"));
        // The configuration's Debug shows no key material.
        let dump = format!(
            "{:?}",
            Config::parse(
                &dir.0.join("control.toml"),
                &text.replace("preshared_key_file = \"pair.psk\"\n", "")
            )
            .unwrap()
        );
        assert!(dump.contains("PrivateKey(..)") && !dump.contains(psk.trim()));
    }

    #[test]
    fn an_unreadable_config_file_names_itself() {
        let dir = TempDir::new();
        let path = dir.0.join("absent.toml");
        assert_eq!(
            Config::read(&path).unwrap_err().to_string(),
            format!("{}: No such file or directory (os error 2)", path.display())
        );
        let path = dir.write("control.toml", &with_keys(FULL), 0o644);
        dir.write("private.key", &private_key_text(), 0o600);
        assert_eq!(Config::read(&path).unwrap().node_id, node(3));
    }

    #[test]
    fn the_documented_example_is_valid() {
        let doc = include_str!("../../docs/control-config.md");
        let example = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("docs/control-config.md has a TOML example");
        let text = example
            .replacen("/etc/detour/private.key", "private.key", 1)
            .replacen("/etc/detour/3-5.psk", "pair.psk", 1);
        let c = check(&text).unwrap();
        assert_eq!(
            c.peers.iter().map(|p| p.id.0).collect::<Vec<_>>(),
            [4, 5, 6]
        );
        assert_eq!(c.node.policy.pins[&node(5)], Hop::Via(node(4)));
    }

    #[test]
    fn the_operations_guide_example_is_valid() {
        let doc = include_str!("../../docs/operations.md");
        // The second TOML block is site A's control.toml.
        let example = doc
            .split("```toml\n")
            .nth(2)
            .and_then(|rest| rest.split("```").next())
            .expect("docs/operations.md has site A's control.toml");
        let c = check(example).unwrap();
        assert_eq!(c.node_id, node(1));
        assert_eq!(c.peers.iter().map(|p| p.id.0).collect::<Vec<_>>(), [2, 3]);
        assert!(c.metrics_listen.is_some());
    }

    #[test]
    fn lines_count_from_one() {
        let lines = Lines::new("a\nbc\n\nd");
        let line_of = |offset| lines.line(offset);
        assert_eq!([0, 1, 2, 3, 4, 5, 6].map(line_of), [1, 1, 2, 2, 2, 3, 4]);
    }
}
