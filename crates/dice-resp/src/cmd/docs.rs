//! `COMMAND DOCS`: a summary, the version of Redis that introduced it, a group and the
//! arguments of every command dice answers, so that `redis-cli` shows hints as you type.
//!
//! Arguments are written in a small syntax, parsed when asked: words separated by spaces;
//! `key` a key; `name:type` an argument (`string`, `integer`, `double`, `pattern`,
//! `unix-time`); an uppercase word a pure token; `[ ... ]` an optional part; `a | b` inside
//! brackets a choice; `TOKEN name:type` inside brackets a token with its value; `...` after
//! an item repeats it.

use crate::frame::{
    Protocol, write_array_len, write_bulk, write_integer, write_map_len, write_set_len,
};

/// One command's documentation: name, summary, since, group, arguments.
type Doc = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

/// Every command's documentation, by name (subcommands as `container|sub`).
pub(crate) static DOCS: &[Doc] = &[
    (
        "append",
        "Appends a string to the value of a key. Creates the key if it doesn't exist.",
        "2.0.0",
        "string",
        "key value:string",
    ),
    (
        "auth",
        "Authenticates the connection.",
        "1.0.0",
        "connection",
        "[username:string] password:string",
    ),
    (
        "client",
        "A container for client connection commands.",
        "2.4.0",
        "connection",
        "",
    ),
    (
        "client|getname",
        "Returns the name of the connection.",
        "2.6.9",
        "connection",
        "",
    ),
    (
        "client|help",
        "Returns helpful text about the different subcommands.",
        "5.0.0",
        "connection",
        "",
    ),
    (
        "client|id",
        "Returns the unique client ID of the connection.",
        "5.0.0",
        "connection",
        "",
    ),
    (
        "client|info",
        "Returns information about the connection.",
        "6.2.0",
        "connection",
        "",
    ),
    (
        "client|kill",
        "Terminates open connections.",
        "2.4.0",
        "connection",
        "[ID client-id:integer] [ADDR ip:port:string] [LADDR ip:port:string] [USER username:string] [TYPE type:string] [SKIPME yes/no:string] [MAXAGE maxage:integer]",
    ),
    (
        "client|list",
        "Lists open connections.",
        "2.4.0",
        "connection",
        "[TYPE type:string] [ID client-id:integer ...]",
    ),
    (
        "client|no-evict",
        "Sets the client eviction mode of the connection.",
        "7.0.0",
        "connection",
        "ON | OFF",
    ),
    (
        "client|no-touch",
        "Controls whether commands sent by the client affect the LRU/LFU of accessed keys.",
        "7.2.0",
        "connection",
        "ON | OFF",
    ),
    (
        "client|setinfo",
        "Sets information specific to the client or connection.",
        "7.2.0",
        "connection",
        "[LIB-NAME libname:string | LIB-VER libver:string]",
    ),
    (
        "client|caching",
        "Instructs the server whether to track the keys in the next request.",
        "6.0.0",
        "connection",
        "YES | NO",
    ),
    (
        "client|getredir",
        "Returns the client ID to which the connection's tracking notifications are redirected.",
        "6.0.0",
        "connection",
        "",
    ),
    (
        "client|tracking",
        "Controls server-assisted client-side caching for the connection.",
        "6.0.0",
        "connection",
        "ON | OFF [REDIRECT client-id:integer] [PREFIX prefix:string ...] [BCAST] [OPTIN] [OPTOUT] [NOLOOP]",
    ),
    (
        "client|trackinginfo",
        "Returns information about server-assisted client-side caching for the connection.",
        "6.2.0",
        "connection",
        "",
    ),
    (
        "client|pause",
        "Suspends commands processing.",
        "3.0.0",
        "connection",
        "timeout:integer [WRITE | ALL]",
    ),
    (
        "client|unpause",
        "Resumes processing commands from paused clients.",
        "6.2.0",
        "connection",
        "",
    ),
    (
        "client|setname",
        "Sets the connection name.",
        "2.6.9",
        "connection",
        "connection-name:string",
    ),
    (
        "command",
        "Returns detailed information about all commands.",
        "2.8.13",
        "server",
        "",
    ),
    (
        "command|count",
        "Returns a count of commands.",
        "2.8.13",
        "server",
        "",
    ),
    (
        "command|docs",
        "Returns documentary information about one, multiple or all commands.",
        "7.0.0",
        "server",
        "[command-name:string ...]",
    ),
    (
        "command|info",
        "Returns information about one, multiple or all commands.",
        "2.8.13",
        "server",
        "[command-name:string ...]",
    ),
    (
        "command|list",
        "Returns a list of command names.",
        "7.0.0",
        "server",
        "",
    ),
    (
        "config",
        "A container for server configuration commands.",
        "2.0.0",
        "server",
        "",
    ),
    (
        "config|get",
        "Returns the effective values of configuration parameters.",
        "2.0.0",
        "server",
        "parameter:string ...",
    ),
    (
        "config|help",
        "Returns helpful text about the different subcommands.",
        "5.0.0",
        "server",
        "",
    ),
    (
        "config|resetstat",
        "Resets the server's statistics.",
        "2.0.0",
        "server",
        "",
    ),
    (
        "config|rewrite",
        "Persists the effective configuration to file.",
        "2.8.0",
        "server",
        "",
    ),
    (
        "config|set",
        "Sets configuration parameters in-flight.",
        "2.0.0",
        "server",
        "parameter:string value:string ...",
    ),
    (
        "copy",
        "Copies the value of a key to a new key.",
        "6.2.0",
        "generic",
        "key key [DB destination-db:integer] [REPLACE]",
    ),
    (
        "dbsize",
        "Returns the number of keys in the database.",
        "1.0.0",
        "server",
        "",
    ),
    (
        "decr",
        "Decrements the integer value of a key by one. (dice: a conflict-free counter.)",
        "1.0.0",
        "string",
        "key",
    ),
    (
        "decrby",
        "Decrements a number from the integer value of a key. (dice: a conflict-free counter.)",
        "1.0.0",
        "string",
        "key decrement:integer",
    ),
    (
        "del",
        "Deletes one or more keys.",
        "1.0.0",
        "generic",
        "key ...",
    ),
    (
        "discard",
        "Discards a transaction.",
        "2.0.0",
        "transactions",
        "",
    ),
    (
        "echo",
        "Returns the given string.",
        "1.0.0",
        "connection",
        "message:string",
    ),
    (
        "exec",
        "Executes all commands in a transaction.",
        "1.2.0",
        "transactions",
        "",
    ),
    (
        "exists",
        "Determines whether one or more keys exist.",
        "1.0.0",
        "generic",
        "key ...",
    ),
    (
        "expire",
        "Sets the expiration time of a key in seconds.",
        "1.0.0",
        "generic",
        "key seconds:integer [NX | XX | GT | LT]",
    ),
    (
        "expireat",
        "Sets the expiration time of a key to a Unix timestamp.",
        "1.2.0",
        "generic",
        "key unix-time-seconds:unix-time [NX | XX | GT | LT]",
    ),
    (
        "expiretime",
        "Returns the expiration time of a key as a Unix timestamp.",
        "7.0.0",
        "generic",
        "key",
    ),
    (
        "flushall",
        "Removes all keys from all databases.",
        "1.0.0",
        "server",
        "[ASYNC | SYNC]",
    ),
    (
        "flushdb",
        "Remove all keys from the current database.",
        "1.0.0",
        "server",
        "[ASYNC | SYNC]",
    ),
    (
        "get",
        "Returns the string value of a key.",
        "1.0.0",
        "string",
        "key",
    ),
    (
        "getdel",
        "Returns the string value of a key after deleting the key.",
        "6.2.0",
        "string",
        "key",
    ),
    (
        "getex",
        "Returns the string value of a key after setting its expiration time.",
        "6.2.0",
        "string",
        "key [EX seconds:integer | PX milliseconds:integer | EXAT unix-time-seconds:unix-time | PXAT unix-time-milliseconds:unix-time | PERSIST]",
    ),
    (
        "getrange",
        "Returns a substring of the string stored at a key.",
        "2.4.0",
        "string",
        "key start:integer end:integer",
    ),
    (
        "getset",
        "Returns the previous string value of a key after setting it to a new value.",
        "1.0.0",
        "string",
        "key value:string",
    ),
    (
        "hdel",
        "Deletes one or more fields and their values from a hash. Deletes the hash if no fields remain.",
        "2.0.0",
        "hash",
        "key field:string ...",
    ),
    (
        "hexists",
        "Determines whether a field exists in a hash.",
        "2.0.0",
        "hash",
        "key field:string",
    ),
    (
        "hget",
        "Returns the value of a field in a hash.",
        "2.0.0",
        "hash",
        "key field:string",
    ),
    (
        "hgetall",
        "Returns all fields and values in a hash.",
        "2.0.0",
        "hash",
        "key",
    ),
    (
        "hincrby",
        "Increments the integer value of a field in a hash by a number. Uses 0 as initial value if the field doesn't exist.",
        "2.0.0",
        "hash",
        "key field:string increment:integer",
    ),
    (
        "hincrbyfloat",
        "Increments the floating point value of a field by a number. Uses 0 as initial value if the field doesn't exist.",
        "2.6.0",
        "hash",
        "key field:string increment:double",
    ),
    (
        "hkeys",
        "Returns all fields in a hash.",
        "2.0.0",
        "hash",
        "key",
    ),
    (
        "hlen",
        "Returns the number of fields in a hash.",
        "2.0.0",
        "hash",
        "key",
    ),
    (
        "hmget",
        "Returns the values of all fields in a hash.",
        "2.0.0",
        "hash",
        "key field:string ...",
    ),
    (
        "hmset",
        "Sets the values of multiple fields.",
        "2.0.0",
        "hash",
        "key [field:string value:string] ...",
    ),
    (
        "hrandfield",
        "Returns one or more random fields from a hash.",
        "6.2.0",
        "hash",
        "key [count:integer [WITHVALUES]]",
    ),
    (
        "hscan",
        "Iterates over fields and values of a hash.",
        "2.8.0",
        "hash",
        "key cursor:integer [MATCH pattern:pattern] [COUNT count:integer] [NOVALUES]",
    ),
    (
        "hset",
        "Creates or modifies the value of a field in a hash.",
        "2.0.0",
        "hash",
        "key [field:string value:string] ...",
    ),
    (
        "hsetnx",
        "Sets the value of a field in a hash only when the field doesn't exist.",
        "2.0.0",
        "hash",
        "key field:string value:string",
    ),
    (
        "hstrlen",
        "Returns the length of the value of a field.",
        "3.2.0",
        "hash",
        "key field:string",
    ),
    (
        "hvals",
        "Returns all values in a hash.",
        "2.0.0",
        "hash",
        "key",
    ),
    (
        "hello",
        "Handshakes with the Redis server.",
        "6.0.0",
        "connection",
        "[protover:integer [AUTH username:string password:string] [SETNAME clientname:string]]",
    ),
    (
        "incr",
        "Increments the integer value of a key by one. (dice: a conflict-free counter.)",
        "1.0.0",
        "string",
        "key",
    ),
    (
        "incrby",
        "Increments the integer value of a key by a number. (dice: a conflict-free counter.)",
        "1.0.0",
        "string",
        "key increment:integer",
    ),
    (
        "incrbyfloat",
        "Increment the floating point value of a key by a number. (dice: a conflict-free counter.)",
        "2.6.0",
        "string",
        "key increment:double",
    ),
    (
        "info",
        "Returns information and statistics about the server.",
        "1.0.0",
        "server",
        "[section:string ...]",
    ),
    (
        "keys",
        "Returns all key names that match a pattern.",
        "1.0.0",
        "generic",
        "pattern:pattern",
    ),
    (
        "memory",
        "A container for memory diagnostics commands.",
        "4.0.0",
        "server",
        "",
    ),
    (
        "memory|help",
        "Returns helpful text about the different subcommands.",
        "4.0.0",
        "server",
        "",
    ),
    (
        "memory|usage",
        "Estimates the memory usage of a key.",
        "4.0.0",
        "server",
        "key [SAMPLES count:integer]",
    ),
    (
        "mget",
        "Atomically returns the string values of one or more keys.",
        "1.0.0",
        "string",
        "key ...",
    ),
    (
        "mset",
        "Atomically creates or modifies the string values of one or more keys.",
        "1.0.1",
        "string",
        "[key value:string] ...",
    ),
    (
        "msetnx",
        "Atomically modifies the string values of one or more keys only when all keys don't exist.",
        "1.0.1",
        "string",
        "[key value:string] ...",
    ),
    (
        "multi",
        "Starts a transaction.",
        "1.2.0",
        "transactions",
        "",
    ),
    (
        "object",
        "A container for object introspection commands.",
        "2.2.3",
        "generic",
        "",
    ),
    (
        "object|encoding",
        "Returns the internal encoding of a Redis object.",
        "2.2.3",
        "generic",
        "key",
    ),
    (
        "object|freq",
        "Returns the logarithmic access frequency counter of a Redis object.",
        "4.0.0",
        "generic",
        "key",
    ),
    (
        "object|help",
        "Returns helpful text about the different subcommands.",
        "6.2.0",
        "generic",
        "",
    ),
    (
        "object|idletime",
        "Returns the time since the last access to a Redis object. (dice: since the last write.)",
        "2.2.3",
        "generic",
        "key",
    ),
    (
        "object|refcount",
        "Returns the reference count of a value of a key.",
        "2.2.3",
        "generic",
        "key",
    ),
    (
        "persist",
        "Removes the expiration time of a key.",
        "2.2.0",
        "generic",
        "key",
    ),
    (
        "pexpire",
        "Sets the expiration time of a key in milliseconds.",
        "2.6.0",
        "generic",
        "key milliseconds:integer [NX | XX | GT | LT]",
    ),
    (
        "pexpireat",
        "Sets the expiration time of a key to a Unix milliseconds timestamp.",
        "2.6.0",
        "generic",
        "key unix-time-milliseconds:unix-time [NX | XX | GT | LT]",
    ),
    (
        "pexpiretime",
        "Returns the expiration time of a key as a Unix milliseconds timestamp.",
        "7.0.0",
        "generic",
        "key",
    ),
    (
        "ping",
        "Returns the server's liveliness response.",
        "1.0.0",
        "connection",
        "[message:string]",
    ),
    (
        "psetex",
        "Sets both string value and expiration time in milliseconds of a key.",
        "2.6.0",
        "string",
        "key milliseconds:integer value:string",
    ),
    (
        "psubscribe",
        "Listens for messages published to channels that match one or more patterns.",
        "2.0.0",
        "pubsub",
        "pattern:pattern ...",
    ),
    (
        "pttl",
        "Returns the expiration time in milliseconds of a key.",
        "2.6.0",
        "generic",
        "key",
    ),
    (
        "publish",
        "Posts a message to a channel.",
        "2.0.0",
        "pubsub",
        "channel:string message:string",
    ),
    (
        "pubsub",
        "A container for Pub/Sub commands.",
        "2.8.0",
        "pubsub",
        "",
    ),
    (
        "pubsub|channels",
        "Returns the active channels.",
        "2.8.0",
        "pubsub",
        "[pattern:pattern]",
    ),
    (
        "pubsub|help",
        "Returns helpful text about the different subcommands.",
        "6.2.0",
        "pubsub",
        "",
    ),
    (
        "pubsub|numpat",
        "Returns a count of unique pattern subscriptions.",
        "2.8.0",
        "pubsub",
        "",
    ),
    (
        "pubsub|numsub",
        "Returns a count of subscribers to channels.",
        "2.8.0",
        "pubsub",
        "[channel:string ...]",
    ),
    (
        "punsubscribe",
        "Stops listening to messages published to channels that match one or more patterns.",
        "2.0.0",
        "pubsub",
        "[pattern:pattern ...]",
    ),
    ("quit", "Closes the connection.", "1.0.0", "connection", ""),
    (
        "randomkey",
        "Returns a random key name from the database.",
        "1.0.0",
        "generic",
        "",
    ),
    (
        "rename",
        "Renames a key and overwrites the destination.",
        "1.0.0",
        "generic",
        "key key",
    ),
    (
        "renamenx",
        "Renames a key only when the target key name doesn't exist.",
        "1.0.0",
        "generic",
        "key key",
    ),
    ("reset", "Resets the connection.", "6.2.0", "connection", ""),
    (
        "scan",
        "Iterates over the key names in the database.",
        "2.8.0",
        "generic",
        "cursor:integer [MATCH pattern:pattern] [COUNT count:integer] [TYPE type:string]",
    ),
    (
        "select",
        "Changes the selected database.",
        "1.0.0",
        "connection",
        "index:integer",
    ),
    (
        "set",
        "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.",
        "1.0.0",
        "string",
        "key value:string [NX | XX] [GET] [EX seconds:integer | PX milliseconds:integer | EXAT unix-time-seconds:unix-time | PXAT unix-time-milliseconds:unix-time | KEEPTTL]",
    ),
    (
        "setex",
        "Sets the string value and expiration time of a key. Creates the key if it doesn't exist.",
        "2.0.0",
        "string",
        "key seconds:integer value:string",
    ),
    (
        "setnx",
        "Set the string value of a key only when the key doesn't exist.",
        "1.0.0",
        "string",
        "key value:string",
    ),
    (
        "setrange",
        "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist.",
        "2.2.0",
        "string",
        "key offset:integer value:string",
    ),
    (
        "shutdown",
        "Synchronously saves the database(s) to disk and shuts down the Redis server.",
        "1.0.0",
        "server",
        "[NOSAVE | SAVE] [NOW] [FORCE] [ABORT]",
    ),
    (
        "strlen",
        "Returns the length of a string value.",
        "2.2.0",
        "string",
        "key",
    ),
    (
        "subscribe",
        "Listens for messages published to channels.",
        "2.0.0",
        "pubsub",
        "channel:string ...",
    ),
    (
        "substr",
        "Returns a substring from a string value.",
        "1.0.0",
        "string",
        "key start:integer end:integer",
    ),
    ("time", "Returns the server time.", "2.6.0", "server", ""),
    (
        "touch",
        "Returns the number of existing keys out of those specified after updating the time they were last accessed.",
        "3.2.1",
        "generic",
        "key ...",
    ),
    (
        "ttl",
        "Returns the expiration time in seconds of a key.",
        "1.0.0",
        "generic",
        "key",
    ),
    (
        "type",
        "Determines the type of value stored at a key.",
        "1.0.0",
        "generic",
        "key",
    ),
    (
        "unlink",
        "Asynchronously deletes one or more keys.",
        "4.0.0",
        "generic",
        "key ...",
    ),
    (
        "unsubscribe",
        "Stops listening to messages posted to channels.",
        "2.0.0",
        "pubsub",
        "[channel:string ...]",
    ),
    (
        "unwatch",
        "Forgets about watched keys of a transaction.",
        "2.2.0",
        "transactions",
        "",
    ),
    (
        "wait",
        "Blocks until the asynchronous replication of all preceding write commands sent by the connection is completed.",
        "3.0.0",
        "generic",
        "numreplicas:integer timeout:integer",
    ),
    (
        "waitaof",
        "Blocks until all of the preceding write commands sent by the connection are written to the append-only file of the master and/or replicas.",
        "7.2.0",
        "generic",
        "numlocal:integer numreplicas:integer timeout:integer",
    ),
    (
        "watch",
        "Monitors changes to keys to determine the execution of a transaction.",
        "2.2.0",
        "transactions",
        "key ...",
    ),
    (
        "sadd",
        "Adds one or more members to a set. Creates the key if it doesn't exist.",
        "1.0.0",
        "set",
        "key member:string ...",
    ),
    (
        "scard",
        "Returns the number of members in a set.",
        "1.0.0",
        "set",
        "key",
    ),
    (
        "sdiff",
        "Returns the difference of multiple sets.",
        "1.0.0",
        "set",
        "key ...",
    ),
    (
        "sdiffstore",
        "Stores the difference of multiple sets in a key.",
        "1.0.0",
        "set",
        "key key ...",
    ),
    (
        "sinter",
        "Returns the intersect of multiple sets.",
        "1.0.0",
        "set",
        "key ...",
    ),
    (
        "sintercard",
        "Returns the number of members of the intersect of multiple sets.",
        "7.0.0",
        "set",
        "numkeys:integer key ... [LIMIT limit:integer]",
    ),
    (
        "sinterstore",
        "Stores the intersect of multiple sets in a key.",
        "1.0.0",
        "set",
        "key key ...",
    ),
    (
        "sismember",
        "Determines whether a member belongs to a set.",
        "1.0.0",
        "set",
        "key member:string",
    ),
    (
        "smembers",
        "Returns all members of a set.",
        "1.0.0",
        "set",
        "key",
    ),
    (
        "smismember",
        "Determines whether multiple members belong to a set.",
        "6.2.0",
        "set",
        "key member:string ...",
    ),
    (
        "smove",
        "Moves a member from one set to another.",
        "1.0.0",
        "set",
        "key key member:string",
    ),
    (
        "spop",
        "Returns one or more random members from a set after removing them. Deletes the set if the last member was popped.",
        "1.0.0",
        "set",
        "key [count:integer]",
    ),
    (
        "srandmember",
        "Get one or multiple random members from a set",
        "1.0.0",
        "set",
        "key [count:integer]",
    ),
    (
        "srem",
        "Removes one or more members from a set. Deletes the set if the last member was removed.",
        "1.0.0",
        "set",
        "key member:string ...",
    ),
    (
        "sscan",
        "Iterates over members of a set.",
        "2.8.0",
        "set",
        "key cursor:integer [MATCH pattern:pattern] [COUNT count:integer]",
    ),
    (
        "sunion",
        "Returns the union of multiple sets.",
        "1.0.0",
        "set",
        "key ...",
    ),
    (
        "sunionstore",
        "Stores the union of multiple sets in a key.",
        "1.0.0",
        "set",
        "key key ...",
    ),
];

