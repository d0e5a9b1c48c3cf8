//! RESP3 after `HELLO 3`: the exact bytes of every reply kind dice sends, the switch back
//! with `HELLO 2`, and a RESP3 client library doing ordinary work.
#![allow(clippy::unwrap_used)]

mod common;

use common::{bounded, client_at, exchange, q, start, start_default};
use dice_resp::RespConfig;
use redis::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn hello_map(proto: u8, id: i64) -> Vec<u8> {
    let head = if proto == 3 { "%7" } else { "*14" };
    format!(
        "{head}\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.4.0\r\n\
         $5\r\nproto\r\n:{proto}\r\n$2\r\nid\r\n:{id}\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
         $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"
    )
    .into_bytes()
}

/// Reads one `CLIENT ID` reply (`:N\r\n`).
async fn client_id(raw: &mut tokio::net::TcpStream) -> i64 {
    raw.write_all(b"CLIENT ID\r\n").await.unwrap();
    let line = read_until(raw, b"\r\n").await;
    std::str::from_utf8(&line[1..line.len() - 2])
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn every_reply_kind_in_resp3() {
    let s = start_default().await;
    let mut raw = s.raw().await;
    let id = client_id(&mut raw).await;
    // Before HELLO 3: RESP2.
    exchange(&mut raw, b"GET nope\r\n", b"$-1\r\n").await;
    exchange(&mut raw, b"HELLO 3\r\n", &hello_map(3, id)).await;
    // Nulls.
    exchange(&mut raw, b"GET nope\r\n", b"_\r\n").await;
    exchange(&mut raw, b"SET k v\r\nSET k w NX\r\n", b"+OK\r\n_\r\n").await;
    exchange(&mut raw, b"SET fresh v GET\r\n", b"_\r\n").await;
    exchange(&mut raw, b"GETDEL nope\r\n", b"_\r\n").await;
    exchange(&mut raw, b"CLIENT GETNAME\r\n", b"_\r\n").await;
    exchange(
        &mut raw,
        b"MGET k nope fresh\r\n",
        b"*3\r\n$1\r\nv\r\n_\r\n$1\r\nv\r\n",
    )
    .await;
    // Integers, simple strings, bulk strings and errors are as in RESP2.
    exchange(&mut raw, b"EXISTS k nope k\r\n", b":2\r\n").await;
    exchange(&mut raw, b"TTL nope\r\nTTL k\r\n", b":-2\r\n:-1\r\n").await;
    exchange(&mut raw, b"PING\r\nECHO hi\r\n", b"+PONG\r\n$2\r\nhi\r\n").await;
    exchange(
        &mut raw,
        b"NOSUCH\r\n",
        b"-ERR unknown command 'NOSUCH', with args beginning with: \r\n",
    )
    .await;
    exchange(&mut raw, b"KEYS k\r\n", b"*1\r\n$1\r\nk\r\n").await;
    exchange(
        &mut raw,
        b"SCAN 0 MATCH k\r\n",
        b"*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n",
    )
    .await;
    // COMMAND: flags, ACL categories and tips are sets; unknown commands are null.
    exchange(
        &mut raw,
        b"COMMAND INFO get nosuch\r\n",
        b"*2\r\n*10\r\n$3\r\nget\r\n:2\r\n~2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n\
          ~0\r\n~0\r\n*0\r\n*0\r\n_\r\n",
    )
    .await;
    exchange(&mut raw, b"COMMAND DOCS nosuch\r\n", b"%0\r\n").await;
    exchange(
        &mut raw,
        b"COMMAND DOCS get\r\n",
        b"%1\r\n$3\r\nget\r\n%4\r\n$7\r\nsummary\r\n",
    )
    .await;
    let mut rest = Vec::new();
    while !rest.ends_with(b"key_spec_index\r\n:0\r\n") {
        let mut b = [0u8; 1];
        common::bounded(tokio::io::AsyncReadExt::read_exact(&mut raw, &mut b))
            .await
            .unwrap();
        rest.push(b[0]);
    }
    // INFO is a verbatim text string.
    exchange(&mut raw, b"INFO server\r\n", b"=").await;
    let mut head = [0u8; 64];
    bounded(raw.read_exact(&mut head)).await.unwrap();
    let head = String::from_utf8_lossy(&head);
    let (len, rest) = head.split_once("\r\n").unwrap();
    let len: usize = len.parse().unwrap();
    assert!(
        rest.starts_with("txt:# Server\r\nredis_version:7.4.0\r\ndice_version:"),
        "{rest}"
    );
    let mut tail = vec![0u8; len + 2 - rest.len()];
    bounded(raw.read_exact(&mut tail)).await.unwrap();
    assert!(
        tail.ends_with(b"\r\n\r\n"),
        "the text ends with a line, then CRLF"
    );

    // A failing HELLO changes nothing; HELLO 2 goes back; HELLO alone reports.
    exchange(
        &mut raw,
        b"HELLO 2 FOO\r\nGET nope\r\n",
        b"-ERR Syntax error in HELLO option 'FOO'\r\n_\r\n",
    )
    .await;
    exchange(
        &mut raw,
        b"HELLO 4\r\n",
        b"-NOPROTO unsupported protocol version\r\n",
    )
    .await;
    exchange(&mut raw, b"HELLO\r\n", &hello_map(3, id)).await;
    exchange(&mut raw, b"HELLO 2\r\n", &hello_map(2, id)).await;
    exchange(
        &mut raw,
        b"GET nope\r\nCOMMAND DOCS nosuch\r\n",
        b"$-1\r\n*0\r\n",
    )
    .await;
    exchange(&mut raw, b"COMMAND INFO nosuch\r\n", b"*1\r\n*-1\r\n").await;
}

#[tokio::test]
async fn hello_3_with_auth_and_setname() {
    let config = RespConfig::default().with_requirepass(Some("s3cret".into()));
    let s = start(config).await;
    let mut raw = s.raw().await;
    exchange(
        &mut raw,
        b"HELLO 3\r\n",
        b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the \
          HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
          select the RESP protocol version at the same time\r\n",
    )
    .await;
    exchange(
        &mut raw,
        b"HELLO 3 AUTH default wrong\r\nGET k\r\n",
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n\
          -NOAUTH Authentication required.\r\n",
    )
    .await;
    let mut raw = s.raw().await;
    raw.write_all(b"HELLO 3 AUTH default s3cret SETNAME app\r\n")
        .await
        .unwrap();
    let map = read_until(&mut raw, b"$7\r\nmodules\r\n*0\r\n").await;
    assert!(map.starts_with(b"%7\r\n$6\r\nserver\r\n"));
    exchange(
        &mut raw,
        b"CLIENT GETNAME\r\nGET nope\r\n",
        b"$3\r\napp\r\n_\r\n",
    )
    .await;
}

/// Reads until what was read ends with `end`.
async fn read_until(raw: &mut tokio::net::TcpStream, end: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(end) {
        bounded(raw.read_exact(&mut byte)).await.unwrap();
        got.push(byte[0]);
    }
    got
}

#[tokio::test]
async fn a_resp3_client_library_works() {
    let s = start_default().await;
    let mut c = client_at(&format!(
        "redis://{}/?protocol=resp3",
        s.handle.local_addr()
    ))
    .await;
    let () = q(&mut c, &[b"SET", b"k", b"v"]).await;
    assert_eq!(
        q::<Option<String>>(&mut c, &[b"GET", b"k"]).await,
        Some("v".into())
    );
    assert_eq!(q::<Value>(&mut c, &[b"GET", b"nope"]).await, Value::Nil);
    assert_eq!(
        q::<Vec<Option<String>>>(&mut c, &[b"MGET", b"k", b"nope"]).await,
        vec![Some("v".to_string()), None]
    );
    let info: String = q(&mut c, &[b"INFO", b"server"]).await;
    assert!(info.contains("redis_version:7.4.0"), "{info}");
    assert!(info.contains("dice_version:"), "{info}");
    let hello: Value = q(&mut c, &[b"HELLO", b"3"]).await;
    let Value::Map(fields) = hello else {
        panic!("HELLO 3 answers a map, got {hello:?}")
    };
    assert!(fields.contains(&(Value::BulkString(b"proto".to_vec()), Value::Int(3))));
    let docs: Value = q(&mut c, &[b"COMMAND", b"DOCS", b"get"]).await;
    let Value::Map(docs) = docs else {
        panic!("COMMAND DOCS answers a map in RESP3, got {docs:?}")
    };
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].0, Value::BulkString(b"get".to_vec()));
    assert!(matches!(docs[0].1, Value::Map(_)));
}
