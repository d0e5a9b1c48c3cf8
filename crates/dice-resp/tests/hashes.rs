//! Hash commands: replies and errors as Redis 7 gives them, WRONGTYPE both ways, and the key
//! commands (TYPE, DEL, EXISTS, EXPIRE, TTL, PERSIST, RENAME, COPY, SCAN TYPE, DBSIZE) on a
//! hash.
#![allow(clippy::unwrap_used)]

mod common;

use common::{err, q, start_default};
use redis::Value;

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn hash_commands_reply_as_redis() {
    let s = start_default().await;
    let mut c = s.client().await;
    assert_eq!(
        q::<i64>(&mut c, &[b"HSET", b"h", b"a", b"1", b"b", b"2"]).await,
        2
    );
    assert_eq!(
        q::<i64>(&mut c, &[b"HSET", b"h", b"a", b"3", b"c", b"4"]).await,
        1
    );
    assert_eq!(
        err(&mut c, &[b"HSET", b"h", b"a"]).await,
        "ERR wrong number of arguments for 'hset' command"
    );
    assert_eq!(
        err(&mut c, &[b"HSET", b"h", b"a", b"1", b"b"]).await,
        "ERR wrong number of arguments for 'hset' command"
    );
    assert_eq!(
        q::<String>(&mut c, &[b"HMSET", b"h", b"d", b"5"]).await,
        "OK"
    );
    assert_eq!(q::<String>(&mut c, &[b"HGET", b"h", b"a"]).await, "3");
    assert_eq!(
        q::<Value>(&mut c, &[b"HGET", b"h", b"zz"]).await,
        Value::Nil
    );
    assert_eq!(
        q::<Value>(&mut c, &[b"HGET", b"nokey", b"a"]).await,
        Value::Nil
    );
    assert_eq!(
        q::<Vec<Option<String>>>(&mut c, &[b"HMGET", b"h", b"a", b"zz", b"b"]).await,
        vec![Some("3".into()), None, Some("2".into())]
    );
    assert_eq!(
        q::<Vec<Option<String>>>(&mut c, &[b"HMGET", b"nokey", b"a"]).await,
        vec![None]
    );
    assert_eq!(q::<i64>(&mut c, &[b"HLEN", b"h"]).await, 4);
    assert_eq!(q::<i64>(&mut c, &[b"HLEN", b"nokey"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"HEXISTS", b"h", b"a"]).await, 1);
    assert_eq!(q::<i64>(&mut c, &[b"HEXISTS", b"h", b"zz"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"HSTRLEN", b"h", b"a"]).await, 1);
    assert_eq!(q::<i64>(&mut c, &[b"HSTRLEN", b"h", b"zz"]).await, 0);
    let all: std::collections::BTreeMap<String, String> = q(&mut c, &[b"HGETALL", b"h"]).await;
    assert_eq!(
        all.into_iter().collect::<Vec<_>>(),
        vec![
            ("a".into(), "3".into()),
            ("b".into(), "2".into()),
            ("c".into(), "4".into()),
            ("d".into(), "5".into())
        ]
    );
    assert_eq!(
        sorted(q(&mut c, &[b"HKEYS", b"h"]).await),
        vec!["a", "b", "c", "d"]
    );
    assert_eq!(
        sorted(q(&mut c, &[b"HVALS", b"h"]).await),
        vec!["2", "3", "4", "5"]
    );
    assert_eq!(
        q::<Vec<String>>(&mut c, &[b"HGETALL", b"nokey"]).await,
        Vec::<String>::new()
    );
    assert_eq!(q::<i64>(&mut c, &[b"HSETNX", b"h", b"a", b"9"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"HSETNX", b"h", b"e", b"9"]).await, 1);
    assert_eq!(
        q::<i64>(&mut c, &[b"HDEL", b"h", b"e", b"e", b"zz"]).await,
        1
    );
    assert_eq!(q::<i64>(&mut c, &[b"HDEL", b"nokey", b"a"]).await, 0);

    // HINCRBY and HINCRBYFLOAT, with Redis's errors.
    assert_eq!(q::<i64>(&mut c, &[b"HINCRBY", b"h", b"n", b"5"]).await, 5);
    assert_eq!(q::<i64>(&mut c, &[b"HINCRBY", b"h", b"n", b"-7"]).await, -2);
    assert_eq!(
        err(&mut c, &[b"HINCRBY", b"h", b"n", b"x"]).await,
        "ERR value is not an integer or out of range"
    );
    let () = q(&mut c, &[b"HSET", b"h", b"s", b"abc"]).await;
    assert_eq!(
        err(&mut c, &[b"HINCRBY", b"h", b"s", b"1"]).await,
        "ERR hash value is not an integer"
    );
    assert_eq!(
        err(&mut c, &[b"HINCRBYFLOAT", b"h", b"s", b"1"]).await,
        "ERR hash value is not a float"
    );
    assert_eq!(
        err(&mut c, &[b"HINCRBYFLOAT", b"h", b"n", b"x"]).await,
        "ERR value is not a valid float"
    );
    let () = q(&mut c, &[b"HSET", b"h", b"max", b"9223372036854775807"]).await;
    assert_eq!(
        err(&mut c, &[b"HINCRBY", b"h", b"max", b"1"]).await,
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        q::<String>(&mut c, &[b"HINCRBYFLOAT", b"h", b"f", b"10.5"]).await,
        "10.5"
    );
    assert_eq!(
        q::<String>(&mut c, &[b"HINCRBYFLOAT", b"h", b"f", b"-0.5"]).await,
        "10"
    );

    // HRANDFIELD.
    let () = q(&mut c, &[b"DEL", b"r"]).await;
    let () = q(&mut c, &[b"HSET", b"r", b"x", b"1", b"y", b"2", b"z", b"3"]).await;
    let one: String = q(&mut c, &[b"HRANDFIELD", b"r"]).await;
    assert!(["x", "y", "z"].contains(&one.as_str()));
    assert_eq!(
        q::<Value>(&mut c, &[b"HRANDFIELD", b"nokey"]).await,
        Value::Nil
    );
    assert_eq!(
        sorted(q(&mut c, &[b"HRANDFIELD", b"r", b"10"]).await),
        vec!["x", "y", "z"]
    );
    assert_eq!(
        q::<Vec<String>>(&mut c, &[b"HRANDFIELD", b"r", b"2"])
            .await
            .len(),
        2
    );
    assert_eq!(
        q::<Vec<String>>(&mut c, &[b"HRANDFIELD", b"r", b"-5"])
            .await
            .len(),
        5
    );
    let with: Vec<String> = q(&mut c, &[b"HRANDFIELD", b"r", b"3", b"WITHVALUES"]).await;
    assert_eq!(with.len(), 6);
    assert_eq!(
        err(&mut c, &[b"HRANDFIELD", b"r", b"3", b"NOPE"]).await,
        "ERR syntax error"
    );
    assert_eq!(
        err(&mut c, &[b"HRANDFIELD", b"r", b"x"]).await,
        "ERR value is not an integer or out of range"
    );

    // HSCAN walks every field, in pages.
    let mut pairs = Vec::new();
    for i in 0..100 {
        pairs.push(format!("f{i}"));
        pairs.push(format!("v{i}"));
    }
    let mut args: Vec<&[u8]> = vec![b"HSET", b"big"];
    args.extend(pairs.iter().map(|p| p.as_bytes()));
    assert_eq!(q::<i64>(&mut c, &args).await, 100);
    let mut cursor = "0".to_owned();
    let mut seen = std::collections::BTreeSet::new();
    let mut pages = 0;
    loop {
        let (next, page): (String, Vec<String>) = q(
            &mut c,
            &[b"HSCAN", b"big", cursor.as_bytes(), b"COUNT", b"10"],
        )
        .await;
        for kv in page.chunks(2) {
            assert_eq!(kv[0][1..], kv[1][1..]);
            seen.insert(kv[0].clone());
        }
        pages += 1;
        cursor = next;
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen.len(), 100);
    assert!(pages > 5, "{pages} pages");
    let (_, page): (String, Vec<String>) = q(
        &mut c,
        &[
            b"HSCAN",
            b"big",
            b"0",
            b"COUNT",
            b"1000",
            b"MATCH",
            b"f1?",
            b"NOVALUES",
        ],
    )
    .await;
    assert_eq!(page.len(), 10);
    assert_eq!(
        err(&mut c, &[b"HSCAN", b"big", b"x"]).await,
        "ERR invalid cursor"
    );
}

