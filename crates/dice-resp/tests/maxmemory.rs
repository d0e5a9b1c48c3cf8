//! `maxmemory` over RESP: `CONFIG GET/SET` of the limit, the policy and the samples, `INFO
//! memory`, Redis's exact `OOM` error under `noeviction` (reads and deletes go on), and each
//! evicting policy keeping used memory near the limit under a flood of ten times it.
#![allow(clippy::unwrap_used)]

mod common;

use common::{err, q, start_default};

use std::collections::HashMap;

fn info_field(info: &str, field: &str) -> String {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO"))
        .trim()
        .to_string()
}

const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

#[tokio::test]
async fn config_and_info_show_the_limit() {
    let s = start_default().await;
    let mut c = s.client().await;
    let got: HashMap<String, String> = q(&mut c, &[b"CONFIG", b"GET", b"maxmemory*"]).await;
    assert_eq!(got["maxmemory"], "0");
    assert_eq!(got["maxmemory-policy"], "noeviction");
    assert_eq!(got["maxmemory-samples"], "5");
    let () = q(
        &mut c,
        &[
            b"CONFIG",
            b"SET",
            b"maxmemory",
            b"64mb",
            b"maxmemory-policy",
            b"ALLKEYS-LFU",
            b"maxmemory-samples",
            b"10",
        ],
    )
    .await;
    let got: HashMap<String, String> = q(&mut c, &[b"CONFIG", b"GET", b"maxmemory*"]).await;
    assert_eq!(got["maxmemory"], (64u64 << 20).to_string());
    assert_eq!(got["maxmemory-policy"], "allkeys-lfu");
    assert_eq!(got["maxmemory-samples"], "10");
    let info: String = q(&mut c, &[b"INFO", b"memory"]).await;
    assert_eq!(info_field(&info, "maxmemory"), (64u64 << 20).to_string());
    assert_eq!(info_field(&info, "maxmemory_policy"), "allkeys-lfu");
    assert_eq!(info_field(&info, "evicted_keys"), "0");
    let used: u64 = info_field(&info, "used_memory").parse().unwrap();
    assert!(used > 0);
    assert!(info_field(&info, "used_memory_rss").parse::<u64>().unwrap() > 0);
    assert!(
        info_field(&info, "mem_fragmentation_ratio")
            .parse::<f64>()
            .unwrap()
            > 0.0
    );
    assert_eq!(info_field(&info, "dice_tombstones_bytes"), "0");
    // used_memory is the sum of its parts; what the allocator holds beyond them comes from
    // the embedding program (`dice node` sets it from jemalloc), 0 here.
    let part = |name: &str| info_field(&info, name).parse::<u64>().unwrap();
    assert_eq!(part("used_memory_other"), 0);
    assert_eq!(
        used,
        part("used_memory_dataset")
            + part("used_memory_pending")
            + part("used_memory_clients")
            + part("used_memory_other")
    );
    // The allocator's lines come from the program that chose it (`dice node`: jemalloc).
    assert!(!info.contains("allocator_allocated"));
    // One connection's buffers count.
    assert!(
        info_field(&info, "used_memory_clients")
            .parse::<u64>()
            .unwrap()
            >= 32 * 1024
    );
    // Bad values are refused and change nothing.
    assert!(
        err(&mut c, &[b"CONFIG", b"SET", b"maxmemory-policy", b"lru"])
            .await
            .starts_with("ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy')")
    );
    assert!(
        err(&mut c, &[b"CONFIG", b"SET", b"maxmemory", b"12parsecs"])
            .await
            .contains("'maxmemory'")
    );
    assert!(
        err(&mut c, &[b"CONFIG", b"SET", b"maxmemory-samples", b"0"])
            .await
            .contains("'maxmemory-samples'")
    );
    let got: HashMap<String, String> = q(&mut c, &[b"CONFIG", b"GET", b"maxmemory*"]).await;
    assert_eq!(got["maxmemory-policy"], "allkeys-lfu");
    assert_eq!(got["maxmemory"], (64u64 << 20).to_string());
}

