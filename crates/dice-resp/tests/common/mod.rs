//! A dice cache in a temp dir served on 127.0.0.1:0, and helpers to talk to it.
#![allow(dead_code, clippy::unwrap_used)]

use dice_core::{Cache, CacheOptions, ManualClock};
use dice_resp::{RespConfig, RespHandle, RespServer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bounds every wait in the tests, so that a bug fails a test instead of hanging it. Tests
/// never assert on how long anything took.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct TestServer {
    pub cache: Cache,
    pub handle: RespHandle,
    pub dir: tempfile::TempDir,
}

pub async fn start(config: RespConfig) -> TestServer {
    start_with(config, CacheOptions::default()).await
}

/// A server whose cache reads the time from a [`ManualClock`]: tests of expiry move it
/// instead of sleeping.
pub async fn start_with_clock() -> (TestServer, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(dice_core::now_ms()));
    let options = CacheOptions::default().with_clock(clock.clone());
    (start_with(RespConfig::default(), options).await, clock)
}

pub async fn start_with(config: RespConfig, options: CacheOptions) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open_with(dir.path(), options).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = RespServer::new(listener, cache.clone(), config)
        .spawn()
        .unwrap();
    TestServer { cache, handle, dir }
}

pub async fn start_default() -> TestServer {
    start(RespConfig::default()).await
}

impl TestServer {
    pub fn url(&self) -> String {
        format!("redis://{}/", self.handle.local_addr())
    }

    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        client_at(&self.url()).await
    }

    pub async fn raw(&self) -> TcpStream {
        TcpStream::connect(self.handle.local_addr()).await.unwrap()
    }
}

pub async fn client_at(url: &str) -> redis::aio::MultiplexedConnection {
    bounded(
        redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection(),
    )
    .await
    .unwrap()
}

pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(PATIENCE, f)
        .await
        .expect("the server answered in time")
}

/// Runs a command and returns its reply.
pub async fn q<T: redis::FromRedisValue>(
    con: &mut redis::aio::MultiplexedConnection,
    args: &[&[u8]],
) -> T {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        cmd.arg(*a);
    }
    bounded(cmd.query_async(con))
        .await
        .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(args[0])))
}

/// Runs a command that must fail, and returns the error as `CODE detail`.
pub async fn err(con: &mut redis::aio::MultiplexedConnection, args: &[&[u8]]) -> String {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match bounded(cmd.query_async::<redis::Value>(con)).await {
        Ok(v) => panic!(
            "{:?} should fail, got {v:?}",
            String::from_utf8_lossy(args[0])
        ),
        Err(e) => error_text(&e),
    }
}

pub fn error_text(e: &redis::RedisError) -> String {
    format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or(""))
}

/// Polls `check` until it holds (bounded by [`PATIENCE`]).
pub async fn eventually<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    bounded(async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Sends `request` and reads exactly `expected.len()` bytes of reply.
pub async fn exchange(stream: &mut TcpStream, request: &[u8], expected: &[u8]) {
    stream.write_all(request).await.unwrap();
    let mut got = vec![0; expected.len()];
    bounded(stream.read_exact(&mut got)).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected),
        "reply to {:?}",
        String::from_utf8_lossy(request)
    );
}

/// Reads everything until the server closes the connection (or resets it).
pub async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match bounded(stream.read(&mut buf)).await {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}
