//! Two `dice node` processes on 127.0.0.1: one syncs the other's data by itself.
#![allow(clippy::unwrap_used)]

use dice_tests::{NodeProcess, dial_addr, dice};
use std::time::Duration;

#[test]
fn a_new_node_receives_everything_from_its_peer() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    for i in 0..50 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        assert!(dice(a_dir.path(), &["put", &k, &v]).status.success());
    }
    assert!(
        dice(a_dir.path(), &["put", "elixir", "awesome sauce"])
            .status
            .success()
    );

    let a = NodeProcess::start(a_dir.path(), &[]);
    let a_log = a.wait_log("node running", Duration::from_secs(15));
    let a_addr = dial_addr(&a_log);
    let b = NodeProcess::start(b_dir.path(), &["--peer", &a_addr]);
    b.wait_log("node running", Duration::from_secs(15));
    b.wait_log("connected", Duration::from_secs(15));
    // Let B's catch-up with A finish, then stop both cleanly.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(b.terminate(Duration::from_secs(10)).unwrap().success());
    assert!(a.terminate(Duration::from_secs(10)).unwrap().success());

    let out = dice(b_dir.path(), &["get", "elixir"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "awesome sauce\n");
    let status = |d: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&dice(d, &["status", "--json"]).stdout).unwrap()
    };
    let (sa, sb) = (status(a_dir.path()), status(b_dir.path()));
    assert_eq!(sb["keys"], 51);
    assert_eq!(sa["digest"], sb["digest"]);
    assert_ne!(sa["node_id"], sb["node_id"]);
}
