//! Two `dice node` processes on 127.0.0.1: a client subscribed on B receives what a client
//! publishes on A, and `PUBLISH` counts only A's own subscribers.
#![allow(clippy::unwrap_used)]

use dice_tests::{NodeProcess, api_addr, dial_addr};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s
}

/// Reads what arrives within the read timeout (possibly nothing).
fn read_some(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(n) => buf[..n].to_vec(),
        Err(_) => Vec::new(),
    }
}

/// Reads until `want` has arrived, for at most 5 s.
fn expect(s: &mut TcpStream, want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.len() < want.len() && Instant::now() < deadline {
        got.extend(read_some(s));
    }
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

/// A number of `INFO cluster`.
fn info_field(s: &mut TcpStream, name: &str) -> u64 {
    s.write_all(b"INFO cluster\r\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    let end = format!("{name}:");
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(v) = text
            .split(&end)
            .nth(1)
            .and_then(|rest| rest.split("\r\n").next().filter(|_| rest.contains("\r\n")))
        {
            return v.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no {name} in {text:?}");
        got.extend(read_some(s));
    }
}

#[test]
fn a_message_published_on_a_reaches_a_subscriber_on_b() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = NodeProcess::start(a_dir.path(), &[]);
    let a_log = a.wait_log("node running", Duration::from_secs(15));
    // Alone, A's PUBLISH reaches A's subscribers: local delivery needs no network.
    let mut alone = connect(api_addr(&a_log));
    alone.write_all(b"SUBSCRIBE solo\r\n").unwrap();
    expect(&mut alone, b"*3\r\n$9\r\nsubscribe\r\n$4\r\nsolo\r\n:1\r\n");
    let mut publ = connect(api_addr(&a_log));
    publ.write_all(b"PUBLISH solo hi\r\n").unwrap();
    expect(&mut publ, b":1\r\n");
    expect(
        &mut alone,
        b"*3\r\n$7\r\nmessage\r\n$4\r\nsolo\r\n$2\r\nhi\r\n",
    );

    let b = NodeProcess::start(b_dir.path(), &["--peer", &dial_addr(&a_log)]);
    let b_log = b.wait_log("node running", Duration::from_secs(15));
    b.wait_log("connected", Duration::from_secs(15));

    let mut sub = connect(api_addr(&b_log));
    sub.write_all(b"SUBSCRIBE news\r\n").unwrap();
    expect(&mut sub, b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n");

    // Gossipsub sends once A knows B joined the topic: publish until B's subscriber hears,
    // for at most 20 s. Every PUBLISH answers 0: A itself has no subscriber.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut heard = Vec::new();
    let mut i = 0;
    while Instant::now() < deadline && !heard.windows(6).any(|w| w == b"hello-") {
        publ.write_all(format!("PUBLISH news hello-{i}\r\n").as_bytes())
            .unwrap();
        expect(&mut publ, b":0\r\n");
        i += 1;
        heard.extend(read_some(&mut sub));
    }
    let text = String::from_utf8_lossy(&heard).into_owned();
    assert!(
        text.starts_with("*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$") && text.contains("hello-"),
        "B's subscriber heard {text:?} after {i} publishes"
    );
    // A subscriber on A too: now A's PUBLISH counts it, and B's subscriber hears as well.
    let mut sub_a = connect(api_addr(&a_log));
    sub_a.write_all(b"SUBSCRIBE news\r\n").unwrap();
    expect(&mut sub_a, b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n");
    publ.write_all(b"PUBLISH news last\r\n").unwrap();
    expect(&mut publ, b":1\r\n");
    expect(
        &mut sub_a,
        b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$4\r\nlast\r\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rest = Vec::new();
    while Instant::now() < deadline && !rest.ends_with(b"$4\r\nlast\r\n") {
        rest.extend(read_some(&mut sub));
    }
    assert!(
        rest.ends_with(b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$4\r\nlast\r\n"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    // The network's counters, in INFO cluster.
    let sent = info_field(&mut publ, "dice_pubsub_sent");
    assert!(sent >= 1, "A sent {sent}");
    let mut b_client = connect(api_addr(&b_log));
    let received = info_field(&mut b_client, "dice_pubsub_received");
    assert!(received >= 2, "B received {received}: a hello and the last");
    assert!(b.terminate(Duration::from_secs(10)).unwrap().success());
    assert!(a.terminate(Duration::from_secs(10)).unwrap().success());
}
