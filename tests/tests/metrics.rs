//! `dice node --metrics`: a Prometheus scrape of a node with a peer, on 127.0.0.1.
#![allow(clippy::unwrap_used)]

use dice_tests::{NodeProcess, api_addr, dial_addr, wait_for};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The address a node logged for its metrics.
fn metrics_addr(log: &str) -> SocketAddr {
    log.lines()
        .find(|l| l.contains("serving metrics"))
        .and_then(|l| l.split("addr=").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("addr=<address> in the metrics line")
}

/// One HTTP/1.1 request; the status line, headers and body as text.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: dice\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the sample named exactly `series` (name and labels), if any.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

#[test]
fn a_scrape_shows_commands_commits_keys_and_peers() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = NodeProcess::start(a_dir.path(), &["--metrics", "127.0.0.1:0"]);
    let a_log = a.wait_log("node running", Duration::from_secs(15));
    let b = NodeProcess::start(b_dir.path(), &["--peer", &dial_addr(&a_log)]);
    b.wait_log("connected", Duration::from_secs(15));
    let metrics = metrics_addr(&a_log);

    let client = redis::Client::open(format!("redis://{}", api_addr(&a_log))).unwrap();
    let mut conn = client.get_connection().unwrap();
    for i in 0..3 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg("v")
            .query(&mut conn)
            .unwrap();
    }
    let _: Option<String> = redis::cmd("GET").arg("k0").query(&mut conn).unwrap();
    // A wrong number of arguments: an error reply, counted as such.
    assert!(redis::cmd("GET").query::<String>(&mut conn).is_err());

    // B acknowledges A's writes: A's lag towards it falls to zero.
    let scrape = wait_for(Duration::from_secs(15), || {
        let s = http_get(metrics, "/metrics");
        let lag = s
            .lines()
            .find(|l| l.starts_with("dice_peer_unacked_writes{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok());
        (lag == Some(0.0)).then_some(s)
    })
    .expect("a scrape showing the peer with nothing unacknowledged");

    assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
    assert!(
        scrape
            .to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{scrape}"
    );
    assert_eq!(
        sample(&scrape, r#"dice_commands_total{command="set"}"#),
        Some(3.0)
    );
    assert_eq!(
        sample(&scrape, r#"dice_commands_total{command="get"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(&scrape, r#"dice_command_errors_total{command="get"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &scrape,
            r#"dice_command_duration_seconds_count{command="set"}"#
        ),
        Some(3.0)
    );
    assert!(sample(&scrape, "dice_commit_duration_seconds_count").unwrap() >= 1.0);
    assert!(sample(&scrape, "dice_committed_entries_total").unwrap() >= 3.0);
    assert_eq!(sample(&scrape, "dice_keys"), Some(3.0));
    assert_eq!(sample(&scrape, "dice_peers_connected"), Some(1.0));
    assert_eq!(sample(&scrape, "dice_repairs_total"), Some(0.0));
    assert!(sample(&scrape, "dice_resident_memory_bytes").unwrap() > 0.0);
    let peer_series = scrape
        .lines()
        .find(|l| l.starts_with("dice_peer_sent_entries_total{"))
        .expect("per-peer series");
    assert!(peer_series.contains("peer=\"12D3"), "{peer_series}");
    assert!(
        peer_series
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            >= 3.0
    );

    let missing = http_get(metrics, "/other");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    drop(b);
    drop(a);
}
