//! Every command through the real `redis` crate client, against a server on 127.0.0.1:0
//! with a cache in a temp dir.
#![allow(clippy::unwrap_used)]

mod common;

use common::{bounded, err, eventually, q, start_default};
use redis::Value;
use std::collections::BTreeSet;
use std::sync::Arc;

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

fn now_secs() -> i64 {
    (dice_core::now_ms() / 1000) as i64
}

#[tokio::test]
async fn connection_commands() {
    let s = start_default().await;
    let mut c = s.client().await;
    assert_eq!(
        q::<Value>(&mut c, &[b"PING"]).await,
        Value::SimpleString("PONG".into())
    );
    assert_eq!(q::<Value>(&mut c, &[b"ping", b"hi"]).await, bulk("hi"));
    assert_eq!(
        err(&mut c, &[b"PING", b"a", b"b"]).await,
        "ERR wrong number of arguments for 'ping' command"
    );
    assert_eq!(
        q::<Vec<u8>>(&mut c, &[b"ECHO", b"a\r\nb\0"]).await,
        b"a\r\nb\0"
    );
    assert_eq!(q::<Value>(&mut c, &[b"SELECT", b"0"]).await, Value::Okay);
    assert_eq!(
        err(&mut c, &[b"SELECT", b"1"]).await,
        "ERR DB index is out of range"
    );
    assert_eq!(
        err(&mut c, &[b"SELECT", b"x"]).await,
        "ERR value is not an integer or out of range"
    );

    // CLIENT
    let id: i64 = q(&mut c, &[b"CLIENT", b"ID"]).await;
    assert!(id > 0);
    assert_eq!(
        q::<Value>(&mut c, &[b"CLIENT", b"GETNAME"]).await,
        Value::Nil
    );
    assert_eq!(
        q::<Value>(&mut c, &[b"CLIENT", b"SETNAME", b"me"]).await,
        Value::Okay
    );
    assert_eq!(q::<String>(&mut c, &[b"client", b"getname"]).await, "me");
    assert_eq!(
        err(&mut c, &[b"CLIENT", b"SETNAME", b"a b"]).await,
        "ERR Client names cannot contain spaces, newlines or special characters."
    );
    assert_eq!(
        err(&mut c, &[b"CLIENT", b"SETNAME"]).await,
        "ERR wrong number of arguments for 'client|setname' command"
    );
    assert_eq!(
        err(&mut c, &[b"CLIENT", b"NOPE", b"x"]).await,
        "ERR unknown subcommand 'NOPE'. Try CLIENT HELP."
    );

    // HELLO
    let hello: Vec<Value> = q(&mut c, &[b"HELLO", b"2"]).await;
    assert_eq!(hello.len(), 14);
    assert_eq!(hello[0], bulk("server"));
    assert_eq!(hello[4], bulk("proto"));
    assert_eq!(hello[5], Value::Int(2));
    assert_eq!(hello[6], bulk("id"));
    assert_eq!(hello[7], Value::Int(id));
    assert_eq!(hello[13], Value::Array(vec![]));
    let hello: Vec<Value> = q(&mut c, &[b"HELLO"]).await;
    assert_eq!(hello.len(), 14);
    assert_eq!(
        err(&mut c, &[b"HELLO", b"4"]).await,
        "NOPROTO unsupported protocol version"
    );
    assert_eq!(
        err(&mut c, &[b"HELLO", b"x"]).await,
        "ERR Protocol version is not an integer or out of range"
    );
    assert_eq!(
        err(&mut c, &[b"HELLO", b"2", b"FOO"]).await,
        "ERR Syntax error in HELLO option 'FOO'"
    );
    let _: Vec<Value> = q(&mut c, &[b"HELLO", b"2", b"SETNAME", b"other"]).await;
    assert_eq!(q::<String>(&mut c, &[b"CLIENT", b"GETNAME"]).await, "other");

    // COMMAND
    let count: i64 = q(&mut c, &[b"COMMAND", b"COUNT"]).await;
    assert!(count >= 30);
    let all: Vec<Value> = q(&mut c, &[b"COMMAND"]).await;
    assert_eq!(all.len() as i64, count);
    // A map (a flat array in RESP2) of every command to its docs.
    let docs: Vec<Value> = q(&mut c, &[b"COMMAND", b"DOCS"]).await;
    assert_eq!(docs.len() as i64, 2 * count);
    let info: Vec<Value> = q(&mut c, &[b"COMMAND", b"INFO", b"get", b"nosuch"]).await;
    let Value::Array(get) = &info[0] else {
        panic!("{info:?}")
    };
    assert_eq!(get[0], bulk("get"));
    assert_eq!(get[1], Value::Int(2));
    assert_eq!(info[1], Value::Nil);
    let names: Vec<String> = q(&mut c, &[b"COMMAND", b"LIST"]).await;
    assert!(names.iter().any(|n| n == "set"));

    // Unknown commands.
    let e = err(&mut c, &[b"FOO", b"a", b"b"]).await;
    assert!(
        e.starts_with("ERR unknown command 'FOO', with args beginning with: 'a' 'b'"),
        "{e}"
    );
    let e = err(&mut c, &[b"LPUSH", b"l", b"x"]).await;
    assert!(e.starts_with("ERR unknown command 'LPUSH'"), "{e}");
}

