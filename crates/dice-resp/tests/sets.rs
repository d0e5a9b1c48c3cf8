//! Set commands: replies and errors as Redis 7 gives them (checked against a real Redis 7),
//! WRONGTYPE both ways, the key commands (TYPE, DEL, UNLINK, EXISTS, EXPIRE, TTL, PERSIST,
//! RENAME, COPY, SCAN TYPE, KEYS, DBSIZE, OBJECT ENCODING) on a set, and keyspace events.
#![allow(clippy::unwrap_used)]

mod common;

use common::{err, q, start_default};
use redis::Value;

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn set_commands_reply_as_redis() {
    let s = start_default().await;
    let mut c = s.client().await;
    assert_eq!(
        q::<i64>(&mut c, &[b"SADD", b"s", b"a", b"b", b"c"]).await,
        3
    );
    assert_eq!(
        q::<i64>(&mut c, &[b"SADD", b"s", b"a", b"d", b"d"]).await,
        1
    );
    assert_eq!(
        err(&mut c, &[b"SADD", b"s"]).await,
        "ERR wrong number of arguments for 'sadd' command"
    );
    assert_eq!(
        sorted(q(&mut c, &[b"SMEMBERS", b"s"]).await),
        strs(&["a", "b", "c", "d"])
    );
    assert_eq!(
        q::<Vec<String>>(&mut c, &[b"SMEMBERS", b"nokey"]).await,
        Vec::<String>::new()
    );
    assert_eq!(q::<i64>(&mut c, &[b"SISMEMBER", b"s", b"a"]).await, 1);
    assert_eq!(q::<i64>(&mut c, &[b"SISMEMBER", b"s", b"z"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"SISMEMBER", b"nokey", b"a"]).await, 0);
    assert_eq!(
        q::<Vec<i64>>(&mut c, &[b"SMISMEMBER", b"s", b"a", b"z", b"b"]).await,
        vec![1, 0, 1]
    );
    assert_eq!(
        q::<Vec<i64>>(&mut c, &[b"SMISMEMBER", b"nokey", b"a"]).await,
        vec![0]
    );
    assert_eq!(q::<i64>(&mut c, &[b"SCARD", b"s"]).await, 4);
    assert_eq!(q::<i64>(&mut c, &[b"SCARD", b"nokey"]).await, 0);
    assert_eq!(
        q::<i64>(&mut c, &[b"SREM", b"s", b"a", b"a", b"z"]).await,
        1
    );
    assert_eq!(q::<i64>(&mut c, &[b"SREM", b"nokey", b"a"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"SCARD", b"s"]).await, 3);

    // SRANDMEMBER: one, distinct up to count, or -count that may repeat.
    let one: String = q(&mut c, &[b"SRANDMEMBER", b"s"]).await;
    assert!(["b", "c", "d"].contains(&one.as_str()));
    assert_eq!(
        q::<Value>(&mut c, &[b"SRANDMEMBER", b"nokey"]).await,
        Value::Nil
    );
    assert_eq!(
        sorted(q(&mut c, &[b"SRANDMEMBER", b"s", b"10"]).await),
        strs(&["b", "c", "d"])
    );
    assert_eq!(
        q::<Vec<String>>(&mut c, &[b"SRANDMEMBER", b"s", b"2"])
            .await
            .len(),
        2
    );
    let many: Vec<String> = q(&mut c, &[b"SRANDMEMBER", b"s", b"-7"]).await;
    assert_eq!(many.len(), 7);
    assert!(many.iter().all(|m| ["b", "c", "d"].contains(&m.as_str())));
    assert_eq!(
        q::<Vec<String>>(&mut c, &[b"SRANDMEMBER", b"s", b"0"]).await,
        Vec::<String>::new()
    );
    assert_eq!(
        q::<Vec<String>>(&mut c, &[b"SRANDMEMBER", b"nokey", b"-3"]).await,
        Vec::<String>::new()
    );
    assert_eq!(
        err(&mut c, &[b"SRANDMEMBER", b"s", b"x"]).await,
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&mut c, &[b"SRANDMEMBER", b"s", b"1", b"2"]).await,
        "ERR syntax error"
    );

    // SPOP.
    assert_eq!(q::<Value>(&mut c, &[b"SPOP", b"nokey"]).await, Value::Nil);
    assert_eq!(
        q::<Vec<String>>(&mut c, &[b"SPOP", b"nokey", b"2"]).await,
        Vec::<String>::new()
    );
    assert_eq!(
        err(&mut c, &[b"SPOP", b"s", b"-1"]).await,
        "ERR value is out of range, must be positive"
    );
    let popped: String = q(&mut c, &[b"SPOP", b"s"]).await;
    assert_eq!(
        q::<i64>(&mut c, &[b"SISMEMBER", b"s", popped.as_bytes()]).await,
        0
    );
    assert_eq!(
        q::<Vec<String>>(&mut c, &[b"SPOP", b"s", b"0"]).await,
        Vec::<String>::new()
    );
    assert_eq!(
        q::<Vec<String>>(&mut c, &[b"SPOP", b"s", b"5"]).await.len(),
        2
    );
    assert_eq!(
        q::<i64>(&mut c, &[b"EXISTS", b"s"]).await,
        0,
        "popped empty"
    );

    // SMOVE.
    let () = q(&mut c, &[b"SADD", b"src", b"m", b"n"]).await;
    assert_eq!(q::<i64>(&mut c, &[b"SMOVE", b"src", b"dst", b"m"]).await, 1);
    assert_eq!(q::<i64>(&mut c, &[b"SMOVE", b"src", b"dst", b"m"]).await, 0);
    assert_eq!(
        q::<i64>(&mut c, &[b"SMOVE", b"nokey", b"dst", b"m"]).await,
        0
    );
    assert_eq!(q::<i64>(&mut c, &[b"SMOVE", b"src", b"src", b"n"]).await, 1);
    assert_eq!(
        q::<Vec<String>>(&mut c, &[b"SMEMBERS", b"dst"]).await,
        strs(&["m"])
    );
    assert_eq!(
        q::<Vec<String>>(&mut c, &[b"SMEMBERS", b"src"]).await,
        strs(&["n"])
    );

    // SINTER, SUNION, SDIFF, their STORE forms and SINTERCARD.
    let () = q(&mut c, &[b"SADD", b"k1", b"a", b"b", b"c", b"d"]).await;
    let () = q(&mut c, &[b"SADD", b"k2", b"c", b"d", b"e"]).await;
    let () = q(&mut c, &[b"SADD", b"k3", b"d", b"f"]).await;
    assert_eq!(
        sorted(q(&mut c, &[b"SINTER", b"k1", b"k2", b"k3"]).await),
        strs(&["d"])
    );
    assert_eq!(
        q::<Vec<String>>(&mut c, &[b"SINTER", b"k1", b"nokey"]).await,
        Vec::<String>::new()
    );
    assert_eq!(
        sorted(q(&mut c, &[b"SUNION", b"k1", b"k2", b"nokey"]).await),
        strs(&["a", "b", "c", "d", "e"])
    );
    assert_eq!(
        sorted(q(&mut c, &[b"SDIFF", b"k1", b"k2", b"k3"]).await),
        strs(&["a", "b"])
    );
    assert_eq!(
        q::<Vec<String>>(&mut c, &[b"SDIFF", b"nokey", b"k1"]).await,
        Vec::<String>::new()
    );
    assert_eq!(
        q::<i64>(&mut c, &[b"SINTERSTORE", b"out", b"k1", b"k2"]).await,
        2
    );
    assert_eq!(
        sorted(q(&mut c, &[b"SMEMBERS", b"out"]).await),
        strs(&["c", "d"])
    );
    assert_eq!(
        q::<i64>(&mut c, &[b"SUNIONSTORE", b"out", b"k2", b"k3"]).await,
        4
    );
    assert_eq!(
        sorted(q(&mut c, &[b"SMEMBERS", b"out"]).await),
        strs(&["c", "d", "e", "f"])
    );
    assert_eq!(
        q::<i64>(&mut c, &[b"SDIFFSTORE", b"out", b"k1", b"k2"]).await,
        2
    );
    assert_eq!(
        sorted(q(&mut c, &[b"SMEMBERS", b"out"]).await),
        strs(&["a", "b"])
    );
    // An empty result deletes the destination, whatever it held.
    let () = q(&mut c, &[b"SET", b"strdst", b"v"]).await;
    assert_eq!(
        q::<i64>(&mut c, &[b"SINTERSTORE", b"strdst", b"k1", b"nokey"]).await,
        0
    );
    assert_eq!(q::<i64>(&mut c, &[b"EXISTS", b"strdst"]).await, 0);
    let () = q(&mut c, &[b"SET", b"strdst", b"v"]).await;
    assert_eq!(
        q::<i64>(&mut c, &[b"SUNIONSTORE", b"strdst", b"k3"]).await,
        2
    );
    assert_eq!(q::<String>(&mut c, &[b"TYPE", b"strdst"]).await, "set");
    assert_eq!(
        q::<i64>(&mut c, &[b"SINTERCARD", b"2", b"k1", b"k2"]).await,
        2
    );
    assert_eq!(
        q::<i64>(&mut c, &[b"SINTERCARD", b"2", b"k1", b"k2", b"LIMIT", b"1"]).await,
        1
    );
    assert_eq!(
        err(&mut c, &[b"SINTERCARD", b"0", b"k1"]).await,
        "ERR numkeys should be greater than 0"
    );
    assert_eq!(
        err(&mut c, &[b"SINTERCARD", b"3", b"k1", b"k2"]).await,
        "ERR Number of keys can't be greater than number of args"
    );
    assert_eq!(
        err(&mut c, &[b"SINTERCARD", b"1", b"k1", b"LIMIT", b"-1"]).await,
        "ERR LIMIT can't be negative"
    );

    // SSCAN pages through every member.
    let mut args: Vec<Vec<u8>> = vec![b"SADD".to_vec(), b"big".to_vec()];
    args.extend((0..50).map(|i| format!("m{i}").into_bytes()));
    let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    assert_eq!(q::<i64>(&mut c, &refs).await, 50);
    let mut cursor = "0".to_owned();
    let mut seen = Vec::new();
    loop {
        let (next, page): (String, Vec<String>) = q(
            &mut c,
            &[b"SSCAN", b"big", cursor.as_bytes(), b"COUNT", b"7"],
        )
        .await;
        seen.extend(page);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 50);
    let (_, matched): (String, Vec<String>) = q(
        &mut c,
        &[b"SSCAN", b"big", b"0", b"MATCH", b"m1*", b"COUNT", b"100"],
    )
    .await;
    assert_eq!(matched.len(), 11);
    assert_eq!(
        err(&mut c, &[b"SSCAN", b"big", b"x"]).await,
        "ERR invalid cursor"
    );
    assert_eq!(
        err(&mut c, &[b"SSCAN", b"big", b"0", b"COUNT", b"0"]).await,
        "ERR syntax error"
    );
}

