//! The `detour-dataplane` command line without privileges: configuration
//! errors are one line naming the file, the line and the key (a flag's
//! value: the key), with exit status 2; `--check` prints the merged
//! configuration.

use std::process::{Command, Output};

fn dataplane(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_detour-dataplane"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn configuration_errors_name_the_key_and_exit_2() {
    let dir = std::env::temp_dir().join(format!("dt-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("dataplane.toml");
    std::fs::write(
        &file,
        "node_id = 4\n[wan]\ninterface = \"eth0\"\n[afxdp]\nring_size = 1000\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--wan", "eth0"], "configuration: node_id: missing"),
        (&["--node-id", "7"], "configuration: wan.interface: missing"),
        (
            &["-c", file],
            "dataplane.toml: line 5: afxdp.ring_size: 1000 is not a power of two",
        ),
        // A flag's value is no line of the file.
        (
            &["-c", file, "--ring-size", "100"],
            "configuration: afxdp.ring_size: 100 is not a power of two",
        ),
        (
            &["-c", "/nonexistent/dataplane.toml"],
            "/nonexistent/dataplane.toml: No such file",
        ),
        (
            &["--node-id", "7", "--wan", "eth0", "--queues", "0,0"],
            "afxdp.queues: queue 0 is listed twice",
        ),
    ];
    for (args, expected) in cases {
        let out = dataplane(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn flags_override_the_file() {
    let dir = std::env::temp_dir().join(format!("dt-cli-over-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("dataplane.toml");
    std::fs::write(
        &file,
        "node_id = 4\n[wan]\ninterface = \"eth0\"\n[overlay]\nport = 7000\n",
    )
    .unwrap();
    let out = dataplane(&["-c", file.to_str().unwrap(), "--node-id", "9", "--check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("NodeId(\n        9,"), "{stdout}");
    assert!(stdout.contains("port: 7000"), "{stdout}");
    assert!(stdout.contains("wan: \"eth0\""), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}
