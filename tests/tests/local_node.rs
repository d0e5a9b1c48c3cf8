//! A `dice node` process owns its data directory, shuts down cleanly on SIGTERM, and what was
//! written before is there after a restart.
#![allow(clippy::unwrap_used)]

use dice_tests::{NodeProcess, dice, wait_for};
use std::time::Duration;

#[test]
fn node_holds_the_lock_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        dice(dir.path(), &["put", "elixir", "awesome sauce"])
            .status
            .success()
    );

    let node = NodeProcess::start(dir.path(), &[]);
    node.wait_log("node running", Duration::from_secs(10));
    // While the node runs, the directory is locked: a second process gets a clear error.
    let err = wait_for(Duration::from_secs(10), || {
        let out = dice(dir.path(), &["get", "elixir"]);
        (out.status.code() == Some(3)).then(|| String::from_utf8(out.stderr).unwrap())
    })
    .expect("the running node never locked its data directory");
    assert!(err.contains("in use by another dice process"), "{err}");

    let status = node
        .terminate(Duration::from_secs(10))
        .expect("node did not stop on SIGTERM");
    assert!(status.success(), "node exited with {status}");

    let out = dice(dir.path(), &["get", "elixir"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "awesome sauce\n");
}

#[test]
fn status_json_reports_the_same_digest_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..20 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        assert!(dice(dir.path(), &["put", &k, &v]).status.success());
    }
    let status = |d: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&dice(d, &["status", "--json"]).stdout).unwrap()
    };
    let before = status(dir.path());
    assert_eq!(before["keys"], 20);
    let node = NodeProcess::start(dir.path(), &[]);
    node.wait_log("node running", Duration::from_secs(10));
    assert!(node.terminate(Duration::from_secs(10)).unwrap().success());
    let after = status(dir.path());
    assert_eq!(before["digest"], after["digest"]);
    assert_eq!(before["node_id"], after["node_id"]);
}
