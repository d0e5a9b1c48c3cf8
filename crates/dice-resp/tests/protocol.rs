//! Raw bytes over TCP: inline commands, exact reply formats, malformed input, the client
//! limit and shutdown. Whatever a client sends, the server answers with an error or closes
//! the connection, and keeps serving the next client.
#![allow(clippy::unwrap_used)]

mod common;

use common::{bounded, eventually, exchange, read_to_close, start, start_default};
use dice_resp::RespConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn inline_commands() {
    let s = start_default().await;
    let mut raw = s.raw().await;
    exchange(&mut raw, b"PING\r\n", b"+PONG\r\n").await;
    exchange(&mut raw, b"ping\n", b"+PONG\r\n").await;
    exchange(&mut raw, b"SET k \"a b\\r\\n\"\r\n", b"+OK\r\n").await;
    exchange(&mut raw, b"GET k\r\n", b"$5\r\na b\r\n\r\n").await;
    exchange(
        &mut raw,
        b"SET 'it''s' v\r\n",
        b"-ERR Protocol error: unbalanced quotes in request\r\n",
    )
    .await;
    assert!(
        read_to_close(&mut raw).await.is_empty(),
        "closed after a protocol error"
    );

    let mut raw = s.raw().await;
    // Empty lines are ignored; several commands in one write get their replies in order.
    exchange(
        &mut raw,
        b"\r\n   \r\nEXISTS k k missing\r\nECHO \"\\x41\\x42\"\r\nPING hello\r\n",
        b":2\r\n$2\r\nAB\r\n$5\r\nhello\r\n",
    )
    .await;
    exchange(
        &mut raw,
        b"FOO a b\r\n",
        b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n",
    )
    .await;
    exchange(
        &mut raw,
        b"nosuch\r\n",
        b"-ERR unknown command 'nosuch', with args beginning with: \r\n",
    )
    .await;
    exchange(
        &mut raw,
        b"GET\r\n",
        b"-ERR wrong number of arguments for 'get' command\r\n",
    )
    .await;
    exchange(
        &mut raw,
        b"TTL k\r\nDBSIZE\r\nSELECT 0\r\n",
        b":-1\r\n:1\r\n+OK\r\n",
    )
    .await;
    exchange(&mut raw, b"SET n 1 NX\r\nSET n 2 NX\r\n", b"+OK\r\n$-1\r\n").await;
    exchange(&mut raw, b"MGET n nope\r\n", b"*2\r\n$1\r\n1\r\n$-1\r\n").await;
    exchange(
        &mut raw,
        b"SCAN 0 MATCH nope*\r\n",
        b"*2\r\n$1\r\n0\r\n*0\r\n",
    )
    .await;
    // QUIT answers, then closes; what follows it is not run.
    exchange(&mut raw, b"QUIT\r\nSET after quit\r\n", b"+OK\r\n").await;
    assert!(read_to_close(&mut raw).await.is_empty());
    assert_eq!(s.cache.get(b"after"), None);
}

#[tokio::test]
async fn requests_split_across_writes() {
    let s = start_default().await;
    let mut raw = s.raw().await;
    let request = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\n";
    for chunk in request.chunks(3) {
        raw.write_all(chunk).await.unwrap();
        raw.flush().await.unwrap();
        tokio::task::yield_now().await;
    }
    exchange(&mut raw, b"", b"+OK\r\n").await;
    exchange(
        &mut raw,
        b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n",
        b"$5\r\nva\r\nl\r\n",
    )
    .await;
    // A large value arriving in pieces.
    let value = vec![7u8; 300_000];
    let mut req = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n", value.len()).into_bytes();
    req.extend_from_slice(&value);
    req.extend_from_slice(b"\r\n");
    for chunk in req.chunks(65_000) {
        raw.write_all(chunk).await.unwrap();
    }
    exchange(&mut raw, b"", b"+OK\r\n").await;
    assert_eq!(s.cache.get(b"big").unwrap().len(), value.len());
}

/// Sends `input` on a fresh connection, ends the stream, and returns everything received
/// until the server closes it.
async fn send_and_drain(addr: std::net::SocketAddr, input: &[u8]) -> Vec<u8> {
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(input).await.unwrap();
    raw.shutdown().await.unwrap();
    read_to_close(&mut raw).await
}

