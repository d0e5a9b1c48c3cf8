//! The string and key commands beyond GET/SET: replies and errors as Redis gives them.
#![allow(clippy::unwrap_used)]

mod common;

use common::{err, exchange, q, start_default, start_with_clock};
use redis::Value;

#[tokio::test]
async fn append_strlen_getset_setnx_msetnx() {
    let s = start_default().await;
    let mut c = s.client().await;
    assert_eq!(q::<i64>(&mut c, &[b"APPEND", b"a", b"Hello"]).await, 5);
    assert_eq!(q::<i64>(&mut c, &[b"APPEND", b"a", b" World"]).await, 11);
    assert_eq!(q::<String>(&mut c, &[b"GET", b"a"]).await, "Hello World");
    assert_eq!(q::<i64>(&mut c, &[b"STRLEN", b"a"]).await, 11);
    assert_eq!(q::<i64>(&mut c, &[b"STRLEN", b"none"]).await, 0);
    // APPEND keeps the expiry.
    let () = q(&mut c, &[b"SET", b"t", b"x", b"EX", b"100"]).await;
    assert_eq!(q::<i64>(&mut c, &[b"APPEND", b"t", b"y"]).await, 2);
    assert!(q::<i64>(&mut c, &[b"TTL", b"t"]).await > 90);
    // Past the value limit: Redis's error, nothing written.
    let max = s.cache.options().limits.max_value_len;
    let huge = vec![b'z'; max];
    assert_eq!(
        err(&mut c, &[b"APPEND", b"a", &huge]).await,
        "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
    );
    assert_eq!(q::<i64>(&mut c, &[b"STRLEN", b"a"]).await, 11);

    // GETSET returns the old value and drops the expiry.
    assert_eq!(
        q::<Value>(&mut c, &[b"GETSET", b"g", b"1"]).await,
        Value::Nil
    );
    let () = q(&mut c, &[b"EXPIRE", b"g", b"100"]).await;
    assert_eq!(q::<String>(&mut c, &[b"GETSET", b"g", b"2"]).await, "1");
    assert_eq!(q::<i64>(&mut c, &[b"TTL", b"g"]).await, -1);

    assert_eq!(q::<i64>(&mut c, &[b"SETNX", b"n", b"1"]).await, 1);
    assert_eq!(q::<i64>(&mut c, &[b"SETNX", b"n", b"2"]).await, 0);
    assert_eq!(q::<String>(&mut c, &[b"GET", b"n"]).await, "1");

    assert_eq!(
        q::<i64>(&mut c, &[b"MSETNX", b"m1", b"a", b"m2", b"b"]).await,
        1
    );
    assert_eq!(
        q::<i64>(&mut c, &[b"MSETNX", b"m2", b"x", b"m3", b"y"]).await,
        0
    );
    assert_eq!(q::<Value>(&mut c, &[b"GET", b"m3"]).await, Value::Nil);
    assert_eq!(q::<String>(&mut c, &[b"GET", b"m2"]).await, "b");
    assert_eq!(
        err(&mut c, &[b"MSETNX", b"m1", b"a", b"m2"]).await,
        "ERR wrong number of arguments for 'msetnx' command"
    );
    let () = q(&mut c, &[b"PSETEX", b"p", b"100000", b"v"]).await;
    assert!(q::<i64>(&mut c, &[b"PTTL", b"p"]).await > 90_000);
}