#[tokio::test]
async fn get_set_and_options() {
    let s = start_default().await;
    let mut c = s.client().await;
    assert_eq!(q::<Value>(&mut c, &[b"SET", b"k", b"v"]).await, Value::Okay);
    assert_eq!(
        q::<Option<String>>(&mut c, &[b"GET", b"k"])
            .await
            .as_deref(),
        Some("v")
    );
    assert_eq!(q::<Value>(&mut c, &[b"GET", b"missing"]).await, Value::Nil);
    assert_eq!(
        err(&mut c, &[b"GET"]).await,
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        err(&mut c, &[b"GET", b"a", b"b"]).await,
        "ERR wrong number of arguments for 'get' command"
    );

    // Binary-safe keys and values.
    let key = b"bin\0\r\nkey";
    let value: Vec<u8> = (0..=255).collect();
    assert_eq!(
        q::<Value>(&mut c, &[b"SET", key, &value]).await,
        Value::Okay
    );
    assert_eq!(q::<Vec<u8>>(&mut c, &[b"GET", key]).await, value);

    // NX / XX
    assert_eq!(
        q::<Value>(&mut c, &[b"SET", b"k", b"x", b"NX"]).await,
        Value::Nil
    );
    assert_eq!(q::<String>(&mut c, &[b"GET", b"k"]).await, "v");
    assert_eq!(
        q::<Value>(&mut c, &[b"SET", b"new", b"x", b"XX"]).await,
        Value::Nil
    );
    assert_eq!(q::<Value>(&mut c, &[b"GET", b"new"]).await, Value::Nil);
    assert_eq!(
        q::<Value>(&mut c, &[b"SET", b"new", b"x", b"nx"]).await,
        Value::Okay
    );
    assert_eq!(
        q::<Value>(&mut c, &[b"SET", b"new", b"y", b"xx"]).await,
        Value::Okay
    );
    assert_eq!(q::<String>(&mut c, &[b"GET", b"new"]).await, "y");

    // GET
    assert_eq!(
        q::<Value>(&mut c, &[b"SET", b"k", b"w", b"GET"]).await,
        bulk("v")
    );
    assert_eq!(
        q::<Value>(&mut c, &[b"SET", b"g", b"1", b"GET"]).await,
        Value::Nil
    );
    assert_eq!(q::<String>(&mut c, &[b"GET", b"g"]).await, "1");
    assert_eq!(
        q::<Value>(&mut c, &[b"SET", b"g", b"2", b"NX", b"GET"]).await,
        bulk("1")
    );
    assert_eq!(q::<String>(&mut c, &[b"GET", b"g"]).await, "1");

    // Option conflicts and bad values, worded as Redis words them.
    for bad in [
        &[&b"SET"[..], b"k", b"v", b"NX", b"XX"][..],
        &[b"SET", b"k", b"v", b"XX", b"NX"],
        &[b"SET", b"k", b"v", b"EX", b"10", b"PX", b"10"],
        &[b"SET", b"k", b"v", b"EX", b"10", b"KEEPTTL"],
        &[b"SET", b"k", b"v", b"KEEPTTL", b"PXAT", b"10"],
        &[b"SET", b"k", b"v", b"EX"],
        &[b"SET", b"k", b"v", b"FOO"],
    ] {
        assert_eq!(err(&mut c, bad).await, "ERR syntax error", "{bad:?}");
    }
    assert_eq!(
        err(&mut c, &[b"SET", b"k", b"v", b"EX", b"abc"]).await,
        "ERR value is not an integer or out of range"
    );
    for bad in [&b"0"[..], b"-1", b"9223372036854775807"] {
        assert_eq!(
            err(&mut c, &[b"SET", b"k", b"v", b"EX", bad]).await,
            "ERR invalid expire time in 'set' command"
        );
    }
    assert_eq!(
        q::<String>(&mut c, &[b"GET", b"k"]).await,
        "w",
        "failed SETs wrote nothing"
    );
    // Repeating an option is fine, as in Redis.
    assert_eq!(
        q::<Value>(
            &mut c,
            &[b"SET", b"k", b"v", b"EX", b"10", b"EX", b"20", b"NX", b"NX"]
        )
        .await,
        Value::Nil
    );

    // The cache's limits.
    let big = vec![b'x'; 1024 * 1024 + 1];
    assert_eq!(
        err(&mut c, &[b"SET", b"big", &big]).await,
        "ERR value of 1048577 bytes exceeds the limit of 1048576 bytes"
    );
    let max = vec![b'x'; 1024 * 1024];
    assert_eq!(
        q::<Value>(&mut c, &[b"SET", b"big", &max]).await,
        Value::Okay
    );
    assert_eq!(
        q::<Vec<u8>>(&mut c, &[b"GET", b"big"]).await.len(),
        max.len()
    );
    assert_eq!(err(&mut c, &[b"SET", b"", b"v"]).await, "ERR key is empty");
}

