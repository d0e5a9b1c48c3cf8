//! What keeps one client from taking the server down: streamed replies, the global input
//! budget, the idle timeout, the stall timeout for clients that do not read, and failed
//! `AUTH`s closing the connection.
#![allow(clippy::unwrap_used)]

mod common;

use common::{bounded, client_at, exchange, q, read_to_close, start};
use dice_resp::RespConfig;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The value of `field` in an `INFO` reply.
fn info_field(info: &str, field: &str) -> String {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO"))
        .trim()
        .to_string()
}

fn mget_request(key: &str, times: usize) -> Vec<u8> {
    let mut req = format!("*{}\r\n$4\r\nMGET\r\n", times + 1).into_bytes();
    for _ in 0..times {
        req.extend_from_slice(format!("${}\r\n{key}\r\n", key.len()).as_bytes());
    }
    req
}

#[tokio::test]
async fn failed_auths_close_the_connection_and_are_counted() {
    let config = RespConfig::default().with_requirepass(Some("s3cret".into()));
    let s = start(config).await;
    let wrongpass = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    // A pipeline of guesses: three answers, then the connection closes; the right password
    // after them is never run.
    let mut raw = s.raw().await;
    raw.write_all(b"AUTH a\r\nAUTH default b\r\nHELLO 2 AUTH default c\r\nAUTH s3cret\r\nPING\r\n")
        .await
        .unwrap();
    let got = read_to_close(&mut raw).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&wrongpass.repeat(3))
    );

    // Two failures, then the right password: the connection stays usable.
    let mut raw = s.raw().await;
    exchange(&mut raw, b"AUTH x\r\nAUTH y\r\n", &wrongpass.repeat(2)).await;
    exchange(&mut raw, b"AUTH s3cret\r\nPING\r\n", b"+OK\r\n+PONG\r\n").await;

    let mut c = client_at(&format!("redis://:s3cret@{}/", s.handle.local_addr())).await;
    let info: String = q(&mut c, &[b"INFO", b"stats"]).await;
    assert_eq!(info_field(&info, "dice_auth_failures"), "5");
    assert_eq!(info_field(&info, "dice_auth_disconnects"), "1");
}

#[tokio::test]
async fn idle_clients_are_closed_after_the_timeout() {
    let config = RespConfig::default().with_timeout(Duration::from_secs(1));
    let s = start(config).await;
    let mut idle = s.raw().await;
    exchange(&mut idle, b"PING\r\n", b"+PONG\r\n").await;
    let mut busy = s.raw().await;
    // The busy client talks every 200 ms for 2.4 s, well past the timeout: it stays.
    for _ in 0..12 {
        exchange(&mut busy, b"PING\r\n", b"+PONG\r\n").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The idle one was closed meanwhile.
    assert!(read_to_close(&mut idle).await.is_empty());
    let mut c = client_at(&s.url()).await;
    let info: String = q(&mut c, &[b"INFO", b"stats"]).await;
    assert_eq!(info_field(&info, "dice_idle_timeouts"), "1");

    // With the default (0) nobody is closed for being idle.
    let s = start(RespConfig::default()).await;
    let mut idle = s.raw().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    exchange(&mut idle, b"PING\r\n", b"+PONG\r\n").await;
}

#[tokio::test]
async fn partial_requests_share_a_global_budget() {
    let config = RespConfig::default().with_max_input_buffer_total(1024 * 1024);
    let s = start(config).await;
    let value = vec![b'v'; 1_000_000];
    let head = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000\r\n";
    // The first client holds 700 KB of a request: within the budget.
    let mut first = s.raw().await;
    first.write_all(head).await.unwrap();
    first.write_all(&value[..700_000]).await.unwrap();
    let mut c = client_at(&s.url()).await;
    common::eventually(|| {
        let mut c = c.clone();
        async move {
            let info: String = q(&mut c, &[b"INFO", b"stats"]).await;
            info_field(&info, "dice_input_buffered_bytes")
                .parse::<usize>()
                .unwrap()
                > 500_000
        }
    })
    .await;
    // What the first client's buffer counts once all 700 KB are in (its capacity: more than
    // the bytes).
    let buffered = |mut c: redis::aio::MultiplexedConnection| async move {
        let info: String = q(&mut c, &[b"INFO", b"stats"]).await;
        info_field(&info, "dice_input_buffered_bytes")
            .parse::<usize>()
            .unwrap()
    };
    let mut held = buffered(c.clone()).await;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let now = buffered(c.clone()).await;
        if now == held {
            break;
        }
        held = now;
    }
    // A second one would take the total past 1 MiB: refused with a clear error, closed.
    let mut second = s.raw().await;
    second.write_all(head).await.unwrap();
    let _ = second.write_all(&value[..700_000]).await;
    let got = String::from_utf8(read_to_close(&mut second).await).unwrap();
    assert!(
        got.starts_with("-ERR client input buffers would pass the server's budget of 1048576"),
        "{got}"
    );
    // The refused client's bytes are given back (its task may still be ending when the
    // client sees the close: under load the first client's last 300 KB then found the
    // budget still taken and were refused).
    common::eventually(|| {
        let c = c.clone();
        async move { buffered(c).await <= held }
    })
    .await;
    // The first client finishes its request and is served; small clients are served.
    first.write_all(&value[700_000..]).await.unwrap();
    first.write_all(b"\r\n").await.unwrap();
    exchange(&mut first, b"", b"+OK\r\n").await;
    assert_eq!(q::<Vec<u8>>(&mut c, &[b"GET", b"k"]).await, value);
    let info: String = q(&mut c, &[b"INFO", b"stats"]).await;
    assert_eq!(info_field(&info, "dice_input_budget_refusals"), "1");
    // Everything given back once the buffers drain.
    drop(first);
    common::eventually(|| {
        let mut c = c.clone();
        async move {
            let info: String = q(&mut c, &[b"INFO", b"stats"]).await;
            info_field(&info, "dice_input_buffered_bytes") == "0"
        }
    })
    .await;
}

