//! What a benchmark's report says of the machine and the moment it ran.

use std::process::Command;

/// The CPU's model name, from /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The running kernel's release (`uname -r`).
pub fn kernel() -> String {
    output("uname", &["-r"])
}

/// Now, as a report dates itself: `2026-12-07 23:42 UTC`.
pub fn now_utc() -> String {
    output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
}

/// What `program` prints, trimmed; empty if it cannot run.
fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
