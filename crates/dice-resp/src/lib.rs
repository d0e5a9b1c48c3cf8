//! dice-resp: a dice [`Cache`](dice_core::Cache) served over the Redis protocol (RESP2, and
//! RESP3 after `HELLO 3`), so `redis-cli`, `redis-benchmark` and every language's Redis
//! client work against dice, with their default settings.
//!
//! # A tour of the modules
//!
//! * [`frame`]: RESP on the wire, sans-IO: the request parser (arrays of bulk strings and
//!   inline commands, every size bounded, an `Incomplete` answer when more bytes are needed)
//!   and the reply encoders, each RESP3 kind with its RESP2 form ([`frame::Protocol`]).
//! * `cmd` (private): the command table and one module per family (connection, admin,
//!   transaction, strings, keyspace, info, docs): arguments checked and errors worded as
//!   Redis words them. Commands on keys run against a `Db`: the replica under the read lock,
//!   or a [`dice_core::Transaction`] under the write lock.
//! * [`glob`]: Redis's glob patterns, for `KEYS` and `SCAN ... MATCH`.
//! * [`server`]: [`RespServer`] and [`serve`]: the accept loop with its connection limit and
//!   graceful shutdown, and the connection that answers a pipeline and streams its replies
//!   (sent whenever the buffer passes 64 KiB, waiting for the socket).
//! * [`cluster`]: [`ClusterInfo`], how a dice-net node fills the `INFO cluster` section.
//! * [`pubsub`]: the hub of channels and patterns, [`PubSubBus`] (how `PUBLISH` reaches the
//!   other nodes) and [`PubSubHandle`] (how their messages reach this node's subscribers).
//! * `tracking` (private): client-side caching: who may hold which key, and the task that
//!   turns the cache's changes (local, replicated, expiries) into invalidations.
//!
//! # Commands
//!
//! * **Connection**: `PING`, `ECHO`, `QUIT`, `RESET`, `AUTH`, `HELLO [2|3] [AUTH user pass] [SETNAME
//!   name]`, `SELECT 0`, `CLIENT ID|GETNAME|SETNAME|SETINFO|LIST|INFO|KILL|NO-EVICT|NO-TOUCH|
//!   HELP` (`KILL` in its address form and its filter form: `ID`, `ADDR`, `LADDR`, `USER`,
//!   `TYPE`, `MAXAGE`, `SKIPME`; only the targeted connections close), `CLIENT PAUSE
//!   timeout [WRITE|ALL]|UNPAUSE` (paused commands wait, as in Redis; replicated writes
//!   keep applying).
//! * **Client-side caching**: `CLIENT TRACKING ON|OFF [REDIRECT id] [PREFIX p ...] [BCAST]
//!   [OPTIN] [OPTOUT] [NOLOOP]`, `CLIENT CACHING YES|NO`, `CLIENT GETREDIR`, `CLIENT
//!   TRACKINGINFO`: RESP3 `invalidate` pushes, or messages on `__redis__:invalidate` for a
//!   RESP2 redirect target, for every change this node applies: its clients' writes, the
//!   writes replicated from other nodes (so a near cache is invalidated by a write made
//!   anywhere, once it arrived here), expiries; a null invalidation on `FLUSHALL`.
//! * **Server**: `COMMAND [COUNT|INFO|LIST|DOCS]` (docs with arguments for every command, so
//!   `redis-cli` shows hints), `INFO [server|clients|memory|persistence|stats|keyspace|
//!   cluster]`, `CONFIG GET|SET|RESETSTAT|REWRITE|HELP`, `TIME`, `SHUTDOWN`, `DBSIZE`,
//!   `FLUSHALL`, `FLUSHDB`.
//! * **Pub/sub**: `SUBSCRIBE`, `PSUBSCRIBE`, `UNSUBSCRIBE`, `PUNSUBSCRIBE`, `PUBLISH`,
//!   `PUBSUB CHANNELS|NUMSUB|NUMPAT|HELP`. A message published on any node reaches the
//!   subscribers of every node that the [`PubSubBus`] reaches; delivery is fire-and-forget
//!   as in Redis (at most once, best effort, no order across publishers, lost during a
//!   partition), and `PUBLISH` answers the number of subscribers of *this* node that
//!   received it, as Redis Cluster does. See [`pubsub`].
//! * **Transactions**: `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`.
//! * **Strings**: `GET`, `SET` (`EX`, `PX`, `EXAT`, `PXAT`, `NX`, `XX`, `KEEPTTL`, `GET`),
//!   `SETEX`, `PSETEX`, `SETNX`, `GETSET`, `GETDEL`, `GETEX` (`EX`, `PX`, `EXAT`, `PXAT`,
//!   `PERSIST`), `GETRANGE`, `SUBSTR`, `SETRANGE`, `APPEND`, `STRLEN`, `MGET`, `MSET`,
//!   `MSETNX`.
//! * **Keys**: `DEL`, `UNLINK`, `EXISTS`, `TOUCH`, `TYPE`, `RENAME`, `RENAMENX`, `COPY`,
//!   `RANDOMKEY`, `OBJECT ENCODING|FREQ|IDLETIME|REFCOUNT|HELP`, `MEMORY USAGE|HELP`,
//!   `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT` (with `NX`, `XX`, `GT`, `LT`),
//!   `EXPIRETIME`, `PEXPIRETIME`, `TTL`, `PTTL`, `PERSIST`, `KEYS`, `SCAN` (`MATCH`, `COUNT`,
//!   `TYPE`).
//! * **Counters**: `INCR`, `INCRBY`, `DECR`, `DECRBY`, `INCRBYFLOAT`.
//! * **Hashes**: `HSET`, `HMSET`, `HSETNX`, `HGET`, `HMGET`, `HDEL`, `HGETALL`, `HKEYS`,
//!   `HVALS`, `HLEN`, `HEXISTS`, `HSTRLEN`, `HINCRBY`, `HINCRBYFLOAT`, `HRANDFIELD`, `HSCAN`;
//!   `WRONGTYPE` between strings and hashes as in Redis.
//!
//! Anything else gets Redis's unknown-command error. Values are binary-safe bytes.
//!
//! # RESP2 and RESP3
//!
//! A connection speaks RESP2 until `HELLO 3` (what redis-py 8, Jedis, Lettuce, go-redis and
//! StackExchange.Redis send first), and RESP2 again after `HELLO 2`; a `HELLO` that fails
//! (wrong password, bad option) changes nothing. Every reply follows the connection's
//! protocol, with the types Redis 7.4 uses: in RESP3 a missing value (`GET`, `MGET`
//! elements, `SET ... NX|GET`, `GETDEL`, `CLIENT GETNAME`, `COMMAND INFO` of an unknown
//! command, an `EXEC` aborted by `WATCH`, `RANDOMKEY` of an empty node) is `_` instead of
//! `$-1`/`*-1`; `HELLO` answers a map (`%7`) instead of a flat array; `INFO`, `CLIENT LIST`
//! and `CLIENT INFO` a verbatim string (`=...txt:`) instead of a bulk string; `COMMAND
//! DOCS` and `CONFIG GET` a map; `COMMAND`'s flags, ACL categories and tips are sets (`~`). Integers, simple strings,
//! bulk strings, arrays and errors are the same in both. Pub/sub confirmations and messages
//! are pushes (`>`) in RESP3 and arrays in RESP2, where a connection with subscriptions
//! takes only `(P)SUBSCRIBE`, `(P)UNSUBSCRIBE`, `PING`, `QUIT` and `RESET`. [`frame`] also
//! has the RESP3 kinds no command needs yet (doubles, booleans, big numbers).
//!
//! # What a replicated cache changes
//!
//! dice is eventually consistent: every node takes writes and the last writer wins. So:
//!
//! * **Read-modify-writes are atomic on the node, last-writer-wins across nodes.** Every
//!   command runs under the cache's lock (a [`dice_core::Cache::transact`] for those that
//!   write), so `SET NX`, `GETSET`, `APPEND`, `SETRANGE`, `RENAME`, `MSET`, `EXPIRE GT` ...
//!   read and write with no other command between. Their conditions are decided on this
//!   node's view: two clients on two nodes may both see `SET NX` succeed, or both append to
//!   the same old value, and the later write wins everywhere. Do not build locks on them.
//!   Counters are refused rather than built the same way, which would lose concurrent
//!   increments.
//! * **Transactions are atomic and isolated on the node that runs them.** `EXEC` runs its
//!   queue under one hold of the write lock (no other client's command, no peer's change in
//!   between) and its writes go into one group commit. Other nodes receive them as ordinary
//!   replicated writes, key by key, possibly interleaved with their own concurrent writes
//!   (last writer wins per key). `WATCH` sees what has reached this node: `EXEC` aborts if a
//!   watched key's version changed (a local write or a peer's that arrived) or it expired;
//!   versions are unique, so the check is exact.
//! * **A change of expiry is a new write** of the same value with the new expiry (`EXPIRE`,
//!   `PERSIST`, `SET KEEPTTL`): it replicates like any write, and competes with other writes
//!   of the key by version. An expiry that is not in the future deletes the key.
//! * **Deletes are tombstones.** `DEL`, `UNLINK` and `GETDEL` write one even when the key is
//!   absent here, so a delete also beats older writes still on their way; `FLUSHALL`
//!   writes one per live key, so the flush reaches every node.
//! * **Writes are acknowledged after their group commit**, but a pipeline waits once for
//!   all of its writes, not once per write. Reads see every write in memory, this batch's
//!   included, committed or not.
//! * **`MSET`, `DEL` of many keys, `RENAME` are atomic on this node**, not across nodes;
//!   `FLUSHALL` writes its tombstones a batch at a time.
//!
//! # Differences from Redis
//!
//! One database (`SELECT 0` only), strings and hashes only (no lists, sets...), one user
//! (`default`), no scripts or sharded pub/sub; an invalidation for a write made on another
//! node comes once that write is replicated here; `CLIENT PAUSE` pauses this node's
//! clients only; keyspace
//! notifications (`CONFIG SET notify-keyspace-events`) fire `set`, `expire` and `del` for
//! every change this node applies, its own writes and replicated ones, and `evicted` for
//! its own evictions (another node's eviction arrives as a removal: `del`; the README tells
//! more); counters are
//! refused (above). `OBJECT IDLETIME` is the time since the last write (dice tracks no
//! reads); `OBJECT FREQ` reads the LFU counter of the key's slot in the eviction access
//! table (keys sharing a slot share it); `RANDOMKEY` walks the map (O(n)). `CONFIG GET` never shows `requirepass`, and
//! `CONFIG SET` changes only `timeout` and `notify-keyspace-events` at run time.
//! `SHUTDOWN` asks the owner of the server to stop (see [`RespHandle::shutdown_requested`]); `dice node` stops as on SIGTERM. Keys
//! cannot be empty and are bounded like values (the cache's limits; past them the reply is
//! the cache's error, such as `-ERR value of 2000000 bytes exceeds the limit of 1048576
//! bytes`). `*-1` and other negative array counts are protocol errors (Redis ignores them).
//! `SCAN`'s cursor is a position in the order of a 64-bit hash of the keys; each call walks
//! the whole map, so on a large map a page holds at least 1/64 of it (`COUNT` is a hint in
//! Redis too). For clients that pick features by version, `HELLO` answers `server: redis`,
//! `version: 7.4.0` (the Redis whose replies dice follows; redis-py 8 turns its client-side
//! cache on for 7.4 and later, and dice has the `CLIENT TRACKING` it needs) and `INFO` says
//! `redis_version:7.4.0`, with `dice_version` and `dice_node_id` beside it. `CLIENT SETINFO`
//! is kept for `CLIENT LIST`; `FLUSHDB` is `FLUSHALL`. A client that breaks the protocol
//! gets Redis's `-ERR Protocol error: ...` and is disconnected; before it authenticates, a
//! client may send at most 10 arguments and 16 KiB per argument, as in Redis.
//!
//! # Limits: what one client can take
//!
//! Every input is bounded, and so is every reply's footprint (see [`RespConfig`] for the
//! fields and defaults):
//!
//! * **A request**: `max_bulk_len` per argument (the cache's value limit plus 4 KiB),
//!   `max_args` arguments, `max_inline_len` for an inline line, `max_request_len` (128 MiB)
//!   buffered for one request; before `AUTH`, 10 arguments and 16 KiB per argument.
//! * **Input buffers of all clients together**: `max_input_buffer_total` (1 GiB). Each
//!   client's first [`server::INPUT_ALLOWANCE`] (64 KiB) is not counted, so small requests
//!   are always served; a client whose partial request would take the total past the budget
//!   gets `-ERR client input buffers would pass the server's budget ...` and is
//!   disconnected (logged, counted as `dice_input_budget_refusals` in `INFO stats`).
//! * **Output**: replies are streamed. A connection sends what it has buffered once it
//!   passes [`server::OUTPUT_FLUSH_AT`] (64 KiB) and waits for the socket before it answers
//!   more, and multi-element replies (`MGET`, `KEYS`, `SCAN`) are written element by
//!   element: `MGET` reads at most 64 keys per hold of the cache's read lock, and the lock
//!   is never held while waiting for a client. So a connection holds at most 64 KiB plus one
//!   value of replies, whatever it asks (`MGET big big big ...` included), and a slow reader
//!   slows only itself. A client whose pending replies make no way onto the socket for
//!   `output_stall_timeout` (60 s) is disconnected (logged, `dice_output_stall_disconnects`):
//!   this plays the part of Redis's `client-output-buffer-limit` hard limit, which a
//!   connection here cannot reach since it stops producing instead. `KEYS` and `SCAN` still
//!   walk the whole map under the read lock once per call (keys only, no values copied) and
//!   keep the matching keys until they are sent.
//! * **Transactions**: the commands queued by one `MULTI` take at most `max_request_len`
//!   together (past it, that command's error and `EXECABORT`), and so do the keys one
//!   connection watches. `EXEC` holds the lock, so its replies are not streamed: they are
//!   bounded by `max_exec_reply` (64 MiB); a command that would pass it answers an error
//!   and does not run (a write checks before it writes).
//! * **Client tracking**: the table of keys clients read, `tracking_table_max_keys`
//!   (1 000 000) and `tracking_table_max_bytes` (256 MiB), its oldest keys evicted with an
//!   invalidation; `max_tracking_prefixes_per_client` (1 000) and
//!   `max_tracking_prefixes_total` (100 000) `BCAST` prefixes; each connection's queue of
//!   invalidations, `pubsub_output_limit` (disconnected past it).
//! * **Pub/sub**: `max_subscriptions_per_client` (10 000) channels plus patterns per
//!   connection, `max_subscriptions_total` (1 000 000) for all, `max_channel_len` (4 KiB)
//!   per channel name or pattern, and `pubsub_output_limit` (32 MiB) of messages queued for
//!   one subscriber: one that does not read is disconnected past it
//!   (`dice_pubsub_output_disconnects`), like Redis's pubsub output-buffer limit.
//! * **Idle clients**: `timeout` (zero by default: never, as in Redis) closes a client that
//!   sent nothing for that long (`dice_idle_timeouts`).
//! * **Failed `AUTH`s**: counted (`dice_auth_failures`), logged at most once a second with
//!   the count since the last warning and a peer address, and the third failure on a
//!   connection closes it after its `WRONGPASS` reply (`dice_auth_disconnects`).
//!
//! # Serving a cache
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let cache = dice_core::Cache::open(dir.path()).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let config = dice_resp::RespConfig::default().with_requirepass(Some("s3cret".into()));
//! let server = dice_resp::RespServer::new(listener, cache, config).spawn()?;
//!
//! let url = format!("redis://:s3cret@{}/", server.local_addr());
//! let mut con = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
//! let () = redis::cmd("SET").arg("elixir").arg("awesome sauce").query_async(&mut con).await?;
//! let v: String = redis::cmd("GET").arg("elixir").query_async(&mut con).await?;
//! assert_eq!(v, "awesome sauce");
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

mod client;
pub mod cluster;
mod cmd;
mod config;
pub mod frame;
pub mod glob;
pub mod pubsub;
mod registry;
pub mod server;
mod state;
mod tracking;
mod wire;

pub use cluster::ClusterInfo;
pub use frame::{FrameError, FrameLimits};
pub use pubsub::{PubSubBus, PubSubHandle};
pub use server::{AllocatorStats, CommandObserver, RespConfig, RespHandle, RespServer, serve};
