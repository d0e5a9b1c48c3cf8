//! A `dice node` process serves its data directory's cache on its API, shuts down cleanly on
//! SIGTERM, and what it acknowledged is there afterwards.
#![allow(clippy::unwrap_used)]

use dice_tests::{NodeProcess, dice};
use std::time::Duration;

#[test]
fn a_running_node_serves_its_data_dir_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let put = dice(dir.path(), &["put", "elixir", "awesome sauce"]);
    assert!(put.status.success());

    let node = NodeProcess::start(dir.path(), &[]);
    node.wait_log("node running", Duration::from_secs(10));
    // While the node runs, `--data DIR` reaches it through the API address it wrote there.
    assert!(dir.path().join("api.addr").exists());
    let out = dice(dir.path(), &["get", "elixir"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "awesome sauce\n");
    let put = dice(dir.path(), &["put", "while-running", "yes"]);
    assert!(put.status.success());

    let status = node
        .terminate(Duration::from_secs(10))
        .expect("node did not stop on SIGTERM");
    assert!(status.success(), "node exited with {status}");
    assert!(
        !dir.path().join("api.addr").exists(),
        "api.addr left behind"
    );

    // After a clean stop the directory opens directly and holds what the node acknowledged.
    let out = dice(dir.path(), &["get", "while-running"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "yes\n");
}

#[test]
fn status_json_reports_the_same_digest_through_the_node_and_offline() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..20 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        assert!(dice(dir.path(), &["put", &k, &v]).status.success());
    }
    let status = |d: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&dice(d, &["status", "--json"]).stdout).unwrap()
    };
    let offline = status(dir.path());
    assert_eq!(offline["keys"], 20);
    let node = NodeProcess::start(dir.path(), &[]);
    node.wait_log("node running", Duration::from_secs(10));
    let online = status(dir.path());
    assert_eq!(online["keys"], 20);
    assert_eq!(offline["digest"], online["digest"]);
    assert_eq!(offline["node_id"], online["node_id"]);
    assert!(online["api"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(node.terminate(Duration::from_secs(10)).unwrap().success());
}