#[tokio::test]
async fn getrange_setrange() {
    let s = start_default().await;
    let mut c = s.client().await;
    let () = q(&mut c, &[b"SET", b"s", b"This is a string"]).await;
    for (start, end, want) in [
        ("0", "3", "This"),
        ("-3", "-1", "ing"),
        ("0", "-1", "This is a string"),
        ("10", "100", "string"),
        ("5", "3", ""),
    ] {
        let got: String = q(
            &mut c,
            &[b"GETRANGE", b"s", start.as_bytes(), end.as_bytes()],
        )
        .await;
        assert_eq!(got, want, "GETRANGE s {start} {end}");
    }
    assert_eq!(
        q::<String>(&mut c, &[b"SUBSTR", b"s", b"0", b"3"]).await,
        "This"
    );
    assert_eq!(
        q::<String>(&mut c, &[b"GETRANGE", b"none", b"0", b"3"]).await,
        ""
    );
    assert_eq!(
        err(&mut c, &[b"GETRANGE", b"s", b"a", b"3"]).await,
        "ERR value is not an integer or out of range"
    );

    let () = q(&mut c, &[b"SET", b"k", b"Hello World"]).await;
    assert_eq!(
        q::<i64>(&mut c, &[b"SETRANGE", b"k", b"6", b"Redis"]).await,
        11
    );
    assert_eq!(q::<String>(&mut c, &[b"GET", b"k"]).await, "Hello Redis");
    assert_eq!(
        q::<i64>(&mut c, &[b"SETRANGE", b"pad", b"3", b"ab"]).await,
        5
    );
    assert_eq!(q::<Vec<u8>>(&mut c, &[b"GET", b"pad"]).await, b"\0\0\0ab");
    // An empty patch writes nothing and answers the length.
    assert_eq!(
        q::<i64>(&mut c, &[b"SETRANGE", b"new", b"10", b""]).await,
        0
    );
    assert_eq!(q::<i64>(&mut c, &[b"EXISTS", b"new"]).await, 0);
    assert_eq!(
        err(&mut c, &[b"SETRANGE", b"k", b"-1", b"x"]).await,
        "ERR offset is out of range"
    );
    assert_eq!(
        err(&mut c, &[b"SETRANGE", b"k", b"536870912", b"x"]).await,
        "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
    );
}

#[tokio::test]
async fn getex_options() {
    let s = start_default().await;
    let mut c = s.client().await;
    let () = q(&mut c, &[b"SET", b"k", b"v"]).await;
    assert_eq!(q::<String>(&mut c, &[b"GETEX", b"k"]).await, "v");
    assert_eq!(q::<i64>(&mut c, &[b"TTL", b"k"]).await, -1);
    assert_eq!(
        q::<String>(&mut c, &[b"GETEX", b"k", b"EX", b"100"]).await,
        "v"
    );
    assert!(q::<i64>(&mut c, &[b"TTL", b"k"]).await > 90);
    assert_eq!(
        q::<String>(&mut c, &[b"GETEX", b"k", b"PX", b"200000"]).await,
        "v"
    );
    assert!(q::<i64>(&mut c, &[b"TTL", b"k"]).await > 150);
    let at = (dice_core::now_ms() / 1000 + 500).to_string();
    assert_eq!(
        q::<String>(&mut c, &[b"GETEX", b"k", b"EXAT", at.as_bytes()]).await,
        "v"
    );
    assert_eq!(
        q::<String>(&mut c, &[b"EXPIRETIME", b"k"])
            .await
            .parse::<u64>()
            .unwrap(),
        at.parse::<u64>().unwrap()
    );
    assert_eq!(
        q::<String>(&mut c, &[b"GETEX", b"k", b"PERSIST"]).await,
        "v"
    );
    assert_eq!(q::<i64>(&mut c, &[b"TTL", b"k"]).await, -1);
    assert_eq!(q::<i64>(&mut c, &[b"EXPIRETIME", b"k"]).await, -1);
    assert_eq!(q::<i64>(&mut c, &[b"PEXPIRETIME", b"none"]).await, -2);
    // An absolute expiry already past deletes the key (and still answers the value).
    assert_eq!(
        q::<String>(&mut c, &[b"GETEX", b"k", b"PXAT", b"1"]).await,
        "v"
    );
    assert_eq!(q::<i64>(&mut c, &[b"EXISTS", b"k"]).await, 0);
    assert_eq!(
        q::<Value>(&mut c, &[b"GETEX", b"k", b"EX", b"5"]).await,
        Value::Nil
    );
    assert_eq!(
        err(&mut c, &[b"GETEX", b"k", b"EX", b"0"]).await,
        "ERR invalid expire time in 'getex' command"
    );
    assert_eq!(
        err(&mut c, &[b"GETEX", b"k", b"EX", b"5", b"PERSIST"]).await,
        "ERR syntax error"
    );
    assert_eq!(
        err(&mut c, &[b"GETEX", b"k", b"EX"]).await,
        "ERR syntax error"
    );
    assert_eq!(
        err(&mut c, &[b"GETEX", b"k", b"EX", b"x"]).await,
        "ERR value is not an integer or out of range"
    );
}

