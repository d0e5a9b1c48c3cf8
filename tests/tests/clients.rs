//! The Rust `redis` crate against two `dice node` processes on 127.0.0.1 (one a peer of the
//! other), in RESP2 and RESP3: basics, TTLs, a pipeline, a transaction with `WATCH`, a
//! value written on A read on B, pub/sub across the nodes, a keyspace notification on B for
//! a write on A, counters incremented on both, error replies, and `WAIT` (1 once the peer
//! acknowledged; 0 once the peer is gone).
#![allow(clippy::unwrap_used)]

use dice_tests::{NodeProcess, api_addr, dial_addr, wait_for};
use redis::Value;
use std::time::Duration;

fn connect(addr: std::net::SocketAddr, resp: u8) -> redis::Connection {
    let url = format!("redis://{addr}/?protocol=resp{resp}");
    let client = redis::Client::open(url).unwrap();
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(10))
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn
}

fn get(c: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(c).unwrap()
}

fn error_of(c: &mut redis::Connection, cmd: &redis::Cmd) -> String {
    match cmd.query::<Value>(c) {
        Err(e) => e.to_string(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// The scenario of `tests/scripts/node-clients.mjs`, with `resp` 2 or 3.
fn scenario(a: std::net::SocketAddr, b: std::net::SocketAddr, resp: u8) {
    let p = format!("resp{resp}:");
    let mut c = connect(a, resp);
    let mut other = connect(a, resp);
    let mut on_b = connect(b, resp);

    // The connection speaks what it asked for.
    let hello: Value = redis::cmd("HELLO").query(&mut c).unwrap();
    let proto = match hello {
        Value::Map(pairs) => pairs
            .into_iter()
            .find(|(k, _)| matches!(k, Value::BulkString(b) if b == b"proto"))
            .map(|(_, v)| v),
        Value::Array(items) => items
            .chunks(2)
            .find(|kv| matches!(&kv[0], Value::BulkString(b) if b == b"proto"))
            .map(|kv| kv[1].clone()),
        other => panic!("HELLO answered {other:?}"),
    };
    assert_eq!(proto, Some(Value::Int(i64::from(resp))));

    // Basics.
    let _: () = redis::cmd("SET")
        .arg(format!("{p}a"))
        .arg("1")
        .query(&mut c)
        .unwrap();
    assert_eq!(get(&mut c, &format!("{p}a")).as_deref(), Some("1"));
    assert_eq!(get(&mut c, &format!("{p}missing")), None);
    let _: () = redis::cmd("MSET")
        .arg(format!("{p}b"))
        .arg("2")
        .arg(format!("{p}c"))
        .arg("3")
        .query(&mut c)
        .unwrap();
    let got: Vec<Option<String>> = redis::cmd("MGET")
        .arg(format!("{p}a"))
        .arg(format!("{p}nope"))
        .arg(format!("{p}c"))
        .query(&mut c)
        .unwrap();
    assert_eq!(got, [Some("1".into()), None, Some("3".into())]);
    let n: i64 = redis::cmd("EXISTS")
        .arg(format!("{p}a"))
        .arg(format!("{p}b"))
        .arg(format!("{p}nope"))
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 2);
    let n: i64 = redis::cmd("DEL")
        .arg(format!("{p}b"))
        .arg(format!("{p}nope"))
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);

    // TTLs.
    let _: () = redis::cmd("SET")
        .arg(format!("{p}ttl"))
        .arg("v")
        .arg("EX")
        .arg(100)
        .query(&mut c)
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{p}ttl"))
        .query(&mut c)
        .unwrap();
    assert!((1..=100).contains(&ttl), "ttl {ttl}");
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{p}a"))
        .query(&mut c)
        .unwrap();
    assert_eq!(ttl, -1);
    let _: () = redis::cmd("SET")
        .arg(format!("{p}short"))
        .arg("v")
        .arg("PX")
        .arg(150)
        .query(&mut c)
        .unwrap();
    let gone = wait_for(Duration::from_secs(10), || {
        get(&mut c, &format!("{p}short")).is_none().then_some(())
    });
    assert!(gone.is_some(), "a key with PX 150 never expired");

    // A pipeline: one round trip, replies in order.
    let mut pipe = redis::pipe();
    for i in 0..50 {
        pipe.cmd("SET").arg(format!("{p}k{i}")).arg(i).ignore();
    }
    pipe.cmd("GET").arg(format!("{p}k7"));
    pipe.cmd("EXISTS")
        .arg(format!("{p}k1"))
        .arg(format!("{p}k2"));
    let (seven, two): (String, i64) = pipe.query(&mut c).unwrap();
    assert_eq!((seven.as_str(), two), ("7", 2));

    // A transaction.
    let (set, got): (String, String) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(format!("{p}tx"))
        .arg("one")
        .cmd("GET")
        .arg(format!("{p}tx"))
        .query(&mut c)
        .unwrap();
    assert_eq!((set.as_str(), got.as_str()), ("OK", "one"));

    // WATCH, then another connection writes the key: EXEC aborts (nil).
    let _: () = redis::cmd("WATCH")
        .arg(format!("{p}tx"))
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{p}tx"))
        .arg("theirs")
        .query(&mut other)
        .unwrap();
    let aborted: Option<(String,)> = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(format!("{p}tx"))
        .arg("mine")
        .query(&mut c)
        .unwrap();
    assert_eq!(aborted, None, "EXEC ran although a watched key changed");
    assert_eq!(get(&mut c, &format!("{p}tx")).as_deref(), Some("theirs"));
    // Without a conflicting write it runs.
    let _: () = redis::cmd("WATCH")
        .arg(format!("{p}tx"))
        .query(&mut c)
        .unwrap();
    let ran: Option<(String,)> = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(format!("{p}tx"))
        .arg("mine")
        .query(&mut c)
        .unwrap();
    assert_eq!(ran, Some(("OK".into(),)));

    // Written on A, read on B.
    let _: () = redis::cmd("SET")
        .arg(format!("{p}across"))
        .arg("from A")
        .query(&mut c)
        .unwrap();
    // WAIT: the peer acknowledges this connection's last write.
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut c).unwrap();
    assert_eq!(acked, 1, "WAIT 1 5000 after a SET, with the peer up");
    // Acknowledged means applied on B: it reads it at once.
    assert_eq!(
        get(&mut on_b, &format!("{p}across")).as_deref(),
        Some("from A")
    );
    let seen = wait_for(Duration::from_secs(10), || {
        (get(&mut on_b, &format!("{p}k49")).as_deref() == Some("49")).then_some(())
    });
    assert!(seen.is_some(), "B never saw A's pipeline");

    // Pub/sub across nodes and keyspace notifications on B for a write on A.
    across_nodes(a, b, resp, &p);
    // Counters: an increment on each node; both count on both.
    let _: i64 = redis::cmd("INCR")
        .arg(format!("{p}n"))
        .query(&mut c)
        .unwrap();
    let _: i64 = redis::cmd("INCRBY")
        .arg(format!("{p}n"))
        .arg(5)
        .query(&mut on_b)
        .unwrap();
    let both = wait_for(Duration::from_secs(10), || {
        let (x, y) = (
            get(&mut c, &format!("{p}n")),
            get(&mut on_b, &format!("{p}n")),
        );
        (x.as_deref() == Some("6") && y.as_deref() == Some("6")).then_some(())
    });
    assert!(
        both.is_some(),
        "increments on A and B did not both count on both"
    );

    // Errors, and the connection goes on.
    let e = error_of(&mut c, redis::cmd("NOSUCHCMD").arg("x"));
    assert!(e.contains("unknown command 'NOSUCHCMD'"), "{e}");
    let e = error_of(&mut c, redis::cmd("SET").arg("k").arg("v").arg("EX"));
    assert!(e.contains("syntax error"), "{e}");
    let e = error_of(&mut c, &redis::cmd("GET"));
    assert!(e.contains("wrong number of arguments"), "{e}");
    let e = error_of(&mut c, redis::cmd("INCRBY").arg(format!("{p}a")).arg("x"));
    assert!(e.contains("not an integer or out of range"), "{e}");
    let e = error_of(&mut c, redis::cmd("WAIT").arg(1).arg(-1));
    assert!(e.contains("timeout is negative"), "{e}");
    let e = error_of(&mut c, redis::cmd("WAITAOF").arg(1).arg(0).arg(0));
    assert!(e.contains("appendonly"), "{e}");
    assert_eq!(get(&mut c, &format!("{p}a")).as_deref(), Some("1"));
}