#[tokio::test]
async fn expiring_sets() {
    let s = start_default().await;
    let mut c = s.client().await;
    assert_eq!(
        q::<Value>(&mut c, &[b"SET", b"ex", b"v", b"EX", b"100"]).await,
        Value::Okay
    );
    let ttl: i64 = q(&mut c, &[b"TTL", b"ex"]).await;
    assert!((1..=100).contains(&ttl), "{ttl}");
    assert_eq!(
        q::<Value>(&mut c, &[b"SET", b"px", b"v", b"PX", b"100000"]).await,
        Value::Okay
    );
    let pttl: i64 = q(&mut c, &[b"PTTL", b"px"]).await;
    assert!((1..=100_000).contains(&pttl), "{pttl}");
    let at = (now_secs() + 100).to_string();
    assert_eq!(
        q::<Value>(&mut c, &[b"SET", b"exat", b"v", b"EXAT", at.as_bytes()]).await,
        Value::Okay
    );
    let ttl: i64 = q(&mut c, &[b"TTL", b"exat"]).await;
    assert!((1..=101).contains(&ttl), "{ttl}");
    let pat = (now_secs() * 1000 + 100_000).to_string();
    assert_eq!(
        q::<Value>(&mut c, &[b"SET", b"pxat", b"v", b"PXAT", pat.as_bytes()]).await,
        Value::Okay
    );
    let pttl: i64 = q(&mut c, &[b"PTTL", b"pxat"]).await;
    assert!((1..=101_000).contains(&pttl), "{pttl}");
    // An absolute time in the past: OK, and the key is gone.
    assert_eq!(
        q::<Value>(&mut c, &[b"SET", b"past", b"v", b"EXAT", b"1"]).await,
        Value::Okay
    );
    assert_eq!(q::<Value>(&mut c, &[b"GET", b"past"]).await, Value::Nil);

    // KEEPTTL keeps it; a plain SET drops it.
    assert_eq!(
        q::<Value>(&mut c, &[b"SET", b"ex", b"v2", b"KEEPTTL"]).await,
        Value::Okay
    );
    let ttl: i64 = q(&mut c, &[b"TTL", b"ex"]).await;
    assert!((1..=100).contains(&ttl), "{ttl}");
    assert_eq!(q::<String>(&mut c, &[b"GET", b"ex"]).await, "v2");
    assert_eq!(
        q::<Value>(&mut c, &[b"SET", b"ex", b"v3"]).await,
        Value::Okay
    );
    assert_eq!(q::<i64>(&mut c, &[b"TTL", b"ex"]).await, -1);

    // SETEX / PSETEX
    assert_eq!(
        q::<Value>(&mut c, &[b"SETEX", b"se", b"100", b"v"]).await,
        Value::Okay
    );
    let ttl: i64 = q(&mut c, &[b"TTL", b"se"]).await;
    assert!((1..=100).contains(&ttl), "{ttl}");
    assert_eq!(q::<String>(&mut c, &[b"GET", b"se"]).await, "v");
    assert_eq!(
        q::<Value>(&mut c, &[b"PSETEX", b"pse", b"100000", b"v"]).await,
        Value::Okay
    );
    let pttl: i64 = q(&mut c, &[b"PTTL", b"pse"]).await;
    assert!((1..=100_000).contains(&pttl), "{pttl}");
    assert_eq!(
        err(&mut c, &[b"SETEX", b"se", b"0", b"v"]).await,
        "ERR invalid expire time in 'setex' command"
    );
    assert_eq!(
        err(&mut c, &[b"PSETEX", b"se", b"-5", b"v"]).await,
        "ERR invalid expire time in 'psetex' command"
    );
    assert_eq!(
        err(&mut c, &[b"SETEX", b"se", b"ten", b"v"]).await,
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&mut c, &[b"SETEX", b"se", b"10"]).await,
        "ERR wrong number of arguments for 'setex' command"
    );

    // Short TTLs expire on their own (polled, never timed).
    assert_eq!(
        q::<Value>(&mut c, &[b"SET", b"short", b"v", b"PX", b"30"]).await,
        Value::Okay
    );
    assert_eq!(
        q::<Value>(&mut c, &[b"PSETEX", b"short2", b"30", b"v"]).await,
        Value::Okay
    );
    let mut c2 = c.clone();
    eventually(|| {
        let mut c = c2.clone();
        async move {
            q::<Value>(&mut c, &[b"GET", b"short"]).await == Value::Nil
                && q::<i64>(&mut c, &[b"EXISTS", b"short", b"short2"]).await == 0
        }
    })
    .await;
    assert_eq!(q::<i64>(&mut c2, &[b"TTL", b"short"]).await, -2);
    assert_eq!(q::<i64>(&mut c2, &[b"PTTL", b"short2"]).await, -2);
    let keys: Vec<String> = q(&mut c2, &[b"KEYS", b"short*"]).await;
    assert!(keys.is_empty());
}

