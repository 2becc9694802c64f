//! The simulated Internet: what the router namespace does to each path.
//!
//! The router forwards between the nodes' links with the kernel's own IP
//! forwarding. Each link `n<i>` has an nftables chain on its ingress hook
//! (netdev family, so it runs before routing) that, for packets from node
//! `i` to node `j`:
//!
//! 1. drops them all when the path is cut;
//! 2. drops a share of them (`numgen random`) when it has loss;
//! 3. hands them to the delay line (`fwd to "delay"`, a TAP device that
//!    [`crate::delay_line`] reads) when it has delay. The delay line writes
//!    each one back into the TAP once its time is up, and the kernel then
//!    forwards it like any other.
//!
//! Paths without delay never leave the kernel. This kernel has no netem
//! (docs/design.md, "What these kernels lack"), hence the delay line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::topology::{Impairment, Pair, underlay};

/// The nftables table the router's rules live in.
pub const TABLE: &str = "detour_testbed";
/// The delay line's TAP device in the router namespace.
pub const DELAY_DEVICE: &str = "delay";

/// The router's interface toward node `id`.
pub fn router_interface(id: u16) -> String {
    format!("n{id}")
}

/// The whole ruleset for the router, replacing the previous one at once
/// (`nft -f` applies a file as one transaction).
pub fn ruleset(ids: &[u16], paths: &BTreeMap<Pair, Impairment>) -> String {
    let mut s = String::new();
    // Declaring the table first makes the delete succeed the first time.
    let _ = writeln!(s, "table netdev {TABLE}\ndelete table netdev {TABLE}");
    let _ = writeln!(s, "table netdev {TABLE} {{");
    for &from in ids {
        let dev = router_interface(from);
        let _ = writeln!(s, "  chain from_{from} {{");
        let _ = writeln!(
            s,
            "    type filter hook ingress device \"{dev}\" priority 0; policy accept;"
        );
        for &to in ids.iter().filter(|&&to| to != from) {
            let Some(path) = paths.get(&Pair::new(from, to)) else {
                continue;
            };
            let daddr = underlay(to);
            if path.cut {
                let _ = writeln!(s, "    ip daddr {daddr} drop comment \"cut {from}-{to}\"");
                continue;
            }
            let loss = path.loss_per_mille();
            if loss > 0 {
                let _ = writeln!(
                    s,
                    "    ip daddr {daddr} numgen random mod 1000 < {loss} drop comment \"loss {from}-{to}\""
                );
            }
            if path.delay_ms > 0 {
                let _ = writeln!(
                    s,
                    "    ip daddr {daddr} fwd to \"{DELAY_DEVICE}\" comment \"delay {from}-{to}\""
                );
            }
        }
        let _ = writeln!(s, "  }}");
    }
    let _ = writeln!(s, "}}");
    s
}

/// The delay line's table: one line per direction with a delay,
/// `SOURCE DESTINATION MICROSECONDS`.
pub fn delays(paths: &BTreeMap<Pair, Impairment>) -> String {
    let mut s = String::new();
    for (pair, path) in paths {
        if path.delay_ms == 0 || path.cut {
            continue;
        }
        let us = u64::from(path.delay_ms) * 1000;
        let (a, b) = (underlay(pair.0), underlay(pair.1));
        let _ = writeln!(s, "{a} {b} {us}\n{b} {a} {us}");
    }
    s
}

/// Reads [`delays`]' format back: `(source, destination) -> microseconds`.
pub fn parse_delays(text: &str) -> Result<BTreeMap<(Ipv4Addr, Ipv4Addr), u64>, String> {
    let mut table = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let parsed = match fields[..] {
            [src, dst, us] => src.parse().ok().zip(dst.parse().ok()).zip(us.parse().ok()),
            _ => None,
        };
        let Some(((src, dst), us)) = parsed else {
            return Err(format!(
                "line {}: not SOURCE DESTINATION MICROSECONDS: {line:?}",
                n + 1
            ));
        };
        table.insert((src, dst), us);
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> BTreeMap<Pair, Impairment> {
        let mut p = BTreeMap::new();
        p.insert(
            Pair(1, 2),
            Impairment {
                delay_ms: 30,
                loss_percent: 2.5,
                cut: false,
            },
        );
        p.insert(
            Pair(1, 3),
            Impairment {
                delay_ms: 5,
                loss_percent: 0.0,
                cut: true,
            },
        );
        p.insert(Pair(2, 3), Impairment::default());
        p
    }

    #[test]
    fn each_direction_gets_its_rules_in_its_sources_chain() {
        let rules = ruleset(&[1, 2, 3], &paths());
        let chain = |from: u16| {
            let start = rules.find(&format!("chain from_{from} {{")).unwrap();
            let end = start + rules[start..].find("  }").unwrap();
            rules[start..end].to_owned()
        };
        let c1 = chain(1);
        assert!(c1.contains("device \"n1\""));
        assert!(c1.contains("ip daddr 198.18.2.2 numgen random mod 1000 < 25 drop"));
        assert!(c1.contains("ip daddr 198.18.2.2 fwd to \"delay\""));
        // Cut: dropped, and neither lossy nor delayed any more.
        assert!(c1.contains("ip daddr 198.18.3.2 drop comment \"cut 1-3\""));
        assert!(!c1.contains("198.18.3.2 fwd"));
        let c3 = chain(3);
        assert!(c3.contains("ip daddr 198.18.1.2 drop"));
        // Nothing on a clean path.
        assert!(!c3.contains("198.18.2.2"));
        assert!(rules.starts_with("table netdev detour_testbed\ndelete table"));
    }

    #[test]
    fn delays_name_both_directions_and_read_back() {
        let text = delays(&paths());
        assert_eq!(
            text,
            "198.18.1.2 198.18.2.2 30000\n198.18.2.2 198.18.1.2 30000\n"
        );
        let table = parse_delays(&text).unwrap();
        assert_eq!(table[&(underlay(2), underlay(1))], 30_000);
        assert!(parse_delays("1.2.3.4 5").unwrap_err().contains("line 1"));
    }
}
