//! The human forms of `detourctl`'s read commands: aligned tables and
//! `key  value` lines, units spelled out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use detour_common::api as dp;
use detour_control::api as cp;

/// Rows of cells printed in aligned columns, two spaces apart; columns
/// whose header starts with a space are right-aligned (numbers).
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: AsRef<str>>(header: &[S]) -> Table {
        Table {
            header: header.iter().map(|h| h.as_ref().to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.trim().len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| h.trim().to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let gap = if i == 0 { "" } else { "  " };
                let pad = widths[i] - cell.chars().count();
                if self.header[i].starts_with(' ') {
                    let _ = write!(line, "{gap}{}{cell}", " ".repeat(pad));
                } else {
                    let _ = write!(line, "{gap}{cell}{}", " ".repeat(pad));
                }
            }
            out += line.trim_end();
            out.push('\n');
        }
        out
    }
}

/// `key  value` lines, keys aligned.
struct Lines(Vec<(String, String)>);

impl Lines {
    fn add(&mut self, key: &str, value: impl Into<String>) {
        self.0.push((key.to_string(), value.into()));
    }

    fn print(&self) {
        let width = self.0.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, value) in &self.0 {
            println!("{key:width$}  {value}");
        }
    }
}

pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn millis(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

/// A cost in the metric's unit: time for `latency` and `combined`, a loss
/// share for `loss`.
fn cost(metric: &str, cost: Option<f64>) -> String {
    match cost {
        None => "-".into(),
        Some(c) if metric == "loss" => percent(c),
        Some(c) => format!("{:.3} ms", c * 1000.0),
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn nanos(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else {
        format!("{:.1} µs", ns as f64 / 1e3)
    }
}

/// A latency percentile, `-` when nothing was measured.
pub fn latency(count: u64, ns: u64) -> String {
    if count == 0 { "-".into() } else { nanos(ns) }
}

fn or_none(items: Vec<String>) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

pub fn status(
    control: Option<&cp::Status>,
    dataplane: Option<&dp::Health>,
    without_dataplane: bool,
    errors: &BTreeMap<&'static str, String>,
) {
    let mut l = Lines(Vec::new());
    if let Some(node) = control.map(|c| c.node_id).or(dataplane.map(|d| d.node_id)) {
        l.add("node", node.to_string());
    }
    match control {
        Some(c) => {
            l.add(
                "control",
                format!(
                    "running {}, version {}, {}, control socket {}",
                    duration(c.uptime_s),
                    c.version,
                    if c.settled { "settled" } else { "settling" },
                    c.listen
                ),
            );
            l.add("peers", format!("{} of {} up", c.peers_up, c.peers));
            l.add(
                "routes",
                format!(
                    "{} direct, {} relayed, {} unreachable",
                    c.routes_direct, c.routes_relayed, c.unreachable
                ),
            );
            let p = &c.policy;
            l.add(
                "policy",
                format!(
                    "metric {}, hysteresis {}; pins: {}; not relaying through: {}",
                    p.metric,
                    if p.hysteresis { "on" } else { "off" },
                    or_none(
                        p.pins
                            .iter()
                            .map(|pin| format!("{} {}", pin.dst, pin.path))
                            .collect()
                    ),
                    or_none(
                        p.drained
                            .iter()
                            .map(|n| n.to_string())
                            .chain(
                                p.drained_by_peers
                                    .iter()
                                    .map(|n| format!("{n} (drained itself)"))
                            )
                            .collect()
                    )
                ),
            );
            l.add(
                "drained",
                if c.drained {
                    "yes: peers do not relay through this node"
                } else {
                    "no"
                },
            );
            l.add(
                "encryption",
                match c.encryption.as_str() {
                    "none" => "NONE: overlay data goes out in the clear and unauthenticated \
                               (encryption = \"none\")"
                        .to_string(),
                    other => format!("{other}: overlay data sealed end to end"),
                },
            );
            match &c.dataplane {
                None => l.add("installing", "off (dataplane.install = false)"),
                Some(i) => {
                    let installed = match i.installed_version {
                        Some(v) => format!(
                            "route version {v} (installs: {}, dataplane restarts seen: {})",
                            i.installs, i.dataplane_restarts
                        ),
                        None => "nothing yet".into(),
                    };
                    let state = match &i.error {
                        Some(e) => format!("{installed}; failing: {e}"),
                        None => installed,
                    };
                    l.add("installed", state);
                }
            }
            let rejected: Vec<String> = c
                .rejected
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(reason, n)| format!("{reason} {n}"))
                .collect();
            l.add("rejected", or_none(rejected));
            l.add(
                "metrics",
                c.metrics
                    .map_or("off".into(), |a| format!("http://{a}/metrics")),
            );
        }
        None => l.add(
            "control",
            format!("DOWN: {}", errors.get("control").map_or("", String::as_str)),
        ),
    }
    match dataplane {
        Some(d) => {
            l.add(
                "dataplane",
                format!(
                    "running {}, version {}, {} of {} workers",
                    duration(d.uptime_s),
                    d.version,
                    d.workers_running,
                    d.workers
                ),
            );
            l.add(
                "route version",
                d.route_version
                    .map_or("none installed".into(), |v| v.to_string()),
            );
            for (i, iface) in d.interfaces.iter().enumerate() {
                l.add(
                    if i == 0 { "interfaces" } else { "" },
                    format!(
                        "{} {}: XDP {}, AF_XDP {}",
                        iface.role, iface.name, iface.xdp_mode, iface.afxdp_mode
                    ),
                );
            }
        }
        None if without_dataplane => {}
        None => l.add(
            "dataplane",
            format!(
                "DOWN: {}",
                errors.get("dataplane").map_or("", String::as_str)
            ),
        ),
    }
    l.print();
}

pub fn peers(peers: &[cp::PeerView]) {
    let mut t = Table::new(&[
        "PEER",
        "ADDRESS",
        "STATE",
        "        RTT",
        "     RTTVAR",
        "  LOSS",
        "LAST HEARD",
        "ROW VERSION",
        "DRAINED",
        "SESSION",
        "PUBLIC KEY",
    ]);
    for p in peers {
        t.row(vec![
            p.id.to_string(),
            p.address.to_string(),
            p.state.clone(),
            p.rtt_us.map_or("-".into(), millis),
            p.rtt_dev_us.map_or("-".into(), millis),
            percent(p.loss),
            p.last_heard_ms
                .map_or("never".into(), |ms| format!("{ms} ms ago")),
            p.row_version.map_or("none".into(), |v| v.to_string()),
            if p.drained { "yes" } else { "no" }.into(),
            p.session_age_s
                .map_or("none".into(), |s| format!("{s} s old")),
            p.public_key.clone(),
        ]);
    }
    print!("{}", t.render());
}

pub fn paths(paths: &cp::PathsView) {
    println!(
        "links, as node {} knows them (RTT; loss when any; \"down\"; \"-\" unknown):",
        paths.local
    );
    let links: BTreeMap<(u16, u16), &cp::LinkView> = paths
        .links
        .iter()
        .map(|l| ((l.from.0, l.to.0), l))
        .collect();
    let mut header = vec!["FROM \\ TO".to_string()];
    header.extend(paths.nodes.iter().map(|n| format!(" {n}")));
    let mut matrix = Table::new(&header);
    for from in &paths.nodes {
        let mut row = vec![from.to_string()];
        for to in &paths.nodes {
            row.push(if from == to {
                "·".into()
            } else {
                match links.get(&(from.0, to.0)) {
                    None => "-".into(),
                    Some(l) if !l.up => "down".into(),
                    Some(l) if l.loss > 0.0 => {
                        format!("{:.2} ms {}", l.rtt_us as f64 / 1000.0, percent(l.loss))
                    }
                    Some(l) => format!("{:.2} ms", l.rtt_us as f64 / 1000.0),
                }
            });
        }
        matrix.row(row);
    }
    for line in matrix.render().lines() {
        println!("  {line}");
    }
    println!();
    println!(
        "paths by {} (cost: {}):",
        paths.metric,
        match paths.metric.as_str() {
            "loss" => "chance of loss",
            "latency" => "summed RTT",
            _ => "expected delivery time, a loss costing a 200 ms retry",
        }
    );
    let mut t = Table::new(&[
        "DST",
        "PATH",
        "NEXT HOP",
        "        COST",
        "WHY",
        "BEST",
        "   BEST COST",
        " DIRECT COST",
        "PIN",
    ]);
    for r in &paths.routes {
        t.row(vec![
            r.dst.to_string(),
            r.path.clone().unwrap_or_else(|| "unreachable".into()),
            r.next_hop.map_or("-".into(), |n| n.to_string()),
            cost(&paths.metric, r.cost),
            r.reason.clone(),
            r.best.clone().unwrap_or_else(|| "-".into()),
            cost(&paths.metric, r.best_cost),
            cost(&paths.metric, r.direct_cost),
            r.pin.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    print!("{}", t.render());
}

pub fn routes(snapshot: Option<&dp::RouteSnapshot>) {
    let Some(s) = snapshot else {
        println!("no routes installed (the control process has not installed any yet)");
        return;
    };
    println!(
        "route snapshot version {}, node {}, {} nodes",
        s.version,
        s.local,
        s.nodes.len()
    );
    let underlay: BTreeMap<_, _> = s.nodes.iter().map(|n| (n.id, n.underlay)).collect();
    let mut t = Table::new(&["DST", "VIA", "NEXT HOP UNDERLAY", "PREFIXES"]);
    for node in &s.nodes {
        if node.id == s.local {
            continue;
        }
        let route = s.routes.iter().find(|r| r.dst == node.id);
        let prefixes: Vec<String> = s
            .prefixes
            .iter()
            .filter(|p| p.node == node.id)
            .map(|p| p.prefix.to_string())
            .collect();
        t.row(vec![
            node.id.to_string(),
            route.map_or("unreachable".into(), |r| {
                if r.via == r.dst {
                    "direct".into()
                } else {
                    r.via.to_string()
                }
            }),
            route
                .and_then(|r| underlay.get(&r.via))
                .map_or("-".into(), |a| a.to_string()),
            or_none(prefixes),
        ]);
    }
    print!("{}", t.render());
    let local: Vec<String> = s
        .prefixes
        .iter()
        .filter(|p| p.node == s.local)
        .map(|p| p.prefix.to_string())
        .collect();
    println!("local prefixes: {}", or_none(local));
}

pub fn stats(stats: &dp::Stats) {
    let mut t = Table::new(&[
        "WORKER",
        "CORE",
        "    RX PKTS",
        "   RX BYTES",
        "      ENCAP",
        "      RELAY",
        "      DECAP",
        "   ICMP",
        "   TX BYTES",
        "    DROPPED",
        "     P50",
        "     P99",
        "     MAX",
    ]);
    let mut row = |name: String, core: String, c: &dp::WorkerCounters, l: &dp::Latency| {
        t.row(vec![
            name,
            core,
            c.received.to_string(),
            bytes(c.received_bytes),
            c.encapsulated.to_string(),
            c.relayed.to_string(),
            c.decapsulated.to_string(),
            c.answered.to_string(),
            bytes(c.transmitted_bytes),
            c.dropped_total().to_string(),
            latency(l.count, l.p50_ns),
            latency(l.count, l.p99_ns),
            latency(l.count, l.max_ns),
        ]);
    };
    for w in &stats.workers {
        row(
            format!("queue {}", w.queue),
            w.core.map_or("-".into(), |c| c.to_string()),
            &w.counters,
            &w.latency,
        );
    }
    row("total".into(), String::new(), &stats.total, &stats.latency);
    print!("{}", t.render());
    // Each as `name count, ...`, zeros left out.
    let counts = |m: &BTreeMap<String, u64>| {
        or_none(
            m.iter()
                .filter(|(_, n)| **n > 0)
                .map(|(name, n)| format!("{name} {n}"))
                .collect(),
        )
    };
    println!("drops by reason: {}", counts(&stats.total.dropped));
    println!(
        "dropped before a worker (socket): {}",
        counts(&stats.total.socket_dropped)
    );
    println!("XDP classifier: {}", counts(&stats.xdp));
    println!(
        "control port, dropped from strangers: {}",
        strangers(&stats.control_strangers)
    );
}

/// The sources whose control-port datagrams the WAN program dropped, most
/// first, as `addr count`: the first [`STRANGERS_SHOWN`] (`--json` has all).
fn strangers(strangers: &[dp::Stranger]) -> String {
    const STRANGERS_SHOWN: usize = 8;
    let mut shown: Vec<String> = strangers
        .iter()
        .take(STRANGERS_SHOWN)
        .map(|s| format!("{} {}", s.addr, s.dropped))
        .collect();
    if strangers.len() > STRANGERS_SHOWN {
        shown.push(format!(
            "and {} more sources",
            strangers.len() - STRANGERS_SHOWN
        ));
    }
    or_none(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_left_and_right() {
        let mut t = Table::new(&["NAME", " N"]);
        t.row(vec!["a".into(), "1".into()]);
        t.row(vec!["longer".into(), "100".into()]);
        assert_eq!(t.render(), "NAME      N\na         1\nlonger  100\n");
    }

    #[test]
    fn strangers_show_the_first_few_and_count_the_rest() {
        let stranger = |i: u8| dp::Stranger {
            addr: std::net::IpAddr::from([203, 0, 113, i]),
            dropped: 100 - u64::from(i),
        };
        assert_eq!(strangers(&[]), or_none(Vec::new()));
        assert_eq!(
            strangers(&[stranger(1), stranger(2)]),
            "203.0.113.1 99, 203.0.113.2 98"
        );
        let many: Vec<_> = (1..=10).map(stranger).collect();
        assert!(strangers(&many).ends_with("203.0.113.8 92, and 2 more sources"));
    }

    #[test]
    fn units_read_naturally() {
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(61), "1m 1s");
        assert_eq!(duration(3 * 3600 + 120), "3h 2m");
        assert_eq!(duration(2 * 86400 + 3600), "2d 1h");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(nanos(1_500), "1.5 µs");
        assert_eq!(nanos(2_500_000), "2.5 ms");
        assert_eq!(cost("latency", Some(0.0123)), "12.300 ms");
        assert_eq!(cost("loss", Some(0.25)), "25.0%");
        assert_eq!(cost("combined", None), "-");
    }
}