#[tokio::test]
async fn getdel_mget_mset_del_exists() {
    let s = start_default().await;
    let mut c = s.client().await;
    assert_eq!(
        q::<Value>(&mut c, &[b"MSET", b"a", b"1", b"b", b"2"]).await,
        Value::Okay
    );
    assert_eq!(
        q::<Vec<Option<String>>>(&mut c, &[b"MGET", b"a", b"b", b"c", b"a"]).await,
        vec![Some("1".into()), Some("2".into()), None, Some("1".into())]
    );
    assert_eq!(
        err(&mut c, &[b"MSET", b"a"]).await,
        "ERR wrong number of arguments for 'mset' command"
    );
    assert_eq!(
        err(&mut c, &[b"MSET", b"a", b"1", b"b"]).await,
        "ERR wrong number of arguments for 'mset' command"
    );
    // A bad pair fails the whole MSET before anything is written.
    assert_eq!(
        err(&mut c, &[b"MSET", b"x", b"1", b"", b"2"]).await,
        "ERR key is empty"
    );
    assert_eq!(q::<Value>(&mut c, &[b"GET", b"x"]).await, Value::Nil);

    // EXISTS counts repeats.
    assert_eq!(
        q::<i64>(&mut c, &[b"EXISTS", b"a", b"a", b"b", b"nope"]).await,
        3
    );

    // GETDEL
    assert_eq!(q::<Value>(&mut c, &[b"GETDEL", b"a"]).await, bulk("1"));
    assert_eq!(q::<Value>(&mut c, &[b"GET", b"a"]).await, Value::Nil);
    assert_eq!(q::<Value>(&mut c, &[b"GETDEL", b"a"]).await, Value::Nil);

    // DEL / UNLINK count keys that were present; a repeat counts once.
    let () = q(&mut c, &[b"MSET", b"a", b"1", b"c", b"3"]).await;
    assert_eq!(
        q::<i64>(&mut c, &[b"DEL", b"a", b"b", b"a", b"nope", b""]).await,
        2
    );
    assert_eq!(q::<i64>(&mut c, &[b"EXISTS", b"a", b"b"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"UNLINK", b"c", b"c"]).await, 1);
    assert_eq!(q::<i64>(&mut c, &[b"DBSIZE"]).await, 0);
}