#[tokio::test]
async fn malformed_input_gets_an_error_and_a_close() {
    let s = start_default().await;
    let addr = s.handle.local_addr();
    let mut huge_inline = vec![b'a'; 70 * 1024];
    huge_inline.push(b'\n');
    let mut huge_header = b"*1\r\n$".to_vec();
    huge_header.extend(std::iter::repeat_n(b'9', 70 * 1024));
    let cases: Vec<(&[u8], &[u8])> = vec![
        (
            b"*-5\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*abc\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$abc\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$-3\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*2\r\n$3\r\nGET\r\n$99999999999\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*99999999999\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*2\r\n$3\r\nGET\r\n:1\r\n",
            b"-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"*1\r\n$3\r\nGETT\r\n",
            b"-ERR Protocol error: bulk string not terminated by CRLF\r\n",
        ),
        (
            &huge_inline,
            b"-ERR Protocol error: too big inline request\r\n",
        ),
        (
            &huge_header,
            b"-ERR Protocol error: too big bulk count string\r\n",
        ),
        // Commands before the bad frame are answered first.
        (
            b"PING\r\n*1\r\n$1\r\nx\r\n*-1\r\n",
            b"+PONG\r\n-ERR unknown command 'x', with args beginning with: \r\n\
              -ERR Protocol error: invalid multibulk length\r\n",
        ),
    ];
    for (input, expected) in cases {
        let got = send_and_drain(addr, input).await;
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected),
            "input {:?}",
            String::from_utf8_lossy(&input[..input.len().min(40)])
        );
    }
    // Binary garbage: an error or a close, never a crash.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let got = send_and_drain(addr, &garbage).await;
    assert!(
        got.is_empty() || got.starts_with(b"-ERR"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    // The server still serves.
    let mut raw = s.raw().await;
    exchange(&mut raw, b"PING\r\n", b"+PONG\r\n").await;
}

#[tokio::test]
async fn truncated_frames_then_close() {
    let s = start_default().await;
    for partial in [
        &b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nval"[..],
        b"*3\r\n$3\r\nSET\r\n$1\r\nk",
        b"*3\r\n",
        b"*",
        b"SET k v",
        b"*1\r\n$100000\r\n",
    ] {
        let mut raw = s.raw().await;
        raw.write_all(partial).await.unwrap();
        raw.shutdown().await.unwrap(); // half-close: the server sees the end of the stream
        assert!(read_to_close(&mut raw).await.is_empty());
    }
    // Nothing half-sent was run, and the next client is served.
    let mut raw = s.raw().await;
    exchange(&mut raw, b"EXISTS k\r\n", b":0\r\n").await;
}

#[tokio::test]
async fn request_size_bounds() {
    let config = RespConfig::default()
        .with_max_bulk_len(Some(1000))
        .with_max_args(4)
        .with_max_inline_len(100)
        .with_max_request_len(2500);
    let s = start(config).await;
    let addr = s.handle.local_addr();
    assert_eq!(
        send_and_drain(addr, b"*5\r\n").await,
        b"-ERR Protocol error: invalid multibulk length\r\n"
    );
    assert_eq!(
        send_and_drain(addr, b"*2\r\n$3\r\nGET\r\n$1001\r\n").await,
        b"-ERR Protocol error: invalid bulk length\r\n"
    );
    // Three bulks of 1000 would pass the bulk bound but not the request bound.
    let mut req = b"*4\r\n$4\r\nMSET\r\n$1000\r\n".to_vec();
    req.extend(vec![b'k'; 1000]);
    req.extend_from_slice(b"\r\n$1000\r\n");
    req.extend(vec![b'v'; 1000]);
    req.extend_from_slice(b"\r\n$1000\r\n");
    let got = send_and_drain(addr, &req).await;
    assert!(
        got.starts_with(b"-ERR Protocol error: request of "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let long_line = [vec![b'x'; 101], b"\r\n".to_vec()].concat();
    assert_eq!(
        send_and_drain(addr, &long_line).await,
        b"-ERR Protocol error: too big inline request\r\n"
    );
    let mut raw = s.raw().await;
    exchange(&mut raw, b"SET k v\r\n", b"+OK\r\n").await;
}

#[tokio::test]
async fn client_limit() {
    let config = RespConfig::default().with_max_clients(1);
    let s = start(config).await;
    let mut first = s.raw().await;
    exchange(&mut first, b"PING\r\n", b"+PONG\r\n").await;
    let mut second = s.raw().await;
    assert_eq!(
        read_to_close(&mut second).await,
        b"-ERR max number of clients reached\r\n"
    );
    drop(first);
    // Once the first client is gone, a new one is served.
    let addr = s.handle.local_addr();
    eventually(|| async move {
        let mut raw = TcpStream::connect(addr).await.unwrap();
        raw.write_all(b"PING\r\n").await.unwrap();
        read_some(&mut raw).await.starts_with(b"+PONG")
    })
    .await;
}

async fn read_some(stream: &mut TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0; 256];
    match bounded(stream.read(&mut buf)).await {
        Ok(n) => buf[..n].to_vec(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn graceful_shutdown() {
    let s = start_default().await;
    let addr = s.handle.local_addr();
    let mut idle = s.raw().await;
    exchange(&mut idle, b"SET k v\r\n", b"+OK\r\n").await;
    bounded(s.handle.shutdown()).await.unwrap();
    // Idle clients are disconnected, and nobody new is accepted.
    assert!(read_to_close(&mut idle).await.is_empty());
    assert!(TcpStream::connect(addr).await.is_err());
    // What was acknowledged is in the cache.
    assert_eq!(s.cache.get(b"k").as_deref(), Some(&b"v"[..]));
}