/// One argument of a command, as `COMMAND DOCS` describes it.
#[derive(Debug, PartialEq)]
pub(crate) struct Arg {
    pub name: String,
    pub kind: &'static str,
    pub token: Option<String>,
    pub optional: bool,
    pub multiple: bool,
    pub args: Vec<Arg>,
}

fn is_token(word: &str) -> bool {
    word.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && word
            .chars()
            .all(|c| c.is_ascii_uppercase() || c == '-' || c.is_ascii_digit())
}

/// Splits a syntax string into words and brackets.
fn lex(syntax: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut start = None;
    for (i, c) in syntax.char_indices() {
        match c {
            '[' | ']' | '|' | ' ' => {
                if let Some(s) = start.take() {
                    words.push(&syntax[s..i]);
                }
                if c != ' ' {
                    words.push(&syntax[i..i + 1]);
                }
            }
            _ => {
                if start.is_none() {
                    start = Some(i);
                }
            }
        }
    }
    if let Some(s) = start {
        words.push(&syntax[s..]);
    }
    words
}

/// An atom: `key`, `name:type` or a pure token.
fn atom(word: &str) -> Arg {
    let (name, kind, token) = if word == "key" {
        ("key".to_string(), "key", None)
    } else if let Some((name, kind)) = word.rsplit_once(':') {
        let kind = match kind {
            "integer" => "integer",
            "double" => "double",
            "pattern" => "pattern",
            "unix-time" => "unix-time",
            _ => "string",
        };
        (name.to_string(), kind, None)
    } else if is_token(word) {
        (word.to_lowercase(), "pure-token", Some(word.to_string()))
    } else {
        (word.to_string(), "string", None)
    };
    Arg {
        name,
        kind,
        token,
        optional: false,
        multiple: false,
        args: Vec::new(),
    }
}