#[tokio::test]
async fn expire_family() {
    let s = start_default().await;
    let mut c = s.client().await;
    let () = q(&mut c, &[b"SET", b"k", b"v"]).await;
    assert_eq!(q::<i64>(&mut c, &[b"TTL", b"k"]).await, -1);
    assert_eq!(q::<i64>(&mut c, &[b"PTTL", b"k"]).await, -1);
    assert_eq!(q::<i64>(&mut c, &[b"TTL", b"missing"]).await, -2);
    assert_eq!(q::<i64>(&mut c, &[b"EXPIRE", b"missing", b"10"]).await, 0);

    assert_eq!(q::<i64>(&mut c, &[b"EXPIRE", b"k", b"100"]).await, 1);
    let ttl: i64 = q(&mut c, &[b"TTL", b"k"]).await;
    assert!((1..=100).contains(&ttl), "{ttl}");
    assert_eq!(
        q::<String>(&mut c, &[b"GET", b"k"]).await,
        "v",
        "the value is kept"
    );
    assert_eq!(q::<i64>(&mut c, &[b"PEXPIRE", b"k", b"200000"]).await, 1);
    let pttl: i64 = q(&mut c, &[b"PTTL", b"k"]).await;
    assert!((100_001..=200_000).contains(&pttl), "{pttl}");
    let at = (now_secs() + 300).to_string();
    assert_eq!(
        q::<i64>(&mut c, &[b"EXPIREAT", b"k", at.as_bytes()]).await,
        1
    );
    let ttl: i64 = q(&mut c, &[b"TTL", b"k"]).await;
    assert!((200..=301).contains(&ttl), "{ttl}");
    let pat = ((now_secs() + 400) * 1000).to_string();
    assert_eq!(
        q::<i64>(&mut c, &[b"PEXPIREAT", b"k", pat.as_bytes()]).await,
        1
    );
    let ttl: i64 = q(&mut c, &[b"TTL", b"k"]).await;
    assert!((300..=401).contains(&ttl), "{ttl}");

    // NX / XX / GT / LT
    let () = q(&mut c, &[b"SET", b"p", b"v"]).await; // no expiry
    assert_eq!(q::<i64>(&mut c, &[b"EXPIRE", b"k", b"100", b"NX"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"EXPIRE", b"p", b"100", b"XX"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"EXPIRE", b"p", b"100", b"GT"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"TTL", b"p"]).await, -1);
    assert_eq!(
        q::<i64>(&mut c, &[b"EXPIRE", b"p", b"1000", b"LT"]).await,
        1
    );
    assert_eq!(
        q::<i64>(&mut c, &[b"EXPIRE", b"p", b"2000", b"LT"]).await,
        0
    );
    assert_eq!(q::<i64>(&mut c, &[b"EXPIRE", b"p", b"500", b"GT"]).await, 0);
    assert_eq!(
        q::<i64>(&mut c, &[b"EXPIRE", b"p", b"2000", b"gt"]).await,
        1
    );
    assert_eq!(
        q::<i64>(&mut c, &[b"EXPIRE", b"p", b"1500", b"XX", b"LT"]).await,
        1
    );
    let ttl: i64 = q(&mut c, &[b"TTL", b"p"]).await;
    assert!((1000..=1500).contains(&ttl), "{ttl}");
    let () = q(&mut c, &[b"SET", b"n", b"v"]).await;
    assert_eq!(q::<i64>(&mut c, &[b"EXPIRE", b"n", b"100", b"NX"]).await, 1);

    assert_eq!(
        err(&mut c, &[b"EXPIRE", b"k", b"10", b"NX", b"XX"]).await,
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        err(&mut c, &[b"EXPIRE", b"k", b"10", b"GT", b"LT"]).await,
        "ERR GT and LT options at the same time are not compatible"
    );
    assert_eq!(
        err(&mut c, &[b"EXPIRE", b"k", b"10", b"FOO"]).await,
        "ERR Unsupported option FOO"
    );
    assert_eq!(
        err(&mut c, &[b"EXPIRE", b"k", b"ten"]).await,
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&mut c, &[b"EXPIRE", b"k", b"9223372036854775807"]).await,
        "ERR invalid expire time in 'expire' command"
    );
    assert_eq!(
        err(&mut c, &[b"PEXPIRE", b"k", b"9223372036854775807"]).await,
        "ERR invalid expire time in 'pexpire' command"
    );
    assert_eq!(
        err(&mut c, &[b"EXPIRE", b"k"]).await,
        "ERR wrong number of arguments for 'expire' command"
    );

    // PERSIST
    assert_eq!(q::<i64>(&mut c, &[b"PERSIST", b"k"]).await, 1);
    assert_eq!(q::<i64>(&mut c, &[b"TTL", b"k"]).await, -1);
    assert_eq!(q::<i64>(&mut c, &[b"PERSIST", b"k"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"PERSIST", b"missing"]).await, 0);
    assert_eq!(q::<String>(&mut c, &[b"GET", b"k"]).await, "v");

    // An expiry not in the future deletes the key.
    for (cmd, arg) in [
        (&b"EXPIRE"[..], &b"0"[..]),
        (b"EXPIRE", b"-5"),
        (b"PEXPIRE", b"-1"),
        (b"EXPIREAT", b"1"),
        (b"PEXPIREAT", b"1000"),
    ] {
        let () = q(&mut c, &[b"SET", b"gone", b"v"]).await;
        assert_eq!(q::<i64>(&mut c, &[cmd, b"gone", arg]).await, 1);
        assert_eq!(q::<Value>(&mut c, &[b"GET", b"gone"]).await, Value::Nil);
        assert_eq!(q::<i64>(&mut c, &[b"TTL", b"gone"]).await, -2);
    }

    // A short expiry set by EXPIRE runs out on its own.
    assert_eq!(q::<i64>(&mut c, &[b"PEXPIRE", b"k", b"30"]).await, 1);
    let c2 = c.clone();
    eventually(|| {
        let mut c = c2.clone();
        async move { q::<i64>(&mut c, &[b"EXISTS", b"k"]).await == 0 }
    })
    .await;
}

