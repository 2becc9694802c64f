//! What a run found: JSON, a Markdown table of ratios against every
//! baseline, and SVG plots, written to the results folder.

use std::fmt::Write as _;
use std::path::Path as FsPath;

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::measure::{Latency, Throughput, Timing};
use crate::paths::Path;

#[derive(Debug, Serialize)]
pub struct Report {
    pub date: String,
    pub command: String,
    pub machine: Machine,
    pub settings: Settings,
    /// Each path and size: its median round by lossless rate.
    pub results: Vec<Entry>,
    /// Every measurement, in the order taken.
    pub rounds: Vec<Entry>,
    pub ratios: Vec<Ratio>,
    pub targets: Vec<Target>,
    /// Every measurement taken while other work loaded the machine (from
    /// `rounds`).
    pub flagged: Vec<String>,
    /// Paths and sizes that forwarded nothing without loss.
    pub failed: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    /// Whether `perf stat` could count instructions and cycles.
    pub hardware_counters: bool,
}

#[derive(Debug, Serialize)]
pub struct Settings {
    pub quick: bool,
    pub queues: u32,
    pub frame_sizes: Vec<usize>,
    pub generator_cores: Vec<usize>,
    pub worker_cores: Vec<usize>,
    pub timing: Timing,
    pub rounds: usize,
    /// Above this share of the machine busy with other work, an entry is
    /// flagged.
    pub max_other_load: f64,
    /// Where receive work ran: `steered` (the gateway's on the worker
    /// cores, the sink's on the generator cores) or `sender` (veth's way).
    pub receive_work: String,
    pub generators: Generators,
}

/// The frame generators a run used (`detour_dataplane::generator`).
#[derive(Debug, Serialize)]
pub struct Generators {
    /// Flat out: `xdp-live-frames` or `af-xdp-tx`.
    pub flat_out: &'static str,
    /// Why that one: the kernel's refusal of live frames, or the
    /// environment's choice.
    pub flat_out_why: String,
    /// For the lossless rate and latency: always `af-xdp-tx`.
    pub paced: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The round it was measured in, from 0.
    pub round: usize,
    pub path: Path,
    pub name: &'static str,
    pub detour: bool,
    /// The site frame's size; overlay frames carry one of this size.
    pub frame_bytes: usize,
    /// The machine's busy share from other work just before.
    pub other_load: f64,
    pub flagged: Option<String>,
    pub throughput: Throughput,
    pub latency: Vec<Latency>,
    /// The dataplane's drops by reason, for detour's paths.
    pub drops: Option<Vec<(String, u64)>>,
}

#[derive(Debug, Serialize)]
pub struct Ratio {
    pub path: Path,
    pub frame_bytes: usize,
    pub baseline: Path,
    /// detour's forwarded rate over the baseline's.
    pub ratio: f64,
    /// One of the two rates is only a lower bound (the paced generator
    /// could offer no more), so the ratio is uncertain.
    pub generator_bound: bool,
}

#[derive(Debug, Serialize)]
pub struct Target {
    pub what: String,
    pub ratio: f64,
    pub at_least: f64,
    pub met: bool,
    /// The ratio is uncertain: see [`Ratio::generator_bound`].
    pub generator_bound: bool,
}

impl Report {
    pub fn entry(&self, path: Path, size: usize) -> Option<&Entry> {
        self.results
            .iter()
            .find(|e| e.path == path && e.frame_bytes == size)
    }

    /// Fills in what `rounds` gives: the medians, the flagged list, the
    /// ratios and the targets.
    pub fn summarise(&mut self) {
        self.pick_medians();
        self.flagged = self
            .rounds
            .iter()
            .filter_map(|e| e.flagged.clone())
            .collect();
        self.compute_ratios();
    }

    /// Each path and size's median round (by lossless rate) into
    /// `results`, in the order first measured.
    fn pick_medians(&mut self) {
        let mut keys: Vec<(Path, usize)> = Vec::new();
        for e in &self.rounds {
            if !keys.contains(&(e.path, e.frame_bytes)) {
                keys.push((e.path, e.frame_bytes));
            }
        }
        self.results = keys
            .into_iter()
            .filter_map(|(path, size)| {
                let mut of: Vec<&Entry> = self
                    .rounds
                    .iter()
                    .filter(|e| e.path == path && e.frame_bytes == size)
                    .collect();
                of.sort_by(|a, b| {
                    a.throughput
                        .lossless_pps
                        .total_cmp(&b.throughput.lossless_pps)
                });
                of.get(of.len() / 2).map(|e| (*e).clone())
            })
            .collect();
    }

