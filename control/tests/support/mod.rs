//! What the control process's namespace tests share: three real
//! `detour-control` processes on one bridge.

#![allow(dead_code)] // Each test file uses its own part.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;

use detour_control::keys::PrivateKey;
use detour_testkit::{Netns, Process, ScratchPath, require_root};

/// Nodes 1 to 3 at 192.0.2.1–3 on one bridge, each in its namespace with
/// `eth0` on the bridge, each running `detour-control`.
pub struct Overlay {
    pub nodes: Vec<Netns>,
    _bridge: Netns,
    _files: Vec<ScratchPath>,
    pub configs: Vec<PathBuf>,
    /// Each node's control API socket.
    pub api_sockets: Vec<PathBuf>,
    processes: Vec<Option<Process>>,
}

impl Overlay {
    /// The namespaces and configurations; `node1` is added to node 1's
    /// file (its `[dataplane]` section, say), while nodes 2 and 3 run
    /// without a dataplane. Starts every control process.
    pub fn up(node1: &str) -> Overlay {
        let mut overlay = Overlay::configured(node1);
        for i in 1..=3 {
            overlay.start(i);
        }
        overlay
    }

    /// As [`Self::up`], starting nothing.
    pub fn configured(node1: &str) -> Overlay {
        require_root();
        let bridge = Netns::new("br").unwrap();
        bridge
            .ip(&["link", "add", "br0", "type", "bridge"])
            .unwrap();
        bridge.ip(&["link", "set", "br0", "up"]).unwrap();
        let mut nodes = Vec::new();
        for i in 1..=3 {
            let ns = Netns::new(&format!("n{i}")).unwrap();
            ns.quiet().unwrap();
            ns.veth("eth0", &bridge, &format!("p{i}")).unwrap();
            bridge
                .ip(&["link", "set", &format!("p{i}"), "master", "br0"])
                .unwrap();
            ns.ip(&["addr", "add", &format!("192.0.2.{i}/24"), "dev", "eth0"])
                .unwrap();
            nodes.push(ns);
        }

        let mut files = Vec::new();
        let mut configs = Vec::new();
        let mut api_sockets = Vec::new();
        for i in 1..=3u16 {
            let key = ScratchPath::new(&format!("private{i}.key"));
            std::fs::write(key.path(), private_key(i).to_base64()).unwrap();
            std::fs::set_permissions(key.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
            let mut text = format!(
                "node_id = {i}\nprivate_key_file = {:?}\nunderlay = \"192.0.2.{i}\"\nprefixes = [\"10.{i}.0.0/16\"]\n",
                key.path()
            );
            files.push(key);
            for j in (1..=3u16).filter(|j| *j != i) {
                text += &format!(
                    "\n[[peers]]\nid = {j}\npublic_key = \"{}\"\nunderlay = \"192.0.2.{j}\"\nprefixes = [\"10.{j}.0.0/16\"]\n",
                    private_key(j).public_key()
                );
            }
            if i == 1 {
                text += "\n";
                text += node1;
            } else {
                text += "\n[dataplane]\ninstall = false\n";
            }
            let api = ScratchPath::new("control.sock");
            text += &format!("\n[api]\nsocket = {:?}\n", api.path());
            let file = ScratchPath::new(&format!("control{i}.toml"));
            std::fs::write(file.path(), text).unwrap();
            configs.push(file.path().to_owned());
            api_sockets.push(api.path().to_owned());
            files.push(file);
            files.push(api);
        }
        Overlay {
            nodes,
            _bridge: bridge,
            _files: files,
            configs,
            api_sockets,
            processes: vec![None, None, None],
        }
    }

    pub fn start(&mut self, node: usize) {
        self.start_with(node, &[]);
    }

    /// Starts node `node`'s control process with `env` added.
    pub fn start_with(&mut self, node: usize, env: &[(&str, &str)]) {
        let mut command = self.nodes[node - 1].command(env!("CARGO_BIN_EXE_detour-control"));
        command
            .arg("--config")
            .arg(&self.configs[node - 1])
            .env("DETOUR_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null());
        self.processes[node - 1] = Some(Process::spawn(&mut command).unwrap());
    }

    /// The process id of node `node`'s control process, if it runs.
    pub fn pid(&self, node: usize) -> Option<u32> {
        self.processes[node - 1].as_ref().map(Process::id)
    }

    pub fn stop(&mut self, node: usize) {
        self.processes[node - 1] = None;
    }

    /// Drops everything between node 1 and node 2, both ways, in node 1.
    pub fn cut_1_2(&self) {
        let rules = "table inet dtcut {\n\
             chain in { type filter hook input priority 0; ip saddr 192.0.2.2 drop; }\n\
             chain out { type filter hook output priority 0; ip daddr 192.0.2.2 drop; }\n\
             }\n";
        let file = ScratchPath::new("cut.nft");
        std::fs::write(file.path(), rules).unwrap();
        self.nodes[0]
            .exec("nft", &["-f", file.path().to_str().unwrap()])
            .unwrap();
    }
}

/// Node `i`'s private key in these tests: `i` in every byte.
pub fn private_key(i: u16) -> PrivateKey {
    PrivateKey::from_bytes([i as u8; 32])
}