#[tokio::test]
async fn noeviction_answers_oom_and_lets_reads_and_deletes_through() {
    let s = start_default().await;
    let mut c = s.client().await;
    let () = q(&mut c, &[b"CONFIG", b"SET", b"maxmemory", b"1mb"]).await;
    let value = vec![b'x'; 1000];
    let mut refused_at = None;
    for i in 0..5_000 {
        let k = format!("k{i}");
        let r: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&k)
            .arg(&value)
            .query_async(&mut c)
            .await;
        if r.is_err() {
            refused_at = Some(i);
            break;
        }
    }
    let n = refused_at.expect("1 MB is full before 5 MB are written");
    // Redis's error, byte for byte.
    let mut raw = s.raw().await;
    let oom = format!("-{OOM}\r\n");
    common::exchange(&mut raw, b"SET another v\r\n", oom.as_bytes()).await;
    common::exchange(&mut raw, b"INCR counter\r\n", oom.as_bytes()).await;
    common::exchange(&mut raw, b"APPEND k0 more\r\n", oom.as_bytes()).await;
    // Set writes that add data are refused like HSET; SREM goes on.
    common::exchange(&mut raw, b"SADD set m\r\n", oom.as_bytes()).await;
    common::exchange(&mut raw, b"SUNIONSTORE dst set\r\n", oom.as_bytes()).await;
    common::exchange(&mut raw, b"SMOVE set dst m\r\n", oom.as_bytes()).await;
    common::exchange(&mut raw, b"SREM set m\r\n", b":0\r\n").await;
    let v: Vec<u8> = q(&mut c, &[b"GET", b"k0"]).await;
    assert_eq!(v, value);
    let gone: Option<Vec<u8>> = q(&mut c, &[b"GET", format!("k{n}").as_bytes()]).await;
    assert_eq!(gone, None, "a refused write happened nowhere");
    let deleted: i64 = q(&mut c, &[b"DEL", b"k0", b"k1", b"k2"]).await;
    assert_eq!(deleted, 3);
}