    /// Every detour path against every baseline, same frame size.
    fn compute_ratios(&mut self) {
        let mut ratios = Vec::new();
        for d in self.results.iter().filter(|e| e.detour) {
            for b in self
                .results
                .iter()
                .filter(|e| !e.detour && e.frame_bytes == d.frame_bytes)
            {
                ratios.push(Ratio {
                    path: d.path,
                    frame_bytes: d.frame_bytes,
                    baseline: b.path,
                    ratio: d.throughput.lossless_pps / b.throughput.lossless_pps,
                    generator_bound: d.throughput.generator_bound || b.throughput.generator_bound,
                });
            }
        }
        // Each sealed path against itself in the clear.
        for d in &self.results {
            let Some(clear) = d.path.in_the_clear() else {
                continue;
            };
            if let Some(c) = self.entry(clear, d.frame_bytes) {
                ratios.push(Ratio {
                    path: d.path,
                    frame_bytes: d.frame_bytes,
                    baseline: clear,
                    ratio: d.throughput.lossless_pps / c.throughput.lossless_pps,
                    generator_bound: d.throughput.generator_bound || c.throughput.generator_bound,
                });
            }
        }
        self.ratios = ratios;
        let relay_against = |baseline| (Path::Relay, baseline, 64);
        let sealed = |path: Path, size| (path, path.in_the_clear().expect("a sealed path"), size);
        self.targets = [
            (relay_against(Path::AfXdpSwap), 0.9),
            (relay_against(Path::UdpRelay), 1.8),
            (relay_against(Path::KernelForwardRps), 1.0),
            (sealed(Path::EncapSealed, 64), 0.7),
            (sealed(Path::DecapSealed, 64), 0.7),
            (sealed(Path::RelaySealed, 64), 0.95),
            (sealed(Path::RelaySealed, 1500), 0.95),
        ]
        .into_iter()
        .filter_map(|((path, baseline, size), at_least)| {
            let r = self
                .ratios
                .iter()
                .find(|r| r.path == path && r.baseline == baseline && r.frame_bytes == size)?;
            Some(Target {
                what: format!("{}, {size} B, against {}", path.name(), baseline.name()),
                ratio: r.ratio,
                at_least,
                met: r.ratio >= at_least,
                generator_bound: r.generator_bound,
            })
        })
        .collect();
    }

    pub fn ratio_table(&self) -> String {
        let baselines: Vec<Path> = Path::ALL.into_iter().filter(|p| !p.is_detour()).collect();
        let baselines: Vec<Path> = baselines
            .into_iter()
            .filter(|b| self.ratios.iter().any(|r| r.baseline == *b))
            .collect();
        let sealed = self.results.iter().any(|e| e.path.in_the_clear().is_some());
        let mut out = String::from("| detour path | frame | Mpps |");
        if sealed {
            out.push_str(" × the same in the clear |");
        }
        for b in &baselines {
            let _ = write!(out, " × {} |", b.name());
        }
        out.push_str("\n| --- | ---: | ---: |");
        out.push_str(&" ---: |".repeat(baselines.len() + usize::from(sealed)));
        out.push('\n');
        for e in self.results.iter().filter(|e| e.detour) {
            let _ = write!(
                out,
                "| {} | {} B | {:.3} |",
                e.name,
                e.frame_bytes,
                e.throughput.lossless_pps / 1e6
            );
            let clear = sealed.then(|| e.path.in_the_clear());
            for b in clear.into_iter().chain(baselines.iter().map(|b| Some(*b))) {
                match self.ratios.iter().find(|r| {
                    Some(r.baseline) == b && r.path == e.path && r.frame_bytes == e.frame_bytes
                }) {
                    Some(r) => {
                        let mark = if r.generator_bound { "*" } else { "" };
                        let _ = write!(out, " {:.2}{mark} |", r.ratio);
                    }
                    None => out.push_str(" — |"),
                }
            }
            out.push('\n');
        }
        if self.ratios.iter().any(|r| r.generator_bound) {
            out.push_str(
                "\n\\* one of the two rates is a lower bound: the paced generator could offer no more.\n",
            );
        }
        if !self.targets.is_empty() {
            out.push_str("\n| target | ratio | goal | met |\n| --- | ---: | ---: | --- |\n");
            for t in &self.targets {
                let mark = if t.generator_bound { "*" } else { "" };
                let met = if t.met { "yes" } else { "no" };
                let _ = writeln!(
                    out,
                    "| {} | {:.2}{mark} | ≥ {} | {met} |",
                    t.what, t.ratio, t.at_least
                );
            }
        }
        out
    }