/// A subscriber on B receives what is published on A, and a keyspace notification for a
/// write made on A.
fn across_nodes(a: std::net::SocketAddr, b: std::net::SocketAddr, resp: u8, p: &str) {
    let mut c = connect(a, resp);
    let mut on_b = connect(b, resp);
    let ok: String = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("KEA")
        .query(&mut on_b)
        .unwrap();
    assert_eq!(ok, "OK");
    let mut sub_conn = connect(b, resp);
    let mut sub = sub_conn.as_pubsub();
    sub.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let news = format!("{p}news");
    let watched = format!("{p}watched");
    let keyspace = format!("__keyspace@0__:{watched}");
    sub.subscribe(&news).unwrap();
    sub.subscribe(&keyspace).unwrap();
    // Act again until it arrives: the subscription needs a moment to reach A.
    let mut arrives = |channel: &str, payload: &str, act: &mut dyn FnMut()| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            act();
            while let Ok(m) = sub.get_message() {
                if m.get_channel_name() == channel
                    && m.get_payload::<String>().is_ok_and(|s| s == payload)
                {
                    return true;
                }
            }
        }
        false
    };
    assert!(
        arrives(&news, "hello", &mut || {
            let _: i64 = redis::cmd("PUBLISH")
                .arg(&news)
                .arg("hello")
                .query(&mut c)
                .unwrap();
        }),
        "RESP{resp}: a message published on A did not reach a subscriber on B"
    );
    assert!(
        arrives(&keyspace, "set", &mut || {
            let _: () = redis::cmd("SET")
                .arg(&watched)
                .arg("x")
                .query(&mut c)
                .unwrap();
        }),
        "RESP{resp}: a write on A fired no keyspace notification on B"
    );
}