#[tokio::test]
async fn wrongtype_both_ways_and_key_commands_on_a_set() {
    let s = start_default().await;
    let mut c = s.client().await;
    let () = q(&mut c, &[b"SADD", b"st", b"m"]).await;
    let () = q(&mut c, &[b"SET", b"s", b"1"]).await;
    let () = q(&mut c, &[b"HSET", b"h", b"f", b"v"]).await;
    for cmd in [
        &[b"GET".as_slice(), b"st"][..],
        &[b"INCR", b"st"],
        &[b"APPEND", b"st", b"x"],
        &[b"STRLEN", b"st"],
        &[b"GETSET", b"st", b"x"],
        &[b"HSET", b"st", b"f", b"v"],
        &[b"HGET", b"st", b"f"],
        &[b"HGETALL", b"st"],
        &[b"HLEN", b"st"],
        &[b"HDEL", b"st", b"f"],
    ] {
        assert_eq!(
            err(&mut c, cmd).await,
            WRONGTYPE,
            "{:?}",
            String::from_utf8_lossy(cmd[0])
        );
    }
    for k in [b"s".as_slice(), b"h"] {
        for cmd in [
            &[b"SADD".as_slice(), k, b"x"][..],
            &[b"SREM", k, b"x"],
            &[b"SMEMBERS", k],
            &[b"SISMEMBER", k, b"x"],
            &[b"SMISMEMBER", k, b"x"],
            &[b"SCARD", k],
            &[b"SPOP", k],
            &[b"SRANDMEMBER", k],
            &[b"SSCAN", k, b"0"],
            &[b"SINTER", b"st", k],
            &[b"SUNION", k, b"nokey"],
            &[b"SDIFF", b"st", k],
            &[b"SINTERSTORE", b"out", b"st", k],
            &[b"SINTERCARD", b"2", b"st", k],
            &[b"SMOVE", b"st", k, b"m"],
            &[b"SMOVE", k, b"st", b"m"],
        ] {
            assert_eq!(
                err(&mut c, cmd).await,
                WRONGTYPE,
                "{:?}",
                String::from_utf8_lossy(cmd[0])
            );
        }
    }
    // Nothing was written by the refused commands.
    assert_eq!(
        q::<Vec<String>>(&mut c, &[b"SMEMBERS", b"st"]).await,
        strs(&["m"])
    );
    assert_eq!(q::<i64>(&mut c, &[b"EXISTS", b"out"]).await, 0);
    assert_eq!(
        q::<Vec<Option<String>>>(&mut c, &[b"MGET", b"st", b"s"]).await,
        vec![None, Some("1".into())]
    );
    assert_eq!(q::<String>(&mut c, &[b"TYPE", b"st"]).await, "set");
    assert_eq!(
        q::<String>(&mut c, &[b"OBJECT", b"ENCODING", b"st"]).await,
        "hashtable"
    );
    assert_eq!(
        q::<i64>(&mut c, &[b"EXISTS", b"st", b"s", b"none"]).await,
        2
    );
    assert_eq!(q::<i64>(&mut c, &[b"DBSIZE"]).await, 3);
    assert_eq!(
        sorted(q(&mut c, &[b"KEYS", b"*"]).await),
        strs(&["h", "s", "st"])
    );
    let (_, sets): (String, Vec<String>) =
        q(&mut c, &[b"SCAN", b"0", b"COUNT", b"100", b"TYPE", b"set"]).await;
    assert_eq!(sets, strs(&["st"]));

    // EXPIRE, TTL, PERSIST on a set.
    assert_eq!(q::<i64>(&mut c, &[b"TTL", b"st"]).await, -1);
    assert_eq!(q::<i64>(&mut c, &[b"EXPIRE", b"st", b"100"]).await, 1);
    assert!(q::<i64>(&mut c, &[b"TTL", b"st"]).await > 90);
    let () = q(&mut c, &[b"SADD", b"st", b"n"]).await;
    assert!(
        q::<i64>(&mut c, &[b"TTL", b"st"]).await > 90,
        "new members keep the TTL"
    );
    assert_eq!(
        q::<i64>(&mut c, &[b"EXPIRE", b"st", b"200", b"NX"]).await,
        0
    );
    assert_eq!(q::<i64>(&mut c, &[b"PERSIST", b"st"]).await, 1);
    assert_eq!(q::<i64>(&mut c, &[b"PERSIST", b"st"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"TTL", b"st"]).await, -1);
    assert_eq!(q::<i64>(&mut c, &[b"SCARD", b"st"]).await, 2);
    let () = q(&mut c, &[b"PEXPIRE", b"st", b"50"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    assert_eq!(q::<i64>(&mut c, &[b"EXISTS", b"st"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"TTL", b"st"]).await, -2);
    assert_eq!(q::<i64>(&mut c, &[b"SCARD", b"st"]).await, 0);
    let () = q(&mut c, &[b"SADD", b"st2", b"m"]).await;
    assert_eq!(q::<i64>(&mut c, &[b"EXPIRE", b"st2", b"-1"]).await, 1);
    assert_eq!(q::<i64>(&mut c, &[b"EXISTS", b"st2"]).await, 0);

    // RENAME and COPY move every member.
    let () = q(&mut c, &[b"SADD", b"a", b"x", b"y"]).await;
    let () = q(&mut c, &[b"EXPIRE", b"a", b"100"]).await;
    assert_eq!(q::<i64>(&mut c, &[b"COPY", b"a", b"b"]).await, 1);
    assert_eq!(q::<i64>(&mut c, &[b"COPY", b"a", b"b"]).await, 0);
    assert_eq!(q::<i64>(&mut c, &[b"SCARD", b"b"]).await, 2);
    assert!(q::<i64>(&mut c, &[b"TTL", b"b"]).await > 90);
    assert_eq!(q::<String>(&mut c, &[b"RENAME", b"a", b"s"]).await, "OK");
    assert_eq!(q::<String>(&mut c, &[b"TYPE", b"s"]).await, "set");
    assert_eq!(
        sorted(q(&mut c, &[b"SMEMBERS", b"s"]).await),
        strs(&["x", "y"])
    );
    assert_eq!(q::<i64>(&mut c, &[b"EXISTS", b"a"]).await, 0);

    // DEL and UNLINK remove a set; SET replaces one.
    assert_eq!(q::<i64>(&mut c, &[b"DEL", b"s", b"none"]).await, 1);
    assert_eq!(q::<i64>(&mut c, &[b"UNLINK", b"b"]).await, 1);
    let () = q(&mut c, &[b"SADD", b"x", b"m"]).await;
    assert_eq!(q::<String>(&mut c, &[b"SET", b"x", b"str"]).await, "OK");
    assert_eq!(q::<String>(&mut c, &[b"GET", b"x"]).await, "str");
    assert_eq!(err(&mut c, &[b"SMEMBERS", b"x"]).await, WRONGTYPE);
}

#[tokio::test]
async fn watch_sees_a_change_to_a_set() {
    let s = start_default().await;
    let mut c = s.client().await;
    let mut other = s.client().await;
    let () = q(&mut c, &[b"SADD", b"w", b"a"]).await;
    let () = q(&mut c, &[b"WATCH", b"w"]).await;
    let () = q(&mut other, &[b"SREM", b"w", b"a"]).await;
    let () = q(&mut c, &[b"MULTI"]).await;
    let () = q(&mut c, &[b"SADD", b"w", b"b"]).await;
    assert_eq!(q::<Value>(&mut c, &[b"EXEC"]).await, Value::Nil);
    assert_eq!(q::<i64>(&mut c, &[b"EXISTS", b"w"]).await, 0);
}

#[tokio::test]
async fn smembers_is_a_set_in_resp3() {
    let s = start_default().await;
    let mut c = s.client().await;
    let () = q(&mut c, &[b"SADD", b"s", b"m"]).await;
    let mut raw = s.raw().await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw.write_all(b"HELLO 3\r\nSMEMBERS s\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.ends_with(b"~1\r\n$1\r\nm\r\n") {
        let n = common::bounded(raw.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn keyspace_events_name_sadd_and_srem() {
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
        b"SUBSCRIBE __keyspace@0__:k\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$16\r\n__keyspace@0__:k\r\n:1\r\n",
    )
    .await;
    let () = q(&mut c, &[b"SADD", b"k", b"a", b"b"]).await;
    let () = q(&mut c, &[b"SREM", b"k", b"a"]).await;
    let () = q(&mut c, &[b"DEL", b"k"]).await;
    common::exchange(
        &mut sub,
        b"",
        b"*3\r\n$7\r\nmessage\r\n$16\r\n__keyspace@0__:k\r\n$4\r\nsadd\r\n\
          *3\r\n$7\r\nmessage\r\n$16\r\n__keyspace@0__:k\r\n$4\r\nsrem\r\n\
          *3\r\n$7\r\nmessage\r\n$16\r\n__keyspace@0__:k\r\n$3\r\ndel\r\n",
    )
    .await;
}