#[tokio::test]
async fn keys_patterns() {
    let s = start_default().await;
    let mut c = s.client().await;
    for k in [
        "user:1", "user:2", "user:10", "admin", "hello", "hallo", "hxllo", "a*b", "a?b",
    ] {
        let () = q(&mut c, &[b"SET", k.as_bytes(), b"v"]).await;
    }
    let () = q(&mut c, &[b"SET", b"deleted", b"v"]).await;
    let _: i64 = q(&mut c, &[b"DEL", b"deleted"]).await;
    let keys = |pattern: &'static str| {
        let mut c = c.clone();
        async move {
            let mut k: Vec<String> = q(&mut c, &[b"KEYS", pattern.as_bytes()]).await;
            k.sort();
            k
        }
    };
    assert_eq!(keys("*").await.len(), 9);
    assert_eq!(keys("user:?").await, ["user:1", "user:2"]);
    assert_eq!(keys("user:*").await, ["user:1", "user:10", "user:2"]);
    assert_eq!(keys("h[ae]llo").await, ["hallo", "hello"]);
    assert_eq!(keys("h[^e]llo").await, ["hallo", "hxllo"]);
    assert_eq!(keys("h[a-f]llo").await, ["hallo", "hello"]);
    assert_eq!(keys("a\\*b").await, ["a*b"]);
    assert_eq!(keys("a?b").await, ["a*b", "a?b"]);
    assert_eq!(keys("nothing*").await, Vec::<String>::new());
    assert_eq!(keys("deleted").await, Vec::<String>::new());
}

#[tokio::test]
async fn scan_walks_every_key() {
    let s = start_default().await;
    let mut c = s.client().await;
    let mut pipe = redis::pipe();
    for i in 0..250 {
        pipe.cmd("SET").arg(format!("key:{i}")).arg(i).ignore();
    }
    for i in 0..50 {
        pipe.cmd("SET").arg(format!("other:{i}")).arg(i).ignore();
    }
    let () = bounded(pipe.query_async(&mut c)).await.unwrap();

    let scan_all = |pattern: Option<&'static str>, count: &'static str| {
        let mut c = c.clone();
        async move {
            let mut cursor = "0".to_string();
            let mut seen = Vec::new();
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(&cursor).arg("COUNT").arg(count);
                if let Some(p) = pattern {
                    cmd.arg("MATCH").arg(p);
                }
                let (next, keys): (String, Vec<String>) =
                    bounded(cmd.query_async(&mut c)).await.unwrap();
                assert!(next.parse::<u64>().is_ok(), "cursor {next}");
                seen.extend(keys);
                if next == "0" {
                    return seen;
                }
                cursor = next;
            }
        }
    };
    for count in ["1", "10", "1000"] {
        let all = scan_all(None, count).await;
        assert_eq!(all.len(), 300, "COUNT {count}");
        assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 300);
    }
    let matched = scan_all(Some("other:*"), "7").await;
    assert_eq!(matched.len(), 50);
    assert!(matched.iter().all(|k| k.starts_with("other:")));

    // The client library's own iterator.
    let mut iter: redis::AsyncIter<String> = bounded(
        redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg("key:1*")
            .clone()
            .iter_async(&mut c),
    )
    .await
    .unwrap();
    let mut via_iter = BTreeSet::new();
    while let Some(k) = bounded(iter.next_item()).await {
        via_iter.insert(k.unwrap());
    }
    drop(iter);
    // key:1, key:10..19, key:100..199
    assert_eq!(via_iter.len(), 1 + 10 + 100);

    // TYPE
    let (_, keys): (String, Vec<String>) = q(&mut c, &[b"SCAN", b"0", b"TYPE", b"hash"]).await;
    assert!(keys.is_empty());
    let (_, keys): (String, Vec<String>) = q(
        &mut c,
        &[b"SCAN", b"0", b"TYPE", b"string", b"COUNT", b"1000"],
    )
    .await;
    assert_eq!(keys.len(), 300);

    assert_eq!(err(&mut c, &[b"SCAN", b"abc"]).await, "ERR invalid cursor");
    assert_eq!(err(&mut c, &[b"SCAN", b"-1"]).await, "ERR invalid cursor");
    assert_eq!(
        err(&mut c, &[b"SCAN", b"0", b"COUNT", b"0"]).await,
        "ERR syntax error"
    );
    assert_eq!(
        err(&mut c, &[b"SCAN", b"0", b"COUNT", b"x"]).await,
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&mut c, &[b"SCAN", b"0", b"FOO", b"x"]).await,
        "ERR syntax error"
    );
    assert_eq!(
        err(&mut c, &[b"SCAN", b"0", b"MATCH"]).await,
        "ERR syntax error"
    );
    assert_eq!(
        err(&mut c, &[b"SCAN", b"0", b"TYPE", b"blob"]).await,
        "ERR unknown type name 'blob'"
    );
}