#[tokio::test]
async fn rename_copy_type_touch_unlink() {
    let s = start_default().await;
    let mut c = s.client().await;
    let () = q(&mut c, &[b"SET", b"a", b"1", b"EX", b"100"]).await;
    let () = q(&mut c, &[b"RENAME", b"a", b"b"]).await;
    assert_eq!(q::<Value>(&mut c, &[b"GET", b"a"]).await, Value::Nil);
    assert_eq!(q::<String>(&mut c, &[b"GET", b"b"]).await, "1");
    assert!(
        q::<i64>(&mut c, &[b"TTL", b"b"]).await > 90,
        "the expiry moves along"
    );
    assert_eq!(
        err(&mut c, &[b"RENAME", b"a", b"b"]).await,
        "ERR no such key"
    );
    let () = q(&mut c, &[b"RENAME", b"b", b"b"]).await;
    let () = q(&mut c, &[b"SET", b"c", b"2"]).await;
    assert_eq!(q::<i64>(&mut c, &[b"RENAMENX", b"b", b"c"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"RENAMENX", b"b", b"d"]).await, 1);
    assert_eq!(
        err(&mut c, &[b"RENAMENX", b"b", b"e"]).await,
        "ERR no such key"
    );

    assert_eq!(q::<i64>(&mut c, &[b"COPY", b"d", b"e"]).await, 1);
    assert_eq!(q::<i64>(&mut c, &[b"COPY", b"d", b"c"]).await, 0);
    assert_eq!(
        q::<i64>(&mut c, &[b"COPY", b"d", b"c", b"REPLACE"]).await,
        1
    );
    assert_eq!(q::<String>(&mut c, &[b"GET", b"c"]).await, "1");
    assert_eq!(q::<i64>(&mut c, &[b"COPY", b"none", b"x"]).await, 0);
    assert_eq!(
        q::<i64>(&mut c, &[b"COPY", b"d", b"f", b"DB", b"0"]).await,
        1
    );
    assert_eq!(
        err(&mut c, &[b"COPY", b"d", b"f", b"DB", b"1"]).await,
        "ERR DB index is out of range"
    );
    assert_eq!(
        err(&mut c, &[b"COPY", b"d", b"d"]).await,
        "ERR source and destination objects are the same"
    );
    assert_eq!(
        err(&mut c, &[b"COPY", b"d", b"f", b"NOPE"]).await,
        "ERR syntax error"
    );

    assert_eq!(
        q::<Value>(&mut c, &[b"TYPE", b"d"]).await,
        Value::SimpleString("string".into())
    );
    assert_eq!(
        q::<Value>(&mut c, &[b"TYPE", b"none"]).await,
        Value::SimpleString("none".into())
    );
    assert_eq!(q::<i64>(&mut c, &[b"TOUCH", b"d", b"none", b"d"]).await, 2);
    assert_eq!(q::<i64>(&mut c, &[b"UNLINK", b"d", b"none"]).await, 1);
}

