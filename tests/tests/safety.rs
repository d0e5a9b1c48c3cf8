//! Safe defaults of the `dice` binary: secrets owner-only, a taken port a clear error, a
//! write the store cannot commit answered MISCONF and applied nowhere.
#![allow(clippy::unwrap_used)]

use dice_tests::{NodeProcess, dice_bin};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn keygen_writes_an_owner_only_key_and_never_overwrites_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.key");
    let out = Command::new(dice_bin())
        .arg("keygen")
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&key), 0o600);
    let first = std::fs::read_to_string(&key).unwrap();
    assert!(first.starts_with("/key/swarm/psk/1.0.0/"), "{first}");

    let out = Command::new(dice_bin())
        .arg("keygen")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&key).unwrap(), first);
}

#[test]
fn keygen_redirected_to_a_file_makes_it_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("redirected.key");
    // What `dice keygen > FILE` does: the shell creates FILE with its umask.
    let file = std::fs::File::create(&key).unwrap();
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
        .unwrap();
    let status = Command::new(dice_bin())
        .arg("keygen")
        .stdout(Stdio::from(file))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(mode(&key), 0o600);
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(text.starts_with("/key/swarm/psk/1.0.0/"), "{text}");
}

#[test]
fn a_key_file_readable_by_others_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("open.key");
    let out = Command::new(dice_bin()).arg("keygen").output().unwrap();
    assert!(out.status.success());
    std::fs::write(&key, &out.stdout).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let data = dir.path().join("data");
    let out = Command::new(dice_bin())
        .arg("--data")
        .arg(&data)
        .args(["node", "--no-mdns", "--api", "127.0.0.1:0"])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--cluster-key"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn a_peer_port_already_in_use_is_a_clear_startup_error() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let mut a = NodeProcess::start(a_dir.path(), &[]);
    let log = a.wait_log("node running", Duration::from_secs(15));
    let addr = dice_tests::dial_addr(&log);
    // The same listen address as A's, on another data dir.
    let bare = addr.split("/p2p/").next().unwrap().to_string();
    let out = Command::new(dice_bin())
        .arg("--data")
        .arg(b_dir.path())
        .args([
            "node",
            "--no-mdns",
            "--api",
            "127.0.0.1:0",
            "--listen",
            &bare,
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success(), "a second node started on {bare}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already in use"), "{err}");
    assert!(!a.exited());
}

/// Sends one RESP command, returns the raw reply (read until it looks complete).
fn resp(stream: &mut TcpStream, args: &[&str]) -> String {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(req.as_bytes()).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = stream.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn deleting_the_database_under_a_node_refuses_writes_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]);
    let log = node.wait_log("node running", Duration::from_secs(15));
    let api = log
        .lines()
        .find(|l| l.contains("node running"))
        .and_then(|l| l.split("api=").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();
    let mut c = TcpStream::connect(&api).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(resp(&mut c, &["SET", "before", "1"]), "+OK\r\n");
    // (The node's allocator, jemalloc, reports what it holds next to `used_memory`.)
    let memory = resp(&mut c, &["INFO", "memory"]);
    let allocated: u64 = memory
        .lines()
        .find_map(|l| l.strip_prefix("allocator_allocated:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no allocator_allocated: {memory}"));
    assert!(allocated > 1 << 20, "{memory}");
    // `used_memory` counts what jemalloc holds beyond dice's own parts, less the node's base
    // (`used_memory_other`), so its parts add up to it.
    let field = |name: &str| -> u64 {
        memory
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name}: {memory}"))
    };
    assert_eq!(
        field("used_memory"),
        field("used_memory_dataset")
            + field("used_memory_pending")
            + field("used_memory_clients")
            + field("used_memory_other"),
        "{memory}"
    );
    for name in ["dice.sqlite3", "dice.sqlite3-wal", "dice.sqlite3-shm"] {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = resp(&mut c, &["INFO", "persistence"]);
        if info.contains("dice_writes_refused:1") {
            assert!(info.contains("was deleted"), "{info}");
            break;
        }
        assert!(Instant::now() < deadline, "never noticed: {info}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let reply = resp(&mut c, &["SET", "after", "2"]);
    assert!(reply.starts_with("-MISCONF"), "{reply}");
    assert_eq!(resp(&mut c, &["GET", "before"]), "$1\r\n1\r\n");
    assert_eq!(resp(&mut c, &["GET", "after"]), "$-1\r\n");
    node.wait_log("writes are refused", Duration::from_secs(5));
}