#[tokio::test]
async fn wrongtype_both_ways_and_key_commands_on_a_hash() {
    let s = start_default().await;
    let mut c = s.client().await;
    let () = q(&mut c, &[b"HSET", b"h", b"f", b"v"]).await;
    let () = q(&mut c, &[b"SET", b"s", b"1"]).await;
    for cmd in [
        &[b"GET".as_slice(), b"h"][..],
        &[b"INCR", b"h"],
        &[b"APPEND", b"h", b"x"],
        &[b"STRLEN", b"h"],
        &[b"GETRANGE", b"h", b"0", b"1"],
        &[b"SETRANGE", b"h", b"0", b"x"],
        &[b"GETSET", b"h", b"x"],
        &[b"GETDEL", b"h"],
        &[b"SET", b"h", b"x", b"GET"],
        &[b"HSET", b"s", b"f", b"v"],
        &[b"HGET", b"s", b"f"],
        &[b"HMGET", b"s", b"f"],
        &[b"HDEL", b"s", b"f"],
        &[b"HGETALL", b"s"],
        &[b"HLEN", b"s"],
        &[b"HEXISTS", b"s", b"f"],
        &[b"HINCRBY", b"s", b"f", b"1"],
        &[b"HSETNX", b"s", b"f", b"v"],
        &[b"HSCAN", b"s", b"0"],
        &[b"HRANDFIELD", b"s"],
    ] {
        assert_eq!(
            err(&mut c, cmd).await,
            WRONGTYPE,
            "{:?}",
            String::from_utf8_lossy(cmd[0])
        );
    }
    // MGET answers nil for a key of another type.
    assert_eq!(
        q::<Vec<Option<String>>>(&mut c, &[b"MGET", b"h", b"s"]).await,
        vec![None, Some("1".into())]
    );
    assert_eq!(q::<String>(&mut c, &[b"TYPE", b"h"]).await, "hash");
    assert_eq!(
        q::<String>(&mut c, &[b"OBJECT", b"ENCODING", b"h"]).await,
        "hashtable"
    );
    assert_eq!(q::<String>(&mut c, &[b"TYPE", b"s"]).await, "string");
    assert_eq!(q::<i64>(&mut c, &[b"EXISTS", b"h", b"s", b"none"]).await, 2);
    assert_eq!(q::<i64>(&mut c, &[b"DBSIZE"]).await, 2);
    assert_eq!(q::<i64>(&mut c, &[b"SETNX", b"h", b"x"]).await, 0);
    assert_eq!(
        q::<Value>(&mut c, &[b"SET", b"h", b"x", b"NX"]).await,
        Value::Nil
    );
    let mut keys: Vec<String> = q(&mut c, &[b"KEYS", b"*"]).await;
    keys.sort();
    assert_eq!(keys, vec!["h", "s"]);
    let (_, hashes): (String, Vec<String>) =
        q(&mut c, &[b"SCAN", b"0", b"COUNT", b"100", b"TYPE", b"hash"]).await;
    assert_eq!(hashes, vec!["h"]);
    let (_, strings): (String, Vec<String>) = q(
        &mut c,
        &[b"SCAN", b"0", b"COUNT", b"100", b"TYPE", b"string"],
    )
    .await;
    assert_eq!(strings, vec!["s"]);

    // EXPIRE, TTL, PERSIST on a hash.
    assert_eq!(q::<i64>(&mut c, &[b"TTL", b"h"]).await, -1);
    assert_eq!(q::<i64>(&mut c, &[b"EXPIRE", b"h", b"100"]).await, 1);
    assert!(q::<i64>(&mut c, &[b"TTL", b"h"]).await > 90);
    let () = q(&mut c, &[b"HSET", b"h", b"g", b"w"]).await;
    assert!(
        q::<i64>(&mut c, &[b"TTL", b"h"]).await > 90,
        "new fields keep the TTL"
    );
    assert!(q::<i64>(&mut c, &[b"PEXPIRETIME", b"h"]).await > 0);
    assert_eq!(q::<i64>(&mut c, &[b"EXPIRE", b"h", b"200", b"NX"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"PERSIST", b"h"]).await, 1);
    assert_eq!(q::<i64>(&mut c, &[b"PERSIST", b"h"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"TTL", b"h"]).await, -1);
    let () = q(&mut c, &[b"PEXPIRE", b"h", b"50"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    assert_eq!(q::<i64>(&mut c, &[b"EXISTS", b"h"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"TTL", b"h"]).await, -2);
    assert_eq!(q::<i64>(&mut c, &[b"HLEN", b"h"]).await, 0);
    // An expiry in the past deletes the hash.
    let () = q(&mut c, &[b"HSET", b"h2", b"f", b"v"]).await;
    assert_eq!(q::<i64>(&mut c, &[b"EXPIRE", b"h2", b"-1"]).await, 1);
    assert_eq!(q::<i64>(&mut c, &[b"EXISTS", b"h2"]).await, 0);

    // RENAME and COPY move every field.
    let () = q(&mut c, &[b"HSET", b"a", b"f1", b"1", b"f2", b"2"]).await;
    let () = q(&mut c, &[b"EXPIRE", b"a", b"100"]).await;
    assert_eq!(q::<i64>(&mut c, &[b"COPY", b"a", b"b"]).await, 1);
    assert_eq!(q::<i64>(&mut c, &[b"COPY", b"a", b"b"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"HLEN", b"b"]).await, 2);
    assert!(q::<i64>(&mut c, &[b"TTL", b"b"]).await > 90);
    assert_eq!(q::<String>(&mut c, &[b"RENAME", b"a", b"s"]).await, "OK");
    assert_eq!(q::<String>(&mut c, &[b"TYPE", b"s"]).await, "hash");
    assert_eq!(q::<String>(&mut c, &[b"HGET", b"s", b"f2"]).await, "2");
    assert_eq!(q::<i64>(&mut c, &[b"EXISTS", b"a"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"RENAMENX", b"s", b"b"]).await, 0);

    // DEL and UNLINK remove a hash; SET replaces one.
    assert_eq!(q::<i64>(&mut c, &[b"DEL", b"s", b"none"]).await, 1);
    assert_eq!(q::<i64>(&mut c, &[b"UNLINK", b"b"]).await, 1);
    assert_eq!(q::<i64>(&mut c, &[b"DBSIZE"]).await, 0);
    let () = q(&mut c, &[b"HSET", b"x", b"f", b"v"]).await;
    assert_eq!(q::<String>(&mut c, &[b"SET", b"x", b"str"]).await, "OK");
    assert_eq!(q::<String>(&mut c, &[b"GET", b"x"]).await, "str");
    assert_eq!(err(&mut c, &[b"HGET", b"x", b"f"]).await, WRONGTYPE);
}

/// `HINCRBY` fields are counters: the replies (and errors) of this sequence are Redis 7.0's,
/// run against `redis-server` 7.0.15; an `HSET` or `HDEL` of a counter field resets it, and
/// `HGETALL`, `HLEN`, `HSTRLEN` and `TYPE` read it as a field.
#[tokio::test]
async fn hincrby_fields_count_and_reply_as_redis() {
    let s = start_default().await;
    let mut c = s.client().await;
    for (want, by) in [("0.1", "0.1"), ("0.2", "0.1")] {
        assert_eq!(
            q::<String>(&mut c, &[b"HINCRBYFLOAT", b"hf", b"x", by.as_bytes()]).await,
            want
        );
    }
    let () = q(&mut c, &[b"HSET", b"hf", b"s", b"abc"]).await;
    assert_eq!(
        err(&mut c, &[b"HINCRBY", b"hf", b"s", b"1"]).await,
        "ERR hash value is not an integer"
    );
    assert_eq!(
        err(&mut c, &[b"HINCRBYFLOAT", b"hf", b"s", b"1"]).await,
        "ERR hash value is not a float"
    );
    assert_eq!(
        err(&mut c, &[b"HINCRBY", b"hf", b"x", b"1"]).await,
        "ERR hash value is not an integer"
    );
    let () = q(&mut c, &[b"HSET", b"hf", b"m", b"9223372036854775807"]).await;
    assert_eq!(
        err(&mut c, &[b"HINCRBY", b"hf", b"m", b"1"]).await,
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        err(&mut c, &[b"HINCRBY", b"hf", b"n", b"x"]).await,
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&mut c, &[b"HINCRBYFLOAT", b"hf", b"n", b"x"]).await,
        "ERR value is not a valid float"
    );
    // A counter field: increments, then an HSET resets it, then increments from its value.
    assert_eq!(q::<i64>(&mut c, &[b"HINCRBY", b"hc", b"n", b"5"]).await, 5);
    assert_eq!(
        q::<i64>(&mut c, &[b"HINCRBY", b"hc", b"n", b"-7"]).await,
        -2
    );
    assert_eq!(q::<i64>(&mut c, &[b"HSET", b"hc", b"n", b"40"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"HINCRBY", b"hc", b"n", b"2"]).await, 42);
    assert_eq!(q::<String>(&mut c, &[b"HGET", b"hc", b"n"]).await, "42");
    assert_eq!(q::<i64>(&mut c, &[b"HSTRLEN", b"hc", b"n"]).await, 2);
    assert_eq!(q::<i64>(&mut c, &[b"HLEN", b"hc"]).await, 1);
    assert_eq!(q::<String>(&mut c, &[b"TYPE", b"hc"]).await, "hash");
    assert_eq!(
        q::<Vec<String>>(&mut c, &[b"HGETALL", b"hc"]).await,
        vec!["n".to_owned(), "42".to_owned()]
    );
    assert_eq!(q::<i64>(&mut c, &[b"HSETNX", b"hc", b"n", b"1"]).await, 0);
    // HDEL removes it; the next increment starts from 0.
    assert_eq!(q::<i64>(&mut c, &[b"HDEL", b"hc", b"n"]).await, 1);
    assert_eq!(q::<i64>(&mut c, &[b"EXISTS", b"hc"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"HINCRBY", b"hc", b"n", b"3"]).await, 3);
    assert_eq!(q::<i64>(&mut c, &[b"DEL", b"hc"]).await, 1);
    assert_eq!(
        q::<Value>(&mut c, &[b"HGET", b"hc", b"n"]).await,
        Value::Nil
    );
}

#[tokio::test]
async fn hgetall_is_a_map_in_resp3() {
    let s = start_default().await;
    let mut c = s.client().await;
    let () = q(&mut c, &[b"HSET", b"h", b"f", b"v"]).await;
    let mut raw = s.raw().await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw.write_all(b"HELLO 3\r\nHGETALL h\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.ends_with(b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n") {
        let n = common::bounded(raw.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn hash_writes_fire_hset_and_hdel_notifications() {
    let s = start_default().await;
    let mut c = s.client().await;
    let () = q(
        &mut c,
        &[b"CONFIG", b"SET", b"notify-keyspace-events", b"KEA"],
    )
    .await;
    let mut sub = s.raw().await;
    common::exchange(
        &mut sub,
        b"SUBSCRIBE __keyspace@0__:h\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$16\r\n__keyspace@0__:h\r\n:1\r\n",
    )
    .await;
    let () = q(&mut c, &[b"HSET", b"h", b"a", b"1", b"b", b"2"]).await;
    let () = q(&mut c, &[b"HDEL", b"h", b"a"]).await;
    let () = q(&mut c, &[b"DEL", b"h"]).await;
    common::exchange(
        &mut sub,
        b"",
        b"*3\r\n$7\r\nmessage\r\n$16\r\n__keyspace@0__:h\r\n$4\r\nhset\r\n\
          *3\r\n$7\r\nmessage\r\n$16\r\n__keyspace@0__:h\r\n$4\r\nhdel\r\n\
          *3\r\n$7\r\nmessage\r\n$16\r\n__keyspace@0__:h\r\n$3\r\ndel\r\n",
    )
    .await;
}