#[tokio::test]
async fn randomkey_object_memory() {
    let s = start_default().await;
    let mut c = s.client().await;
    assert_eq!(q::<Value>(&mut c, &[b"RANDOMKEY"]).await, Value::Nil);
    let () = q(&mut c, &[b"SET", b"only", b"12345"]).await;
    assert_eq!(q::<String>(&mut c, &[b"RANDOMKEY"]).await, "only");
    for i in 0..20 {
        let () = q(&mut c, &[b"SET", format!("k{i}").as_bytes(), b"v"]).await;
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..50 {
        seen.insert(q::<String>(&mut c, &[b"RANDOMKEY"]).await);
    }
    assert!(seen.len() > 3, "RANDOMKEY varies: {seen:?}");

    let () = q(&mut c, &[b"SET", b"long", "x".repeat(100).as_bytes()]).await;
    for (key, enc) in [(&b"only"[..], "int"), (b"k1", "embstr"), (b"long", "raw")] {
        assert_eq!(
            q::<String>(&mut c, &[b"OBJECT", b"ENCODING", key]).await,
            enc
        );
    }
    assert_eq!(
        q::<Value>(&mut c, &[b"OBJECT", b"ENCODING", b"none"]).await,
        Value::Nil
    );
    assert_eq!(
        q::<i64>(&mut c, &[b"OBJECT", b"REFCOUNT", b"only"]).await,
        1
    );
    assert!(q::<i64>(&mut c, &[b"OBJECT", b"IDLETIME", b"only"]).await < 100);
    assert!(
        err(&mut c, &[b"OBJECT", b"FREQ", b"only"])
            .await
            .starts_with("ERR An LFU maxmemory policy")
    );
    let help: Vec<String> = q(&mut c, &[b"OBJECT", b"HELP"]).await;
    assert!(help[0].starts_with("OBJECT <subcommand>"));
    assert_eq!(
        err(&mut c, &[b"OBJECT", b"NOPE", b"x"]).await,
        "ERR unknown subcommand 'NOPE'. Try OBJECT HELP."
    );
    assert_eq!(
        err(&mut c, &[b"OBJECT", b"ENCODING"]).await,
        "ERR wrong number of arguments for 'object|encoding' command"
    );
    let usage: i64 = q(&mut c, &[b"MEMORY", b"USAGE", b"long"]).await;
    assert!(usage >= 104, "{usage}");
    let _: i64 = q(&mut c, &[b"MEMORY", b"USAGE", b"long", b"SAMPLES", b"0"]).await;
    assert_eq!(
        q::<Value>(&mut c, &[b"MEMORY", b"USAGE", b"none"]).await,
        Value::Nil
    );
    assert_eq!(
        err(&mut c, &[b"MEMORY", b"USAGE", b"long", b"OOPS"]).await,
        "ERR syntax error"
    );
}

#[tokio::test]
async fn counters_answer_as_redis() {
    let (s, clock) = start_with_clock().await;
    let mut c = s.client().await;
    assert_eq!(q::<i64>(&mut c, &[b"INCR", b"n"]).await, 1);
    assert_eq!(q::<i64>(&mut c, &[b"incrby", b"n", b"41"]).await, 42);
    assert_eq!(q::<i64>(&mut c, &[b"DECR", b"n"]).await, 41);
    assert_eq!(q::<i64>(&mut c, &[b"DECRBY", b"n", b"-9"]).await, 50);
    assert_eq!(q::<String>(&mut c, &[b"GET", b"n"]).await, "50");
    assert_eq!(q::<String>(&mut c, &[b"TYPE", b"n"]).await, "string");
    assert_eq!(q::<i64>(&mut c, &[b"STRLEN", b"n"]).await, 2);
    assert_eq!(q::<i64>(&mut c, &[b"DBSIZE"]).await, 1);
    // A string counts from its number.
    let () = q(&mut c, &[b"SET", b"s", b"10"]).await;
    assert_eq!(q::<i64>(&mut c, &[b"INCR", b"s"]).await, 11);
    assert_eq!(
        q::<String>(&mut c, &[b"INCRBYFLOAT", b"s", b"0.5"]).await,
        "11.5"
    );
    assert_eq!(
        q::<String>(&mut c, &[b"INCRBYFLOAT", b"s", b"-0.5"]).await,
        "11"
    );
    assert_eq!(q::<i64>(&mut c, &[b"INCR", b"s"]).await, 12);
    // SET replaces the counter; DEL removes it.
    let () = q(&mut c, &[b"SET", b"n", b"7"]).await;
    assert_eq!(q::<i64>(&mut c, &[b"INCR", b"n"]).await, 8);
    assert_eq!(q::<i64>(&mut c, &[b"DEL", b"n"]).await, 1);
    assert_eq!(q::<Value>(&mut c, &[b"GET", b"n"]).await, Value::Nil);
    assert_eq!(q::<i64>(&mut c, &[b"EXISTS", b"n"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"INCR", b"n"]).await, 1);
    // EXPIRE, TTL and PERSIST on a counter.
    assert_eq!(q::<i64>(&mut c, &[b"EXPIRE", b"n", b"100"]).await, 1);
    assert!(q::<i64>(&mut c, &[b"TTL", b"n"]).await > 90);
    assert_eq!(q::<i64>(&mut c, &[b"INCR", b"n"]).await, 2);
    assert!(q::<i64>(&mut c, &[b"TTL", b"n"]).await > 90);
    assert_eq!(q::<i64>(&mut c, &[b"PERSIST", b"n"]).await, 1);
    assert_eq!(q::<i64>(&mut c, &[b"TTL", b"n"]).await, -1);
    assert_eq!(q::<String>(&mut c, &[b"GET", b"n"]).await, "2");
    let () = q(&mut c, &[b"PSETEX", b"gone", b"5", b"5"]).await;
    clock.advance(std::time::Duration::from_millis(4));
    assert_eq!(
        q::<i64>(&mut c, &[b"INCR", b"gone"]).await,
        6,
        "not expired yet"
    );
    let () = q(&mut c, &[b"PSETEX", b"gone", b"5", b"5"]).await;
    clock.advance(std::time::Duration::from_millis(5));
    assert_eq!(
        q::<i64>(&mut c, &[b"INCR", b"gone"]).await,
        1,
        "expired: a new counter"
    );

    // Redis's errors; nothing written.
    let () = q(&mut c, &[b"SET", b"w", b"word"]).await;
    for args in [
        &[&b"INCR"[..], b"w"][..],
        &[b"INCRBY", b"n", b"x"],
        &[b"INCRBY", b"n", b"1.5"],
        &[b"DECRBY", b"w", b"1"],
    ] {
        assert_eq!(
            err(&mut c, args).await,
            "ERR value is not an integer or out of range"
        );
    }
    assert_eq!(
        err(&mut c, &[b"INCRBYFLOAT", b"w", b"1"]).await,
        "ERR value is not a valid float"
    );
    assert_eq!(
        err(&mut c, &[b"INCRBYFLOAT", b"n", b"abc"]).await,
        "ERR value is not a valid float"
    );
    assert_eq!(
        err(&mut c, &[b"INCRBYFLOAT", b"n", b"inf"]).await,
        "ERR value is not a valid float"
    );
    let () = q(&mut c, &[b"SET", b"big", b"9223372036854775807"]).await;
    assert_eq!(
        err(&mut c, &[b"INCR", b"big"]).await,
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        err(&mut c, &[b"DECRBY", b"n", b"-9223372036854775808"]).await,
        "ERR decrement would overflow"
    );
    assert_eq!(
        q::<String>(&mut c, &[b"GET", b"big"]).await,
        "9223372036854775807"
    );
    assert_eq!(q::<String>(&mut c, &[b"GET", b"w"]).await, "word");
    assert_eq!(q::<String>(&mut c, &[b"GET", b"n"]).await, "2");
    // Arity is still checked first, as in Redis.
    assert_eq!(
        err(&mut c, &[b"INCR"]).await,
        "ERR wrong number of arguments for 'incr' command"
    );
}

#[tokio::test]
async fn counters_in_transactions_and_under_watch() {
    let s = start_default().await;
    let mut c = s.client().await;
    let mut other = s.client().await;
    let () = q(&mut c, &[b"MULTI"]).await;
    let _: Value = q(&mut c, &[b"INCR", b"t"]).await;
    let _: Value = q(&mut c, &[b"INCRBY", b"t", b"4"]).await;
    assert_eq!(q::<Vec<i64>>(&mut c, &[b"EXEC"]).await, vec![1, 5]);
    // An increment from another client is a change WATCH sees.
    let () = q(&mut c, &[b"WATCH", b"t"]).await;
    assert_eq!(q::<i64>(&mut other, &[b"INCR", b"t"]).await, 6);
    let () = q(&mut c, &[b"MULTI"]).await;
    let _: Value = q(&mut c, &[b"INCR", b"t"]).await;
    assert_eq!(q::<Value>(&mut c, &[b"EXEC"]).await, Value::Nil);
    assert_eq!(q::<String>(&mut c, &[b"GET", b"t"]).await, "6");
}

#[tokio::test]
async fn resp3_nulls_of_new_commands() {
    let s = start_default().await;
    let mut raw = s.raw().await;
    exchange(
        &mut raw,
        b"GETSET k v\r\nRANDOMKEY\r\n",
        b"$-1\r\n$1\r\nk\r\n",
    )
    .await;
    exchange(
        &mut raw,
        b"DEL k\r\nRANDOMKEY\r\nGETEX k\r\n",
        b":1\r\n$-1\r\n$-1\r\n",
    )
    .await;
    exchange(&mut raw, b"HELLO 3\r\n", b"%7\r\n").await;
    let mut sink = vec![0u8; 512];
    let mut got = Vec::new();
    while !got.ends_with(b"*0\r\n") {
        let n = common::bounded(tokio::io::AsyncReadExt::read(&mut raw, &mut sink))
            .await
            .unwrap();
        got.extend_from_slice(&sink[..n]);
    }
    exchange(
        &mut raw,
        b"RANDOMKEY\r\nGETEX k\r\nGETSET k v\r\nOBJECT ENCODING none\r\nMEMORY USAGE none\r\n",
        b"_\r\n_\r\n_\r\n_\r\n_\r\n",
    )
    .await;
}