/// Parses a sequence of items until `]` or `|` or the end.
fn parse_seq(words: &[&str], pos: &mut usize) -> Vec<Arg> {
    let mut items = Vec::new();
    while let Some(&w) = words.get(*pos) {
        match w {
            "]" | "|" => break,
            "..." => {
                if let Some(last) = items.last_mut() {
                    let last: &mut Arg = last;
                    last.multiple = true;
                }
                *pos += 1;
            }
            "[" => {
                *pos += 1;
                let mut choices = vec![parse_seq(words, pos)];
                while words.get(*pos) == Some(&"|") {
                    *pos += 1;
                    choices.push(parse_seq(words, pos));
                }
                *pos += 1; // the `]`
                let mut arg = if choices.len() == 1 {
                    group(choices.pop().unwrap_or_default())
                } else {
                    let args: Vec<Arg> = choices.into_iter().map(group).collect();
                    Arg {
                        name: args
                            .iter()
                            .map(|a| a.name.as_str())
                            .collect::<Vec<_>>()
                            .join("-"),
                        kind: "oneof",
                        token: None,
                        optional: false,
                        multiple: false,
                        args,
                    }
                };
                arg.optional = true;
                items.push(arg);
            }
            w => {
                *pos += 1;
                items.push(atom(w.trim_end_matches("...")));
                if w.ends_with("...")
                    && let Some(last) = items.last_mut()
                {
                    last.multiple = true;
                }
            }
        }
    }
    items
}

