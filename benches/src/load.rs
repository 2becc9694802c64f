//! How busy the machine is with work that is not the benchmark's: sampled
//! while the harness is idle between paths, and the hypervisor's steal
//! during a measurement. A run measured on a busy machine is flagged.

use std::time::Duration;

/// Per-CPU jiffies from /proc/stat: (busy, total, steal).
#[derive(Debug, Clone)]
pub struct CpuTimes(Vec<(u64, u64, u64)>);

impl CpuTimes {
    pub fn now() -> CpuTimes {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        CpuTimes(
            stat.lines()
                .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
                .map(|l| {
                    let v: Vec<u64> = l
                        .split_whitespace()
                        .skip(1)
                        .filter_map(|x| x.parse().ok())
                        .collect();
                    // user nice system idle iowait irq softirq steal
                    let total: u64 = v.iter().take(8).sum();
                    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
                    (total - idle, total, v.get(7).copied().unwrap_or(0))
                })
                .collect(),
        )
    }

    /// The share of CPU `cpu` busy since `earlier` (0 to 1).
    pub fn busy_since(&self, earlier: &CpuTimes, cpu: usize) -> f64 {
        match (self.0.get(cpu), earlier.0.get(cpu)) {
            (Some(a), Some(b)) => (a.0 - b.0) as f64 / (a.1 - b.1).max(1) as f64,
            _ => f64::NAN,
        }
    }

    /// The share of all CPUs' time busy since `earlier`.
    pub fn all_busy_since(&self, earlier: &CpuTimes) -> f64 {
        self.share_since(earlier, |t| t.0)
    }

    /// The share of all CPUs' time the hypervisor took since `earlier`.
    pub fn steal_since(&self, earlier: &CpuTimes) -> f64 {
        self.share_since(earlier, |t| t.2)
    }

    /// What `part` of the jiffies grew since `earlier`, over all CPUs'
    /// total.
    fn share_since(&self, earlier: &CpuTimes, part: impl Fn(&(u64, u64, u64)) -> u64) -> f64 {
        let (grew, total) = self
            .0
            .iter()
            .zip(&earlier.0)
            .fold((0, 0), |(g, t), (a, e)| {
                (g + part(a) - part(e), t + a.1 - e.1)
            });
        grew as f64 / total.max(1) as f64
    }
}

/// The share of the machine busy over `window` while the harness does
/// nothing: other people's work.
pub fn other_load(window: Duration) -> f64 {
    let before = CpuTimes::now();
    std::thread::sleep(window);
    CpuTimes::now().all_busy_since(&before)
}

/// (user, system) CPU time of thread `tid` of this process, in ns.
pub fn thread_cpu_ns(tid: i32) -> Option<(u64, u64)> {
    detour_testkit::cpu_ns(std::path::Path::new(&format!("/proc/self/task/{tid}/stat")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_threads_cpu_time_grows_as_it_works() {
        let tid = unsafe { libc::gettid() };
        let (user0, system0) = thread_cpu_ns(tid).expect("own thread");
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let (user1, system1) = thread_cpu_ns(tid).unwrap();
        assert!(
            user1 + system1 > user0 + system0,
            "{user0}+{system0} → {user1}+{system1}"
        );
    }

    #[test]
    fn cpu_shares_lie_between_nothing_and_everything() {
        let before = CpuTimes::now();
        std::thread::sleep(Duration::from_millis(30));
        let after = CpuTimes::now();
        assert!(!before.0.is_empty());
        let all = after.all_busy_since(&before);
        assert!((0.0..=1.0).contains(&all), "{all}");
        assert!((0.0..=1.0).contains(&after.steal_since(&before)));
        assert!(after.busy_since(&before, 0) <= 1.0);
        assert!(after.busy_since(&before, 10_000).is_nan());
    }
}