    pub fn results_table(&self) -> String {
        let mut out = String::from(
            "| path | frame | lossless Mpps | Gbit/s | flat out: offered / forwarded Mpps | CPU busy | worker ns/pkt (user + sys) | latency p50 / p99 µs at 10 / 50 / 90 % | other load |\n\
             | --- | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: |\n",
        );
        for e in &self.results {
            let t = &e.throughput;
            let busy = t
                .cpu_busy
                .iter()
                .map(|b| format!("{:.0}", b * 100.0))
                .collect::<Vec<_>>()
                .join(" / ");
            let worker = t.worker.as_ref().map_or("—".into(), |w| {
                format!(
                    "{:.0} ({:.0} + {:.0})",
                    w.ns_per_packet, w.user_ns_per_packet, w.system_ns_per_packet
                )
            });
            let latency = e
                .latency
                .iter()
                .map(|l| format!("{:.1} / {:.1}", l.p50_us, l.p99_us))
                .collect::<Vec<_>>()
                .join(", ");
            let flag = if e.flagged.is_some() { " (busy)" } else { "" };
            let _ = writeln!(
                out,
                "| {} | {} B | {}{:.3} | {:.2} | {:.3} / {:.3} | {busy} % | {worker} | {latency} | {:.0} %{flag} |",
                e.name,
                e.frame_bytes,
                if t.generator_bound { "≥ " } else { "" },
                t.lossless_pps / 1e6,
                t.lossless_bps / 1e9,
                t.flat_out.offered_pps / 1e6,
                t.flat_out.pps / 1e6,
                e.other_load * 100.0
            );
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = format!(
            "# detour benchmark, {}\n\n`{}` on {} ({} CPUs), kernel {}; {} queue(s), generator on CPU {:?}, \
             workers on CPU {:?}, receive work {}; median of {} run(s) of {} s at the lossless rate, \
             median of {} round(s). Generators: flat out {} ({}), paced {}.\n\n\
             ## Ratios: detour's lossless rate over each baseline's\n\n",
            self.date,
            self.command,
            self.machine.cpu_model,
            self.machine.cpus,
            self.machine.kernel,
            self.settings.queues,
            self.settings.generator_cores,
            self.settings.worker_cores,
            self.settings.receive_work,
            self.settings.timing.runs,
            self.settings.timing.seconds,
            self.settings.rounds,
            self.settings.generators.flat_out,
            self.settings.generators.flat_out_why,
            self.settings.generators.paced,
        );
        out.push_str(&self.ratio_table());
        out.push_str("\n## Every path\n\n");
        out.push_str(&self.results_table());
        if !self.failed.is_empty() {
            out.push_str("\nFailed (no rate tried was forwarded without loss):\n\n");
            for f in &self.failed {
                let _ = writeln!(out, "- {f}");
            }
        }
        if !self.flagged.is_empty() {
            out.push_str("\nFlagged (the machine was busy with other work):\n\n");
            for f in &self.flagged {
                let _ = writeln!(out, "- {f}");
            }
        }
        out
    }

    pub fn write(&self, dir: &FsPath) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let write = |name: &str, text: String| {
            std::fs::write(dir.join(name), text).with_context(|| format!("writing {name}"))
        };
        write("report.json", serde_json::to_string_pretty(self)?)?;
        write("report.md", self.markdown())?;
        write("throughput.svg", crate::plot::throughput(self))?;
        for size in &self.settings.frame_sizes {
            write(
                &format!("latency-cdf-{size}.svg"),
                crate::plot::latency_cdf(self, *size),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::{FlatOut, Latency};

    fn entry(path: Path, size: usize, pps: f64, generator_bound: bool) -> Entry {
        Entry {
            round: 0,
            path,
            name: path.name(),
            detour: path.is_detour(),
            frame_bytes: size,
            other_load: 0.01,
            flagged: None,
            throughput: Throughput {
                lossless_pps: pps,
                lossless_bps: pps * 8.0 * size as f64,
                generator_bound,
                cpu_busy: vec![0.5, 1.0],
                steal: 0.0,
                worker: None,
                flat_out: FlatOut {
                    offered_pps: 5e6,
                    pps: pps / 2.0,
                },
            },
            latency: vec![Latency {
                load_percent: 50,
                offered_pps: pps / 2.0,
                received_pps: pps / 2.0,
                p50_us: 20.0,
                p90_us: 30.0,
                p99_us: 90.0,
                p999_us: 200.0,
                max_us: 300.0,
                cdf: vec![(10.0, 0.1), (20.0, 0.5), (300.0, 1.0)],
            }],
            drops: None,
        }
    }

    fn report(results: Vec<Entry>) -> Report {
        let mut r = Report {
            date: "today".into(),
            command: "scripts/bench --quick".into(),
            machine: Machine {
                kernel: "6.18".into(),
                cpu_model: "test".into(),
                cpus: 2,
                hardware_counters: false,
            },
            settings: Settings {
                quick: true,
                queues: 1,
                frame_sizes: vec![64, 1500],
                generator_cores: vec![0],
                worker_cores: vec![1],
                timing: Timing {
                    warm_s: 0.5,
                    seconds: 2.0,
                    runs: 1,
                    latency_s: 0.5,
                    search_steps: 6,
                    trial_s: 0.5,
                },
                max_other_load: 0.1,
                receive_work: "steered".into(),
                generators: Generators {
                    flat_out: "af-xdp-tx",
                    flat_out_why: "test".into(),
                    paced: "af-xdp-tx",
                },
                rounds: 1,
            },
            results: Vec::new(),
            rounds: results,
            ratios: Vec::new(),
            targets: Vec::new(),
            flagged: Vec::new(),
            failed: Vec::new(),
        };
        r.summarise();
        r
    }

    #[test]
    fn each_path_reports_its_median_round() {
        let mut entries = vec![
            entry(Path::Relay, 64, 300_000.0, false),
            entry(Path::Relay, 64, 100_000.0, false),
            entry(Path::UdpRelay, 64, 50_000.0, false),
            entry(Path::Relay, 64, 200_000.0, false),
        ];
        for (round, e) in entries.iter_mut().enumerate() {
            e.round = round;
        }
        entries[1].flagged = Some("steal 30 %".into());
        let r = report(entries);
        assert_eq!(r.flagged, vec!["steal 30 %".to_string()]);
        assert_eq!(r.results.len(), 2);
        assert_eq!((r.results[0].path, r.results[0].round), (Path::Relay, 3));
        assert_eq!(r.results[0].throughput.lossless_pps, 200_000.0);
        assert_eq!(r.results[1].path, Path::UdpRelay);
        assert_eq!(r.rounds.len(), 4);
    }

    #[test]
    fn ratios_compare_each_detour_path_with_each_baseline_of_its_size() {
        let r = report(vec![
            entry(Path::Relay, 64, 400_000.0, false),
            entry(Path::Relay, 1500, 200_000.0, false),
            entry(Path::UdpRelay, 64, 100_000.0, false),
            entry(Path::UdpRelay, 1500, 100_000.0, false),
            entry(Path::AfXdpSwap, 64, 500_000.0, true),
        ]);
        let ratio = |size, baseline| {
            r.ratios
                .iter()
                .find(|x| x.frame_bytes == size && x.baseline == baseline)
                .map(|x| (x.ratio, x.generator_bound))
        };
        assert_eq!(ratio(64, Path::UdpRelay), Some((4.0, false)));
        assert_eq!(ratio(1500, Path::UdpRelay), Some((2.0, false)));
        assert_eq!(ratio(64, Path::AfXdpSwap), Some((0.8, true)));
        assert_eq!(ratio(1500, Path::AfXdpSwap), None);
        assert_eq!(r.ratios.len(), 3);

        let met: Vec<(bool, bool)> = r
            .targets
            .iter()
            .map(|t| (t.met, t.generator_bound))
            .collect();
        // Against the ceiling (0.8 < 0.9, uncertain), the UDP relay (4 ≥
        // 1.8); Linux with RPS was not measured.
        assert_eq!(met, vec![(false, true), (true, false)]);
    }

    #[test]
    fn the_ratio_table_marks_uncertain_ratios_and_names_every_baseline_measured() {
        let r = report(vec![
            entry(Path::Relay, 64, 400_000.0, false),
            entry(Path::AfXdpSwap, 64, 500_000.0, true),
        ]);
        let table = r.ratio_table();
        assert!(table.contains("× AF_XDP MAC swap (ceiling)"), "{table}");
        assert!(!table.contains("UDP relay"), "{table}");
        assert!(
            table.contains("| detour relay | 64 B | 0.400 | 0.80* |"),
            "{table}"
        );
        assert!(table.contains("lower bound"), "{table}");
    }

    #[test]
    fn plots_have_a_bar_per_entry_and_a_line_per_path() {
        let r = report(vec![
            entry(Path::Relay, 64, 400_000.0, false),
            entry(Path::Relay, 1500, 200_000.0, false),
            entry(Path::UdpRelay, 64, 100_000.0, false),
        ]);
        let bars = crate::plot::throughput(&r);
        assert!(bars.starts_with("<svg") && bars.trim_end().ends_with("</svg>"));
        for mpps in ["0.400", "0.200", "0.100"] {
            assert!(bars.contains(&format!(">{mpps}</text>")), "{mpps}: {bars}");
        }
        assert!(bars.contains("64-byte frames") && bars.contains("1500-byte frames"));
        let cdf = crate::plot::latency_cdf(&r, 64);
        assert_eq!(cdf.matches("<polyline").count(), 2, "{cdf}");
        assert!(cdf.contains("UDP relay (recvmmsg/sendmmsg 64)"));
    }
}