/// Every evicting policy: a flood of ten times the limit (half the keys with a TTL) leaves
/// used memory near the limit, counts evicted keys, and never refuses a write.
#[tokio::test]
async fn each_policy_keeps_memory_near_the_limit_under_a_flood() {
    for policy in [
        "allkeys-lru",
        "volatile-lru",
        "allkeys-lfu",
        "volatile-lfu",
        "allkeys-random",
        "volatile-random",
        "volatile-ttl",
    ] {
        let s = start_default().await;
        let mut c = s.client().await;
        let () = q(
            &mut c,
            &[
                b"CONFIG",
                b"SET",
                b"maxmemory",
                b"2mb",
                b"maxmemory-policy",
                policy.as_bytes(),
            ],
        )
        .await;
        let value = vec![b'x'; 1000];
        for chunk in 0..200 {
            let mut pipe = redis::pipe();
            for i in chunk * 100..(chunk + 1) * 100 {
                if i % 2 == 0 {
                    pipe.cmd("SET")
                        .arg(format!("k{i}"))
                        .arg(&value)
                        .arg("EX")
                        .arg(3600)
                        .ignore();
                } else {
                    pipe.cmd("SET").arg(format!("p{i}")).arg(&value).ignore();
                }
            }
            let () = pipe
                .query_async(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{policy}: a write was refused in chunk {chunk}: {e}"));
            if policy.starts_with("volatile") && chunk == 20 {
                // Only the keys with a TTL may go: from here on, write only those.
                break;
            }
        }
        if policy.starts_with("volatile") {
            for chunk in 0..200 {
                let mut pipe = redis::pipe();
                for i in chunk * 100..(chunk + 1) * 100 {
                    pipe.cmd("SET")
                        .arg(format!("t{i}"))
                        .arg(&value)
                        .arg("EX")
                        .arg(3600)
                        .ignore();
                }
                let () = pipe.query_async(&mut c).await.unwrap();
            }
            // The persistent keys written before the limit was reached are all there.
            let p1: Option<Vec<u8>> = q(&mut c, &[b"GET", b"p1"]).await;
            assert!(p1.is_some(), "{policy} evicted a key without a TTL");
        }
        let info: String = q(&mut c, &[b"INFO", b"memory"]).await;
        let used: u64 = info_field(&info, "used_memory").parse().unwrap();
        let evicted: u64 = info_field(&info, "evicted_keys").parse().unwrap();
        assert!(used <= (2u64 << 20) * 11 / 10, "{policy}: used {used}");
        assert!(evicted > 10_000, "{policy}: evicted {evicted}");
        assert_eq!(info_field(&info, "maxmemory_policy"), policy);
    }
}

/// An eviction fires Redis's `evicted` keyspace event (class `e`), not `del`.
#[tokio::test]
async fn an_eviction_fires_evicted() {
    let s = start_default().await;
    let mut c = s.client().await;
    let () = q(
        &mut c,
        &[b"CONFIG", b"SET", b"notify-keyspace-events", b"Eeg"],
    )
    .await;
    let mut sub = s.raw().await;
    common::exchange(
        &mut sub,
        b"SUBSCRIBE __keyevent@0__:evicted __keyevent@0__:del\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$22\r\n__keyevent@0__:evicted\r\n:1\r\n\
          *3\r\n$9\r\nsubscribe\r\n$18\r\n__keyevent@0__:del\r\n:2\r\n",
    )
    .await;
    let () = q(&mut c, &[b"CONFIG", b"SET", b"maxmemory", b"1mb"]).await;
    let () = q(
        &mut c,
        &[b"CONFIG", b"SET", b"maxmemory-policy", b"allkeys-random"],
    )
    .await;
    let value = vec![b'x'; 1000];
    for i in 0..5_000 {
        let () = q(&mut c, &[b"SET", format!("k{i:04}").as_bytes(), &value]).await;
        let info: String = q(&mut c, &[b"INFO", b"memory"]).await;
        if info_field(&info, "evicted_keys") != "0" {
            break;
        }
    }
    // The first message is an `evicted` for a key that is gone.
    common::exchange(
        &mut sub,
        b"",
        b"*3\r\n$7\r\nmessage\r\n$22\r\n__keyevent@0__:evicted\r\n$5\r\n",
    )
    .await;
    let mut key = [0u8; 7];
    use tokio::io::AsyncReadExt;
    common::bounded(sub.read_exact(&mut key)).await.unwrap();
    assert_eq!(&key[5..], b"\r\n");
    let gone: Option<Vec<u8>> = q(&mut c, &[b"GET", &key[..5]]).await;
    assert_eq!(
        gone,
        None,
        "{:?} was evicted",
        String::from_utf8_lossy(&key)
    );
}

/// Evicting a hash changes each of its fields, but fires one `evicted` for the key, as
/// Redis does: the next event is the `set` of the write that made room.
#[tokio::test]
async fn evicting_a_hash_fires_one_evicted() {
    let s = start_default().await;
    let mut c = s.client().await;
    let () = q(
        &mut c,
        &[b"CONFIG", b"SET", b"notify-keyspace-events", b"E$e"],
    )
    .await;
    let mut args: Vec<Vec<u8>> = vec![b"HSET".to_vec(), b"h".to_vec()];
    for i in 0..100 {
        args.push(format!("f{i:03}").into_bytes());
        args.push(vec![b'v'; 1000]);
    }
    let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    let added: i64 = q(&mut c, &args).await;
    assert_eq!(added, 100);
    let info: String = q(&mut c, &[b"INFO", b"memory"]).await;
    let used: u64 = info_field(&info, "used_memory").parse().unwrap();
    // Room for everything but the hash's fields: the next write evicts the hash, its only key.
    let limit = (used - 50_000).to_string();
    let () = q(
        &mut c,
        &[b"CONFIG", b"SET", b"maxmemory-policy", b"allkeys-lru"],
    )
    .await;
    let mut sub = s.raw().await;
    common::exchange(
        &mut sub,
        b"SUBSCRIBE __keyevent@0__:evicted __keyevent@0__:set\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$22\r\n__keyevent@0__:evicted\r\n:1\r\n\
          *3\r\n$9\r\nsubscribe\r\n$18\r\n__keyevent@0__:set\r\n:2\r\n",
    )
    .await;
    let () = q(&mut c, &[b"CONFIG", b"SET", b"maxmemory", limit.as_bytes()]).await;
    let () = q(&mut c, &[b"SET", b"marker", b"v"]).await;
    common::exchange(
        &mut sub,
        b"",
        b"*3\r\n$7\r\nmessage\r\n$22\r\n__keyevent@0__:evicted\r\n$1\r\nh\r\n\
          *3\r\n$7\r\nmessage\r\n$18\r\n__keyevent@0__:set\r\n$6\r\nmarker\r\n",
    )
    .await;
    let exists: i64 = q(&mut c, &[b"EXISTS", b"h"]).await;
    assert_eq!(exists, 0);
}

/// `OBJECT FREQ` answers the key's LFU counter under an LFU policy, Redis's error otherwise.
#[tokio::test]
async fn object_freq_reads_the_lfu_counter() {
    let s = start_default().await;
    let mut c = s.client().await;
    let () = q(&mut c, &[b"SET", b"hot", b"v"]).await;
    let e = err(&mut c, &[b"OBJECT", b"FREQ", b"hot"]).await;
    assert!(
        e.starts_with("ERR An LFU maxmemory policy is not selected"),
        "{e}"
    );
    let () = q(&mut c, &[b"CONFIG", b"SET", b"maxmemory", b"8mb"]).await;
    let () = q(
        &mut c,
        &[b"CONFIG", b"SET", b"maxmemory-policy", b"allkeys-lfu"],
    )
    .await;
    let () = q(&mut c, &[b"SET", b"hot", b"v"]).await;
    let () = q(&mut c, &[b"SET", b"cold", b"v"]).await;
    let cold: i64 = q(&mut c, &[b"OBJECT", b"FREQ", b"cold"]).await;
    for _ in 0..50 {
        let _: Vec<u8> = q(&mut c, &[b"GET", b"hot"]).await;
    }
    let hot: i64 = q(&mut c, &[b"OBJECT", b"FREQ", b"hot"]).await;
    assert!(hot > cold, "hot {hot}, cold {cold}");
    assert!((0..=255).contains(&cold));
    let missing: Option<i64> = q(&mut c, &[b"OBJECT", b"FREQ", b"nothing"]).await;
    assert_eq!(missing, None);
    let () = q(
        &mut c,
        &[b"CONFIG", b"SET", b"maxmemory-policy", b"allkeys-lru"],
    )
    .await;
    let e = err(&mut c, &[b"OBJECT", b"FREQ", b"hot"]).await;
    assert!(
        e.starts_with("ERR An LFU maxmemory policy is not selected"),
        "{e}"
    );
}
