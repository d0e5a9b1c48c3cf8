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
