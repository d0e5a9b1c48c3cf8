//! `requirepass`: AUTH, HELLO AUTH, and what an unauthenticated client may do.
#![allow(clippy::unwrap_used)]

mod common;

use common::{bounded, client_at, err, exchange, q, read_to_close, start, start_default};
use dice_resp::RespConfig;
use redis::Value;

fn with_password() -> RespConfig {
    RespConfig::default().with_requirepass(Some("s3cret".into()))
}

#[tokio::test]
async fn commands_wait_for_auth() {
    let s = start(with_password()).await;
    let mut c = s.client().await; // no password in the URL
    assert_eq!(
        err(&mut c, &[b"GET", b"k"]).await,
        "NOAUTH Authentication required."
    );
    assert_eq!(
        err(&mut c, &[b"PING"]).await,
        "NOAUTH Authentication required."
    );
    assert_eq!(
        err(&mut c, &[b"SET", b"k", b"v"]).await,
        "NOAUTH Authentication required."
    );
    // Unknown commands and wrong arities are reported first, as in Redis.
    let e = err(&mut c, &[b"FOO"]).await;
    assert!(e.starts_with("ERR unknown command 'FOO'"), "{e}");
    assert_eq!(
        err(&mut c, &[b"AUTH", b"wrong"]).await,
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(
        err(&mut c, &[b"AUTH", b"other", b"s3cret"]).await,
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    // Two failures so far; a third would close the connection (see auth_failures_close).
    let mut c = s.client().await;
    assert_eq!(
        err(&mut c, &[b"AUTH", b"a", b"b", b"c"]).await,
        "ERR syntax error"
    );
    assert_eq!(
        err(&mut c, &[b"AUTH"]).await,
        "ERR wrong number of arguments for 'auth' command"
    );
    assert_eq!(
        err(&mut c, &[b"HELLO", b"2"]).await,
        "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
         HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
         select the RESP protocol version at the same time"
    );
    assert_eq!(
        err(&mut c, &[b"HELLO", b"2", b"AUTH", b"default", b"nope"]).await,
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(q::<Value>(&mut c, &[b"AUTH", b"s3cret"]).await, Value::Okay);
    assert_eq!(q::<Value>(&mut c, &[b"SET", b"k", b"v"]).await, Value::Okay);
    assert_eq!(q::<String>(&mut c, &[b"GET", b"k"]).await, "v");
    assert_eq!(
        q::<Value>(&mut c, &[b"AUTH", b"default", b"s3cret"]).await,
        Value::Okay
    );

    // HELLO with AUTH logs in in one step.
    let mut c2 = s.client().await;
    let hello: Vec<Value> = q(
        &mut c2,
        &[
            b"HELLO", b"2", b"AUTH", b"default", b"s3cret", b"SETNAME", b"h",
        ],
    )
    .await;
    assert_eq!(hello.len(), 14);
    assert_eq!(q::<String>(&mut c2, &[b"GET", b"k"]).await, "v");
    assert_eq!(q::<String>(&mut c2, &[b"CLIENT", b"GETNAME"]).await, "h");
}

#[tokio::test]
async fn clients_log_in_from_the_url() {
    let s = start(with_password()).await;
    let addr = s.handle.local_addr();
    let mut c = client_at(&format!("redis://:s3cret@{addr}/")).await;
    assert_eq!(q::<Value>(&mut c, &[b"SET", b"k", b"v"]).await, Value::Okay);
    let mut c = client_at(&format!("redis://default:s3cret@{addr}/")).await;
    assert_eq!(q::<String>(&mut c, &[b"GET", b"k"]).await, "v");
    let wrong = redis::Client::open(format!("redis://:nope@{addr}/")).unwrap();
    assert!(
        bounded(wrong.get_multiplexed_async_connection())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn unauthenticated_clients_are_held_to_small_requests() {
    let s = start(with_password()).await;
    // QUIT works before AUTH.
    let mut raw = s.raw().await;
    exchange(&mut raw, b"QUIT\r\n", b"+OK\r\n").await;
    assert!(read_to_close(&mut raw).await.is_empty());

    // A big bulk or many arguments before AUTH: refused at the header, connection closed.
    let mut raw = s.raw().await;
    use tokio::io::AsyncWriteExt;
    raw.write_all(b"*2\r\n$4\r\nAUTH\r\n$20000\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_to_close(&mut raw).await,
        b"-ERR Protocol error: unauthenticated bulk length\r\n"
    );
    let mut raw = s.raw().await;
    raw.write_all(b"*11\r\n").await.unwrap();
    assert_eq!(
        read_to_close(&mut raw).await,
        b"-ERR Protocol error: unauthenticated multibulk length\r\n"
    );

    // After AUTH the usual bounds apply.
    let mut raw = s.raw().await;
    exchange(&mut raw, b"AUTH s3cret\r\n", b"+OK\r\n").await;
    let value = vec![b'v'; 20_000];
    let mut req = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$20000\r\n".to_vec();
    req.extend_from_slice(&value);
    req.extend_from_slice(b"\r\n");
    exchange(&mut raw, &req, b"+OK\r\n").await;
}

#[tokio::test]
async fn auth_without_a_password() {
    let s = start_default().await;
    let mut c = s.client().await;
    assert_eq!(
        err(&mut c, &[b"AUTH", b"x"]).await,
        "ERR AUTH <password> called without any password configured for the default user. \
         Are you sure your configuration is correct?"
    );
    assert_eq!(
        q::<Value>(&mut c, &[b"AUTH", b"default", b"any"]).await,
        Value::Okay
    );
    assert_eq!(
        err(&mut c, &[b"AUTH", b"someone", b"any"]).await,
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(
        q::<Value>(&mut c, &[b"PING"]).await,
        Value::SimpleString("PONG".into())
    );
}