#[tokio::test]
async fn large_replies_are_streamed_whole_and_in_order() {
    let s = start(RespConfig::default()).await;
    let mut c = s.client().await;
    // MGET across many flushes: values of distinct sizes, in the order asked, with misses.
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for i in 0..40usize {
        let key = format!("k{i}").into_bytes();
        let value = vec![b'a' + (i % 26) as u8; 10_000 + i * 1_000];
        let () = q(&mut c, &[b"SET", &key, &value]).await;
        keys.push(key);
    }
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    for round in 0..5 {
        for (i, k) in keys.iter().enumerate() {
            args.push(k);
            if (i + round) % 7 == 0 {
                args.push(b"missing");
            }
        }
    }
    let got: Vec<Option<Vec<u8>>> = q(&mut c, &args).await;
    assert_eq!(got.len(), args.len() - 1);
    for (arg, value) in args[1..].iter().zip(&got) {
        match value {
            None => assert_eq!(*arg, b"missing"),
            Some(v) => {
                let i: usize = std::str::from_utf8(&arg[1..]).unwrap().parse().unwrap();
                assert_eq!(v.len(), 10_000 + i * 1_000);
                assert!(v.iter().all(|&b| b == b'a' + (i % 26) as u8));
            }
        }
    }
    // KEYS and SCAN with replies far past the flush size.
    let mut args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
    for i in 0..5_000 {
        args.push(format!("many:{i:040}").into_bytes());
        args.push(b"v".to_vec());
    }
    let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    let () = q(&mut c, &refs).await;
    let mut all: Vec<String> = q(&mut c, &[b"KEYS", b"many:*"]).await;
    all.sort();
    let expected: Vec<String> = (0..5_000).map(|i| format!("many:{i:040}")).collect();
    assert_eq!(all, expected);
    let (next, page): (String, Vec<String>) = q(
        &mut c,
        &[b"SCAN", b"0", b"MATCH", b"many:*", b"COUNT", b"100000"],
    )
    .await;
    assert_eq!(next, "0");
    assert_eq!(page.len(), 5_000);
}

#[tokio::test]
async fn clients_that_do_not_read_are_disconnected() {
    let config = RespConfig::default().with_output_stall_timeout(Duration::from_secs(1));
    let s = start(config).await;
    let mut c = s.client().await;
    let big = vec![b'x'; 1024 * 1024];
    let () = q(&mut c, &[b"SET", b"big", &big]).await;
    // 64 MiB of replies, far past what the kernel's socket buffers hold, never read.
    let mut stalled = s.raw().await;
    stalled.write_all(&mget_request("big", 64)).await.unwrap();
    common::eventually(|| {
        let mut c = c.clone();
        async move {
            let info: String = q(&mut c, &[b"INFO", b"stats"]).await;
            info_field(&info, "dice_output_stall_disconnects") == "1"
        }
    })
    .await;
    // The server gave up on it: what it can still read ends well short of 64 MiB.
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match bounded(stalled.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    assert!(total < 64 * 1024 * 1024, "read {total} bytes");
    // Others are served all along.
    assert_eq!(q::<Vec<u8>>(&mut c, &[b"GET", b"big"]).await, big);
}
