//! The `dice` client commands as a newcomer meets them, with the real binary: values from
//! stdin and files, byte-exact binary and 200 KiB values (offline and through a node), a
//! mistyped data directory, a wrong password, an empty key, a closed pipe, offline status,
//! and errors that say their cause once.
#![allow(clippy::unwrap_used)]

use dice_tests::{NodeProcess, dice, dice_bin};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `dice --data DIR ARGS...` with `input` on its stdin.
fn dice_stdin(dir: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(dice_bin())
        .arg("--data")
        .arg(dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "dice failed: {}", stderr(&out));
    out
}

/// Every byte value, a NUL, CR LF, invalid UTF-8 and a trailing newline: what a text-only
/// path would mangle.
fn binary_value() -> Vec<u8> {
    let mut v: Vec<u8> = (0..=255u8).collect();
    v.extend_from_slice(b"\0\r\n\xff\xfe not utf-8 \xc3\x28\n");
    v
}

/// 200 KiB, more than a shell passes in one argument on many systems (and more than the
/// 128 KiB a single argument may hold on Linux), not repeating.
fn large_value() -> Vec<u8> {
    (0..200 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// put (stdin, --file) and get (--raw, and with its newline) round-trip bytes exactly on
/// `dir`, whether a node serves it or not.
fn values_round_trip(dir: &Path, scratch: &Path) {
    let binary = binary_value();
    let large = large_value();

    ok(dice_stdin(dir, &["put", "bin-stdin", "-"], &binary));
    let file = scratch.join("large.bin");
    std::fs::write(&file, &large).unwrap();
    ok(dice(
        dir,
        &["put", "large-file", "--file", file.to_str().unwrap()],
    ));
    ok(dice_stdin(dir, &["put", "large-stdin", "-"], &large));
    let bin_file = scratch.join("binary.bin");
    std::fs::write(&bin_file, &binary).unwrap();
    ok(dice(
        dir,
        &["put", "bin-file", "--file", bin_file.to_str().unwrap()],
    ));
    // The value "-" itself, from stdin.
    ok(dice_stdin(dir, &["put", "dash", "-"], b"-"));

    for (key, want) in [
        ("bin-stdin", &binary),
        ("bin-file", &binary),
        ("large-file", &large),
        ("large-stdin", &large),
    ] {
        let out = ok(dice(dir, &["get", "--raw", key]));
        assert!(out.stdout == *want, "{key}: --raw output differs");
        let out = ok(dice(dir, &["get", key]));
        assert_eq!(out.stdout.len(), want.len() + 1, "{key}");
        assert!(out.stdout.starts_with(want) && out.stdout.ends_with(b"\n"));
    }
    assert_eq!(ok(dice(dir, &["get", "--raw", "dash"])).stdout, b"-");

    // Past the 1 MiB limit: the limit, in the same words offline and through a node.
    let out = dice_stdin(dir, &["put", "huge", "-"], &vec![7u8; 1024 * 1024 + 1]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("value of 1048577 bytes exceeds the limit of 1048576 bytes"),
        "{}",
        stderr(&out)
    );
    // A file that does not exist is a usage error, and nothing is stored.
    let out = dice(dir, &["put", "nofile", "--file", "/nonexistent/dice-value"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("/nonexistent/dice-value"));
    assert_eq!(dice(dir, &["get", "nofile"]).status.code(), Some(1));
}

#[test]
fn binary_and_large_values_round_trip_offline_and_through_a_node() {
    let scratch = tempfile::tempdir().unwrap();
    let offline = tempfile::tempdir().unwrap();
    values_round_trip(offline.path(), scratch.path());

    let served = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(served.path(), &[]);
    node.wait_log("node running", Duration::from_secs(15));
    values_round_trip(served.path(), scratch.path());
    assert!(node.terminate(Duration::from_secs(10)).unwrap().success());
    // What the node acknowledged is on disk, byte for byte.
    let out = ok(dice(served.path(), &["get", "--raw", "large-stdin"]));
    assert!(out.stdout == large_value());
}

#[test]
fn a_missing_data_dir_is_a_usage_error_and_is_not_created() {
    let parent = tempfile::tempdir().unwrap();
    let typo = parent.path().join("typo");
    for args in [
        &["get", "x"][..],
        &["put", "x", "y"][..],
        &["del", "x"][..],
        &["keys"][..],
        &["status"][..],
    ] {
        let out = dice(&typo, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("no data directory at"), "{args:?}: {err}");
        assert!(!err.contains("no such key"), "{err}");
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
    // A directory that is not a dice data directory is refused too, and left alone.
    let other = parent.path().join("photos");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("cat.jpg"), b"meow").unwrap();
    let out = dice(&other, &["put", "x", "y"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a dice data directory"));
    assert!(!other.join("dice.sqlite3").exists());
}

#[test]
fn an_empty_key_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["get", ""][..], &["put", "", "v"][..], &["del", ""][..]] {
        let out = dice(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("a key cannot be empty"));
    }
}

#[test]
fn an_unreachable_node_is_said_once() {
    // A port on 127.0.0.1 that nothing listens on any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(dice_bin())
        .args(["get", "--node", &format!("127.0.0.1:{port}"), "k"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach a dice node at 127.0.0.1:"),
        "{err}"
    );
    assert_eq!(err.matches("refused").count(), 1, "cause repeated: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // DICE_NODE names the node too; a --data on the command line wins over it.
    let run = |args: &[&str]| {
        Command::new(dice_bin())
            .args(args)
            .env("DICE_NODE", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = run(&["get", "k"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains(&format!("127.0.0.1:{port}")));
    let dir = tempfile::tempdir().unwrap();
    ok(dice(dir.path(), &["put", "k", "v"]));
    let out = ok(run(&["--data", dir.path().to_str().unwrap(), "get", "k"]));
    assert_eq!(out.stdout, b"v\n");
}

#[test]
fn a_wrong_password_is_reported_as_one_and_a_lone_node_stays_quiet() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--requirepass", "s3cret"]);
    node.wait_log("node running", Duration::from_secs(15));

    let wrong = dice(dir.path(), &["get", "k", "--password", "nope"]);
    assert_eq!(wrong.status.code(), Some(3));
    let err = stderr(&wrong);
    assert!(
        err.contains("wrong password") && err.contains("WRONGPASS"),
        "{err}"
    );
    assert!(
        !err.contains("in use") && !err.contains("cannot reach"),
        "{err}"
    );

    let none = dice(dir.path(), &["put", "k", "v"]);
    assert_eq!(none.status.code(), Some(3));
    let err = stderr(&none);
    assert!(err.contains("requires a password (NOAUTH)"), "{err}");

    // The right one, as a flag after or before the subcommand and from the environment.
    ok(dice(dir.path(), &["put", "k", "v", "--password", "s3cret"]));
    let out = ok(dice(dir.path(), &["--password", "s3cret", "get", "k"]));
    assert_eq!(out.stdout, b"v\n");
    let out = Command::new(dice_bin())
        .arg("--data")
        .arg(dir.path())
        .args(["get", "k"])
        .env("DICE_PASSWORD", "s3cret")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"v\n", "{}", stderr(&out));

    // Kademlia's periodic bootstrap runs every 30 s; alone, it used to warn each time.
    let quiet_until = Duration::from_secs(33);
    if let Some(rest) = quiet_until.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    let log = node.log();
    assert!(
        !log.contains("Failed to trigger bootstrap"),
        "a lone node warned about bootstrap:\n{log}"
    );
    assert!(node.terminate(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn keys_into_a_closed_pipe_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]);
    let log = node.wait_log("node running", Duration::from_secs(15));
    let api = dice_tests::api_addr(&log);
    // More key bytes than a pipe buffers (64 KiB), so dice is still writing when the reader
    // goes away.
    let client = redis::Client::open(format!("redis://{api}/")).unwrap();
    let mut conn = client.get_connection().unwrap();
    let mut pipe = redis::pipe();
    for i in 0..20_000 {
        pipe.cmd("SET").arg(format!("key:{i:06}")).arg("v").ignore();
    }
    let () = pipe.query(&mut conn).unwrap();

    // Through the node, then offline on the same directory.
    keys_into_a_closed_pipe(dir.path(), "through the node");
    assert!(node.terminate(Duration::from_secs(10)).unwrap().success());
    keys_into_a_closed_pipe(dir.path(), "offline");
    // Offline, the cache was closed cleanly after the broken pipe: it opens again.
    let out = ok(dice(dir.path(), &["get", "key:019999"]));
    assert_eq!(out.stdout, b"v\n");
}

/// `dice keys | head -1`: read one line, then close the pipe; dice must exit 141 (what a
/// shell reports for a process killed by SIGPIPE) without a word on stderr.
fn keys_into_a_closed_pipe(dir: &Path, how: &str) {
    let mut child = Command::new(dice_bin())
        .arg("--data")
        .arg(dir)
        .arg("keys")
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "key:000000\n", "{how}");
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{how}: {err}");
    assert!(err.is_empty(), "{how}: not quiet: {err}");
    assert_eq!(out.status.code(), Some(141), "{how}");
}

#[test]
fn offline_status_shows_the_peer_id_or_nothing_never_null() {
    let dir = tempfile::tempdir().unwrap();
    ok(dice(dir.path(), &["put", "k", "v"]));
    // Never ran a node: no libp2p identity yet, so no peer id line.
    let out = ok(dice(dir.path(), &["status"]));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("null"), "{text}");
    assert!(!text.contains("peer id"), "{text}");
    assert!(text.contains("keys:     1"), "{text}");
    assert!(text.contains("(no node running)"), "{text}");

    // After a node ran there, the offline status shows the same peer id as the node did.
    let node = NodeProcess::start(dir.path(), &[]);
    let log = node.wait_log("node running", Duration::from_secs(15));
    let peer_id = log
        .split("peer_id=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();
    assert!(node.terminate(Duration::from_secs(10)).unwrap().success());
    let out = ok(dice(dir.path(), &["status"]));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("peer id:  {peer_id}\n")), "{text}");
    assert!(!text.contains("null"), "{text}");
    let json: serde_json::Value =
        serde_json::from_slice(&ok(dice(dir.path(), &["status", "--json"])).stdout).unwrap();
    assert_eq!(json["peer_id"], peer_id.as_str());
}
