//! Client tracking across two `dice node` processes on 127.0.0.1: a client tracks on A, a
//! client writes on B, and the invalidation reaches the client on A once the write has
//! been replicated; in default mode (a key read on A), in `BCAST` mode, for a delete, and
//! for a RESP2 client redirecting to a subscribed connection.
#![allow(clippy::unwrap_used)]

use dice_tests::{NodeProcess, api_addr, dial_addr};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn cmd(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s
}

/// Reads until the bytes read end with `end` (for at most 20 s: replication included);
/// returns them.
fn read_until(s: &mut TcpStream, end: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(end) {
        assert!(
            Instant::now() < deadline,
            "waited for {:?}, got {:?}",
            String::from_utf8_lossy(end),
            String::from_utf8_lossy(&got)
        );
        if let Ok(n) = s.read(&mut buf) {
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    }
    got
}

fn send(s: &mut TcpStream, args: &[&str], reply_end: &[u8]) -> Vec<u8> {
    s.write_all(&cmd(args)).unwrap();
    read_until(s, reply_end)
}

fn invalidate(key: &str) -> Vec<u8> {
    format!(
        ">2\r\n$10\r\ninvalidate\r\n*1\r\n${}\r\n{key}\r\n",
        key.len()
    )
    .into_bytes()
}

#[test]
fn a_write_on_b_invalidates_a_key_a_client_read_on_a() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = NodeProcess::start(a_dir.path(), &[]);
    let a_log = a.wait_log("node running", Duration::from_secs(15));
    let b = NodeProcess::start(b_dir.path(), &["--peer", &dial_addr(&a_log)]);
    let b_log = b.wait_log("node running", Duration::from_secs(15));
    b.wait_log("connected", Duration::from_secs(15));
    let (a_api, b_api) = (api_addr(&a_log), api_addr(&b_log));

    // On A: a RESP3 client tracking in default mode, one in BCAST mode, and a RESP2 one
    // redirecting to a subscribed connection.
    let mut t = connect(a_api);
    send(&mut t, &["HELLO", "3"], b"$7\r\nmodules\r\n*0\r\n");
    send(&mut t, &["CLIENT", "TRACKING", "ON"], b"+OK\r\n");
    let mut bcast = connect(a_api);
    send(&mut bcast, &["HELLO", "3"], b"$7\r\nmodules\r\n*0\r\n");
    send(
        &mut bcast,
        &["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "user:"],
        b"+OK\r\n",
    );
    let mut target = connect(a_api);
    let id = send(&mut target, &["CLIENT", "ID"], b"\r\n");
    let id = String::from_utf8_lossy(&id[1..id.len() - 2]).into_owned();
    send(
        &mut target,
        &["SUBSCRIBE", "__redis__:invalidate"],
        b"__redis__:invalidate\r\n:1\r\n",
    );
    let mut resp2 = connect(a_api);
    send(
        &mut resp2,
        &["CLIENT", "TRACKING", "ON", "REDIRECT", &id],
        b"+OK\r\n",
    );

    // The key is written on B and read on A once it arrived.
    let mut w = connect(b_api);
    send(&mut w, &["SET", "user:1", "v1"], b"+OK\r\n");
    // (Reads before it arrived are remembered: their invalidation may come in between.)
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        t.write_all(&cmd(&["GET", "user:1"])).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"$2\r\nv1\r\n") && !got.ends_with(b"_\r\n") {
            assert!(Instant::now() < deadline, "A never answered");
            if let Ok(n) = t.read(&mut buf) {
                assert!(n > 0, "closed");
                got.extend_from_slice(&buf[..n]);
            }
        }
        if got.ends_with(b"$2\r\nv1\r\n") {
            break;
        }
        assert!(Instant::now() < deadline, "A never received B's write");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The first replicated write reaches the BCAST client; once it has, that change is
    // handled, and a read now is remembered with no invalidation of its own in flight.
    read_until(&mut bcast, &invalidate("user:1"));
    send(&mut t, &["GET", "user:1"], b"$2\r\nv1\r\n");
    send(&mut resp2, &["GET", "user:1"], b"$2\r\nv1\r\n");

    // Written on B again: every client on A hears about it, after replication.
    send(&mut w, &["SET", "user:1", "v2"], b"+OK\r\n");
    let got = read_until(&mut t, &invalidate("user:1"));
    assert_eq!(got, invalidate("user:1"));
    read_until(&mut bcast, &invalidate("user:1"));
    read_until(
        &mut target,
        b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$6\r\nuser:1\r\n",
    );
    // The cached read would now be stale: A serves the new value.
    send(&mut t, &["GET", "user:1"], b"$2\r\nv2\r\n");

    // A delete on B invalidates too.
    send(&mut w, &["DEL", "user:1"], b":1\r\n");
    read_until(&mut t, &invalidate("user:1"));
    read_until(&mut bcast, &invalidate("user:1"));
    send(&mut t, &["GET", "user:1"], b"_\r\n");

    // An expiry on B: the key reaches its expiry on A, and A's client is told.
    send(&mut w, &["SET", "user:e", "v", "PX", "3000"], b"+OK\r\n");
    read_until(&mut bcast, &invalidate("user:e"));
    read_until(&mut bcast, &invalidate("user:e"));
}