/// One argument from a sequence: itself, a token with its value, or a block.
fn group(mut seq: Vec<Arg>) -> Arg {
    if seq.len() == 1 {
        return seq.pop().unwrap_or_else(|| atom("x"));
    }
    if seq.len() == 2 && seq[0].kind == "pure-token" && seq[1].kind != "pure-token" {
        let value = seq.pop().unwrap_or_else(|| atom("x"));
        let token = seq.pop().and_then(|t| t.token);
        return Arg { token, ..value };
    }
    Arg {
        name: seq.first().map(|a| a.name.clone()).unwrap_or_default(),
        kind: "block",
        token: None,
        optional: false,
        multiple: false,
        args: seq,
    }
}

/// The arguments described by `syntax`.
pub(crate) fn parse(syntax: &str) -> Vec<Arg> {
    let words = lex(syntax);
    let mut pos = 0;
    let mut args = parse_seq(&words, &mut pos);
    // A top-level choice (`ON | OFF`) is one argument.
    if words.get(pos) == Some(&"|") {
        let mut choices = vec![group(std::mem::take(&mut args))];
        while words.get(pos) == Some(&"|") {
            pos += 1;
            choices.push(group(parse_seq(&words, &mut pos)));
        }
        args = vec![Arg {
            name: "option".into(),
            kind: "oneof",
            token: None,
            optional: false,
            multiple: false,
            args: choices,
        }];
    }
    args
}