#[test]
fn redis_crate_against_two_nodes_and_wait() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let a = NodeProcess::start(a_dir.path(), &[]);
    let a_log = a.wait_log("node running", Duration::from_secs(15));
    let b = NodeProcess::start(b_dir.path(), &["--peer", &dial_addr(&a_log)]);
    let b_log = b.wait_log("node running", Duration::from_secs(15));
    b.wait_log("connected", Duration::from_secs(15));
    let (a_api, b_api) = (api_addr(&a_log), api_addr(&b_log));

    for resp in [2, 3] {
        scenario(a_api, b_api, resp);
    }

    // A connection that never wrote: every peer holds all of its (no) writes.
    let mut fresh = connect(a_api, 2);
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut fresh)
        .unwrap();
    assert_eq!(acked, 1);

    // B stops: a new write on A is acknowledged by nobody, and WAIT says so at its timeout.
    assert!(b.terminate(Duration::from_secs(10)).unwrap().success());
    let mut c = connect(a_api, 3);
    let _: () = redis::cmd("SET")
        .arg("after-b")
        .arg("v")
        .query(&mut c)
        .unwrap();
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(200).query(&mut c).unwrap();
    assert_eq!(acked, 0, "WAIT 1 200 with the peer stopped");
    // Asking for none answers at once with what is acknowledged.
    let acked: i64 = redis::cmd("WAIT").arg(0).arg(0).query(&mut c).unwrap();
    assert_eq!(acked, 0);
}
