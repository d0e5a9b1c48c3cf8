//! The DiCE seed transcript, as processes: three `dice node`s on 127.0.0.1 with explicit
//! `--peer`s, puts and gets from the shell, the master killed with SIGKILL and restarted from
//! its data directory; no manual step anywhere.
#![allow(clippy::unwrap_used)]

use dice_tests::{NodeProcess, dial_addr, dice, wait_for};
use std::path::Path;
use std::time::Duration;

fn get(dir: &Path, key: &str) -> Option<String> {
    let out = dice(dir, &["get", key]);
    match out.status.code() {
        Some(0) => Some(String::from_utf8(out.stdout).unwrap()),
        Some(1) => None,
        other => panic!(
            "dice get exited with {other:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn eventually_get(dir: &Path, key: &str) -> Option<String> {
    wait_for(Duration::from_secs(20), || get(dir, key))
}

#[test]
fn the_seed_transcript() {
    let master = tempfile::tempdir().unwrap();
    let slave1 = tempfile::tempdir().unwrap();
    let slave2 = tempfile::tempdir().unwrap();

    let m = NodeProcess::start(master.path(), &[]);
    let m_addr = dial_addr(&m.wait_log("node running", Duration::from_secs(15)));
    let s1 = NodeProcess::start(slave1.path(), &["--peer", &m_addr]);
    let s1_addr = dial_addr(&s1.wait_log("node running", Duration::from_secs(15)));
    let s2 = NodeProcess::start(slave2.path(), &["--peer", &m_addr, "--peer", &s1_addr]);
    s2.wait_log("node running", Duration::from_secs(15));

    // iex(master)> Dice.Server.put "elixir", "awesome sauce"
    let put = dice(master.path(), &["put", "elixir", "awesome sauce"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    // iex(slave1)> Dice.Server.get "elixir"
    assert_eq!(
        eventually_get(slave1.path(), "elixir").as_deref(),
        Some("awesome sauce\n")
    );

    // Ctrl+C twice on master: here, SIGKILL.
    m.kill();
    assert_eq!(
        eventually_get(slave2.path(), "elixir").as_deref(),
        Some("awesome sauce\n")
    );
    // Life goes on without the master.
    let put = dice(slave1.path(), &["put", "phoenix", "rises"]);
    assert!(put.status.success());
    assert_eq!(
        eventually_get(slave2.path(), "phoenix").as_deref(),
        Some("rises\n")
    );

    // The master restarts from its data directory, with no --peer: it redials the peers it
    // knew and catches up by itself.
    let m = NodeProcess::start(master.path(), &[]);
    m.wait_log("node running", Duration::from_secs(15));
    assert_eq!(
        eventually_get(master.path(), "phoenix").as_deref(),
        Some("rises\n")
    );
    assert_eq!(
        get(master.path(), "elixir").as_deref(),
        Some("awesome sauce\n")
    );

    // All three hold the same data.
    let digest = |d: &Path| -> String {
        let out = dice(d, &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["digest"].as_str().unwrap().to_string()
    };
    let same = wait_for(Duration::from_secs(20), || {
        let d = [
            digest(master.path()),
            digest(slave1.path()),
            digest(slave2.path()),
        ];
        (d[0] == d[1] && d[1] == d[2]).then_some(())
    });
    assert!(same.is_some(), "digests differ");
    for n in [m, s1, s2] {
        assert!(n.terminate(Duration::from_secs(10)).unwrap().success());
    }
}