/// Writes one argument; `key_index` is the index of its key spec if it is a key.
fn write_arg(out: &mut Vec<u8>, a: &Arg, key_index: i64, proto: Protocol) {
    let flags = usize::from(a.optional) + usize::from(a.multiple);
    let fields = 2
        + usize::from(a.kind == "key")
        + usize::from(a.token.is_some())
        + usize::from(flags > 0)
        + usize::from(!a.args.is_empty());
    write_map_len(out, fields, proto);
    write_bulk(out, b"name");
    write_bulk(out, a.name.as_bytes());
    write_bulk(out, b"type");
    write_bulk(out, a.kind.as_bytes());
    if a.kind == "key" {
        write_bulk(out, b"key_spec_index");
        write_integer(out, key_index);
    }
    if let Some(t) = &a.token {
        write_bulk(out, b"token");
        write_bulk(out, t.as_bytes());
    }
    if flags > 0 {
        write_bulk(out, b"flags");
        write_set_len(out, flags, proto);
        if a.optional {
            crate::frame::write_simple(out, "optional");
        }
        if a.multiple {
            crate::frame::write_simple(out, "multiple");
        }
    }
    if !a.args.is_empty() {
        write_bulk(out, b"arguments");
        write_array_len(out, a.args.len());
        for sub in &a.args {
            write_arg(out, sub, 0, proto);
        }
    }
}