#[tokio::test]
async fn scan_returns_keys_present_throughout_despite_churn() {
    let s = start_default().await;
    let mut c = s.client().await;
    let mut writer = s.client().await;
    for i in 0..100 {
        let () = q(&mut c, &[b"SET", format!("stay:{i}").as_bytes(), b"v"]).await;
    }
    let mut cursor = "0".to_string();
    let mut seen = BTreeSet::new();
    let mut round = 0;
    loop {
        let (next, keys): (String, Vec<String>) =
            q(&mut c, &[b"SCAN", cursor.as_bytes(), b"COUNT", b"5"]).await;
        seen.extend(keys);
        for j in 0..10 {
            let () = q(
                &mut writer,
                &[b"SET", format!("churn:{round}:{j}").as_bytes(), b"v"],
            )
            .await;
        }
        if round > 0 {
            for j in 0..10 {
                let _: i64 = q(
                    &mut writer,
                    &[b"DEL", format!("churn:{}:{j}", round - 1).as_bytes()],
                )
                .await;
            }
        }
        round += 1;
        if next == "0" {
            break;
        }
        cursor = next;
    }
    for i in 0..100 {
        assert!(seen.contains(&format!("stay:{i}")), "stay:{i} missing");
    }
}

#[tokio::test]
async fn dbsize_info_flushall() {
    let s = start_default().await;
    let mut c = s.client().await;
    assert_eq!(q::<i64>(&mut c, &[b"DBSIZE"]).await, 0);
    let () = q(&mut c, &[b"MSET", b"a", b"1", b"b", b"2"]).await;
    let () = q(&mut c, &[b"SET", b"t", b"3", b"EX", b"1000"]).await;
    assert_eq!(q::<i64>(&mut c, &[b"DBSIZE"]).await, 3);

    let info: String = q(&mut c, &[b"INFO"]).await;
    for needle in [
        "# Server\r\n",
        "redis_version:7.4.0\r\n",
        "redis_mode:standalone\r\n",
        &format!("tcp_port:{}\r\n", s.handle.local_addr().port()),
        &format!("dice_node_id:{}\r\n", s.cache.node_id()),
        "# Clients\r\n",
        "maxclients:10000\r\n",
        "# Memory\r\n",
        "used_memory:",
        "# Persistence\r\n",
        "dice_commits:",
        "dice_log_entries:",
        "# Keyspace\r\n",
        "db0:keys=3,expires=1,avg_ttl=0\r\n",
        "# Cluster\r\n",
        "cluster_enabled:0\r\n",
        &format!("dice_digest:{:016x}\r\n", s.cache.digest()),
    ] {
        assert!(info.contains(needle), "{needle:?} not in\n{info}");
    }
    let clients: String = q(&mut c, &[b"INFO", b"clients"]).await;
    assert!(clients.starts_with("# Clients\r\n"), "{clients}");
    assert!(!clients.contains("# Server"));
    let connected: usize = clients
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(connected >= 1);
    let two: String = q(&mut c, &[b"INFO", b"keyspace", b"SERVER"]).await;
    assert!(two.contains("# Keyspace") && two.contains("# Server") && !two.contains("# Memory"));
    let persistence: String = q(&mut c, &[b"INFO", b"persistence"]).await;
    let commits: u64 = persistence
        .lines()
        .find_map(|l| l.strip_prefix("dice_commits:"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(commits >= 1, "{persistence}");
    let none: String = q(&mut c, &[b"INFO", b"nosuchsection"]).await;
    assert_eq!(none, "");

    assert_eq!(
        err(&mut c, &[b"FLUSHALL", b"NOW"]).await,
        "ERR syntax error"
    );
    assert_eq!(q::<Value>(&mut c, &[b"FLUSHALL"]).await, Value::Okay);
    assert_eq!(q::<i64>(&mut c, &[b"DBSIZE"]).await, 0);
    assert_eq!(q::<Value>(&mut c, &[b"GET", b"a"]).await, Value::Nil);
    // Tombstones, so that the flush replicates.
    let entry = s.cache.entry(b"a").unwrap();
    assert!(entry.value.is_none());
    let () = q(&mut c, &[b"SET", b"a", b"1"]).await;
    assert_eq!(
        q::<Value>(&mut c, &[b"FLUSHALL", b"ASYNC"]).await,
        Value::Okay
    );
    assert_eq!(
        q::<Value>(&mut c, &[b"FLUSHDB", b"sync"]).await,
        Value::Okay
    );
    assert_eq!(q::<i64>(&mut c, &[b"DBSIZE"]).await, 0);
    let keyspace: String = q(&mut c, &[b"INFO", b"keyspace"]).await;
    assert_eq!(keyspace, "# Keyspace\r\n");
}

#[tokio::test]
async fn cluster_section_from_a_provider() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dice_core::Cache::open(dir.path()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let provider = Arc::new(|| {
        vec![
            "dice_peers:1".to_string(),
            "dice_peer0:id=abc,addr=/ip4/127.0.0.1/tcp/1,lag=3".to_string(),
            "dice_bad:line\r\nbreak".to_string(),
        ]
    });
    let server = dice_resp::RespServer::new(listener, cache, Default::default())
        .with_cluster_info(provider)
        .spawn()
        .unwrap();
    let mut c = common::client_at(&format!("redis://{}/", server.local_addr())).await;
    let info: String = q(&mut c, &[b"INFO", b"cluster"]).await;
    assert_eq!(
        info,
        "# Cluster\r\ncluster_enabled:0\r\ndice_peers:1\r\n\
         dice_peer0:id=abc,addr=/ip4/127.0.0.1/tcp/1,lag=3\r\ndice_bad:line  break\r\n"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn pipeline_of_a_thousand() {
    let s = start_default().await;
    let mut c = s.client().await;
    let mut pipe = redis::pipe();
    for i in 0..500 {
        // Each GET follows the SET of the same key in the same pipeline.
        pipe.cmd("SET").arg(format!("p:{i}")).arg(format!("v{i}"));
        pipe.cmd("GET").arg(format!("p:{i}"));
    }
    let replies: Vec<Value> = bounded(pipe.query_async(&mut c)).await.unwrap();
    assert_eq!(replies.len(), 1000);
    for i in 0..500 {
        assert_eq!(replies[2 * i], Value::Okay);
        assert_eq!(replies[2 * i + 1], bulk(&format!("v{i}")));
    }
    // Acknowledged means committed: nothing of it is still waiting for a commit.
    assert_eq!(s.cache.stats().pending_keys, 0);

    // Mixed with errors and other commands, each reply in order.
    let mut pipe = redis::pipe();
    pipe.cmd("LPUSH").arg("x").arg("y");
    pipe.cmd("GET").arg("p:1");
    pipe.cmd("SET").arg("k").arg("v").arg("EX").arg("0");
    pipe.cmd("DEL").arg("p:1").arg("p:2");
    pipe.cmd("EXISTS").arg("p:1").arg("p:3");
    let replies: Vec<redis::RedisResult<Value>> = bounded(pipe.ignore_errors().query_async(&mut c))
        .await
        .unwrap();
    let e = replies[0].as_ref().unwrap_err();
    assert!(
        common::error_text(e).starts_with("ERR unknown command 'LPUSH'"),
        "{e}"
    );
    assert_eq!(replies[1].as_ref().unwrap(), &bulk("v1"));
    let e = replies[2].as_ref().unwrap_err();
    assert_eq!(
        common::error_text(e),
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(replies[3].as_ref().unwrap(), &Value::Int(2));
    assert_eq!(replies[4].as_ref().unwrap(), &Value::Int(1));
}

#[tokio::test]
async fn acknowledged_writes_survive_a_restart() {
    let s = start_default().await;
    let mut c = s.client().await;
    let () = q(&mut c, &[b"SET", b"kept", b"value"]).await;
    let () = q(&mut c, &[b"SET", b"ttl", b"value", b"EX", b"1000"]).await;
    let _: i64 = q(&mut c, &[b"DEL", b"nothing"]).await;
    drop(c);
    let common::TestServer { cache, handle, dir } = s;
    handle.shutdown().await.unwrap();
    cache.close().await.unwrap();
    let cache = dice_core::Cache::open(dir.path()).await.unwrap();
    assert_eq!(cache.get(b"kept").as_deref(), Some(&b"value"[..]));
    let (_, expiry) = cache.get_with_expiry(b"ttl").unwrap();
    assert!(expiry.is_some());
}
