//! The kit cleans up after itself: on drop, on panic, and after a test
//! process that was killed. Needs root.

use std::ffi::CString;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use detour_testkit::{BpffsDir, Netns, Process, require_root, run, sweep_orphans};

fn namespaces() -> String {
    let out = run(Command::new("ip").args(["netns", "list"])).unwrap();
    String::from_utf8(out.stdout).unwrap()
}

fn has_interface(name: &str) -> bool {
    let name = CString::new(name).unwrap();
    // SAFETY: a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

#[test]
fn netns_veth_lives_inside_its_namespaces_and_goes_with_them() {
    require_root();
    let a = Netns::new("a").unwrap();
    let b = Netns::new("b").unwrap();
    a.veth("kit0", &b, "kit1").unwrap();
    assert!(a.enter(|| has_interface("kit0")).unwrap());
    assert!(b.enter(|| has_interface("kit1")).unwrap());
    assert!(
        !has_interface("kit0"),
        "nothing is created in the caller's namespace"
    );
    let names = [a.name().to_owned(), b.name().to_owned()];
    assert!(names.iter().all(|n| namespaces().contains(n.as_str())));
    drop((a, b));
    let left = namespaces();
    assert!(names.iter().all(|n| !left.contains(n.as_str())), "{left}");
}

#[test]
fn netns_spawned_thread_and_the_threads_it_starts_live_in_the_namespace() {
    require_root();
    let a = Netns::new("a").unwrap();
    let b = Netns::new("b").unwrap();
    a.veth("kit2", &b, "kit3").unwrap();
    let seen = a
        .spawn(|| {
            let child = std::thread::spawn(|| has_interface("kit2"));
            (has_interface("kit2"), child.join().unwrap())
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(seen, (true, true));
    assert!(
        !has_interface("kit2"),
        "the caller's namespace is untouched"
    );
}

#[test]
fn netns_is_removed_when_the_test_panics() {
    require_root();
    let name = Mutex::new(String::new());
    let outcome = std::panic::catch_unwind(|| {
        let ns = Netns::new("panics").unwrap();
        *name.lock().unwrap() = ns.name().to_owned();
        panic!("a failing test");
    });
    assert!(outcome.is_err());
    let name = name.into_inner().unwrap();
    assert!(!name.is_empty());
    assert!(!namespaces().contains(&name));
}

#[test]
fn netns_left_by_a_dead_process_is_swept() {
    require_root();
    // No process can have a pid of pid_max or more.
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap();
    let orphan = format!("dt-{}-0-orphan", pid_max.trim());
    run(Command::new("ip").args(["netns", "add", &orphan])).unwrap();
    sweep_orphans();
    if namespaces().contains(&orphan) {
        let _ = run(Command::new("ip").args(["netns", "del", &orphan]));
        panic!("orphan {orphan} survived the sweep");
    }
}

#[test]
fn netns_process_is_killed_when_its_guard_drops() {
    require_root();
    let ns = Netns::new("proc").unwrap();
    let process = Process::spawn(ns.command("sleep").arg("30")).unwrap();
    let proc_dir = Path::new("/proc").join(process.id().to_string());
    assert!(proc_dir.exists());
    drop(process);
    assert!(!proc_dir.exists(), "killed and reaped");
}

#[test]
fn netns_bpffs_dir_is_removed_with_what_it_holds() {
    require_root();
    let dir = BpffsDir::new("kit").unwrap();
    let path = dir.path().to_owned();
    std::fs::create_dir(path.join("inner")).unwrap();
    drop(dir);
    assert!(!path.exists());
}