/// Writes one command's docs (a map) under its name: summary, since, group, arguments, and
/// its subcommands' docs if it has any.
pub(crate) fn write_doc(out: &mut Vec<u8>, name: &str, proto: Protocol) {
    let Some(&(_, summary, since, group, syntax)) = DOCS.iter().find(|d| d.0 == name) else {
        return;
    };
    let prefix = format!("{name}|");
    let subs: Vec<&Doc> = DOCS.iter().filter(|d| d.0.starts_with(&prefix)).collect();
    let args = parse(syntax);
    write_bulk(out, name.as_bytes());
    write_map_len(
        out,
        3 + usize::from(!args.is_empty()) + usize::from(!subs.is_empty()),
        proto,
    );
    write_bulk(out, b"summary");
    write_bulk(out, summary.as_bytes());
    write_bulk(out, b"since");
    write_bulk(out, since.as_bytes());
    write_bulk(out, b"group");
    write_bulk(out, group.as_bytes());
    if !args.is_empty() {
        write_bulk(out, b"arguments");
        write_array_len(out, args.len());
        let mut keys = 0;
        for a in &args {
            write_arg(out, a, keys, proto);
            keys += i64::from(a.kind == "key");
        }
    }
    if !subs.is_empty() {
        write_bulk(out, b"subcommands");
        write_map_len(out, subs.len(), proto);
        for s in subs {
            write_doc(out, s.0, proto);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_docs_and_they_parse() {
        for spec in super::super::TABLE {
            assert!(
                DOCS.iter().any(|d| d.0 == spec.name),
                "{} has no docs",
                spec.name
            );
        }
        for d in DOCS {
            let name = d.0.split('|').next().unwrap_or_default();
            assert!(super::super::lookup(name.as_bytes()).is_some(), "{}", d.0);
            let _ = parse(d.4);
        }
    }

    #[test]
    fn syntax() {
        let set = parse("key value:string [NX | XX] [GET] [EX seconds:integer | KEEPTTL]");
        assert_eq!(set.len(), 5);
        assert_eq!(set[0].kind, "key");
        assert_eq!((set[1].name.as_str(), set[1].kind), ("value", "string"));
        assert_eq!(set[2].kind, "oneof");
        assert!(set[2].optional);
        assert_eq!(set[2].args[1].token.as_deref(), Some("XX"));
        assert_eq!(set[3].kind, "pure-token");
        assert_eq!(set[4].args[0].token.as_deref(), Some("EX"));
        assert_eq!(set[4].args[0].kind, "integer");
        let del = parse("key ...");
        assert!(del[0].multiple && !del[0].optional);
        let mset = parse("[key value:string] ...");
        assert_eq!(mset[0].kind, "block");
        assert!(mset[0].multiple);
        let onoff = parse("ON | OFF");
        assert_eq!(onoff.len(), 1);
        assert_eq!(onoff[0].kind, "oneof");
    }
}
