//! `dice`: run a dice node, and use a node's cache from the shell.
//!
//! `dice node` runs a networked node (dice-net) with a Redis-protocol port (dice-resp).
//! `put/get/del/keys/status` talk to a node over that port: `--node HOST:PORT`, or
//! `--data DIR` (the node running on that data directory, found through the API address it
//! writes there), or `127.0.0.1:7379`. With `--data DIR` and no node running on it, they
//! open the directory directly.
// Doc comments here are `--help` text for clap, not rustdoc: `[abc]` and `<peer id>` are
// literal there.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

mod allocator;
mod client;
mod metrics;
mod node;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

// jemalloc: with glibc's per-thread arenas, memory freed on one thread (SQLite rows, decoded
// snapshot chunks) stayed resident next to the map; jemalloc holds about 15-20 % less per key
// (BENCHMARKS.md, memory per key).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A replicated cache: an LWW-map CRDT persisted in SQLite, synced over libp2p, spoken to
/// over the Redis protocol.
#[derive(Parser, Debug)]
#[command(
    name = "dice",
    version,
    about,
    propagate_version = true,
    after_help = MAIN_HELP
)]
struct Cli {
    /// Data directory (default: $XDG_DATA_HOME/dice or ~/.local/share/dice). Only `dice
    /// node` creates it; the other commands reach the node running on it, or open it
    /// directly when none runs.
    #[arg(long, global = true, env = "DICE_DATA", value_name = "DIR")]
    data: Option<PathBuf>,
    /// `dice --node ADDR get ...`: the client flag before the subcommand, as older releases
    /// took it (hidden: `dice get --node ADDR ...` is the documented form). Also reads
    /// DICE_NODE.
    #[arg(long, hide = true, env = "DICE_NODE", value_name = "HOST:PORT")]
    node: Option<String>,
    /// As `node`: `--password` before the subcommand, and DICE_PASSWORD.
    #[arg(
        long,
        hide = true,
        env = "DICE_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,
    #[command(subcommand)]
    command: Command,
}

const MAIN_HELP: &str = "\
Examples:
  dice --data /tmp/dice-demo/a node                run a node on that data directory
  dice --data /tmp/dice-demo/a put greeting hello  store a value (via its node, or offline)
  dice --data /tmp/dice-demo/a get greeting        print it
  dice get --node 127.0.0.1:7379 greeting          ask a node by its API address
  dice put photo --file photo.jpg                  store a file's bytes
  dice get --raw photo > photo.jpg                 and get them back byte for byte
  dice keys 'user:*'                               list keys
  dice status                                      node id, keys, digest, peers

Client commands (put, get, del, keys, status) go to --node HOST:PORT, else to the node
running on --data DIR (or DIR itself when no node runs on it), else to 127.0.0.1:7379.
Every flag also reads an environment variable: DICE_DATA, DICE_NODE, DICE_PASSWORD, and
DICE_<FLAG> for the flags of `dice node`; a flag on the command line wins over the
environment.

Exit codes: 0 success; 1 `dice get`: no such key; 2 usage error (bad or missing
arguments, an empty key, a --data directory that does not exist); 3 any other error (node
unreachable, wrong password, server error); 141 stdout closed early (`dice keys | head`).";

/// Flags of the commands that talk to a node: put, get, del, keys, status.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ClientArgs {
    /// A running node's API address [default: 127.0.0.1:7379] [env: DICE_NODE].
    #[arg(long, value_name = "HOST:PORT")]
    node: Option<String>,
    /// Password of the node's API (its --requirepass) [env: DICE_PASSWORD].
    #[arg(long, value_name = "PASSWORD")]
    password: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node in the foreground until SIGINT or SIGTERM.
    #[command(after_help = node::NODE_HELP)]
    Node(node::NodeArgs),
    /// Store a value under KEY: VALUE, `-` for stdin, or --file PATH (byte-exact).
    #[command(after_help = "\
Examples:
  dice put elixir 'awesome sauce'
  dice put session:42 alice --ttl 30m
  dice put photo --file photo.jpg          the file's bytes, exactly
  tar c docs | dice put docs.tar -          stdin, exactly (binary is fine)

Values up to 1 MiB. To store the one-character value \"-\", pipe it: printf - | dice put k -")]
    Put {
        /// The key (not empty).
        #[arg(value_parser = parse_key)]
        key: String,
        /// The value; `-` reads it from stdin.
        #[arg(
            required_unless_present = "file",
            conflicts_with = "file",
            value_parser = clap::value_parser!(OsString)
        )]
        value: Option<OsString>,
        /// Read the value from this file instead.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Expire after this long: 250ms, 30s, 5m, 1h.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the value of KEY (exit 1 if absent), followed by a newline unless --raw.
    #[command(after_help = "\
Examples:
  dice get elixir                          awesome sauce
  v=$(dice get elixir)                     into a shell variable
  dice get --raw photo > photo.jpg         the stored bytes exactly, no newline added
  dice get missing || echo absent          exit 1: no such key")]
    Get {
        /// The key (not empty).
        #[arg(value_parser = parse_key)]
        key: String,
        /// Write the stored bytes exactly, without the trailing newline.
        #[arg(long)]
        raw: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete keys; prints how many were present.
    #[command(after_help = "\
Examples:
  dice del elixir
  dice del session:1 session:2 session:3   prints how many existed")]
    Del {
        /// The keys (not empty).
        #[arg(required = true, value_parser = parse_key)]
        keys: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List keys matching PATTERN (Redis glob: *, ?, [abc]), sorted.
    #[command(after_help = "\
Examples:
  dice keys                                every key
  dice keys 'session:*'                    quote the pattern from the shell
  dice keys | head -3                      fine: dice stops quietly when the pipe closes")]
    Keys {
        /// The pattern.
        #[arg(default_value = "*")]
        pattern: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the node id, key count, digest and peers.
    #[command(after_help = "\
Examples:
  dice status                              the node at 127.0.0.1:7379
  dice --data /tmp/dice-demo/a status      the node on that data dir, or the dir offline
  dice status --json | jq .digest")]
    Status {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make a new cluster key for --cluster-key: written to FILE (created 0600, never
    /// overwritten), or printed (a file that stdout is redirected to is made 0600).
    #[command(after_help = "\
Examples:
  dice keygen cluster.key                  then: dice node --cluster-key cluster.key
  dice keygen > cluster.key                the same (the file is made 0600)")]
    Keygen {
        /// Where to write the key.
        file: Option<PathBuf>,
    },
}

/// A usage error found after parsing (an empty key, a missing data directory): exit 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Keys are 1 byte or more: an empty one is a usage error (exit 2), not a server error.
fn parse_key(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("a key cannot be empty".into());
    }
    Ok(s.to_string())
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("a TTL must be positive".into());
    }
    Ok(d)
}

/// `dice keygen > FILE`: the shell created FILE with its umask (often 0644); a key must be
/// readable by its owner only. Makes a regular file on stdout 0600 before the key is written.
fn restrict_stdout_file() {
    use std::os::fd::AsFd;
    use std::os::unix::fs::PermissionsExt;
    let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() else {
        return;
    };
    let file = std::fs::File::from(fd);
    if file.metadata().is_ok_and(|m| m.is_file())
        && let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(0o600))
    {
        eprintln!("dice: could not make the key file owner-only: {e}; run chmod 600 on it");
    }
}

fn default_data_dir() -> Result<PathBuf> {
    dirs::data_dir()
        .map(|d| d.join("dice"))
        .context("no data directory on this platform: pass --data DIR")
}

/// The log filter: `RUST_LOG`, else `default` (`info` for a node; `warn` for the client
/// commands, whose output is the answer, not a log of opening the cache). Kademlia's "Failed to trigger bootstrap: No
/// known peers" warning, which a node alone on its network logs every 30 s for as long as it
/// runs (kad bootstraps periodically and has nobody to ask), is kept below `error` unless
/// `RUST_LOG` names `libp2p_kad` itself: a lone node is not a fault, and `dice status` shows
/// its peers. dice uses no other part of kad's behaviour that warns.
fn log_filter(rust_log: Option<&str>, default: &str) -> tracing_subscriber::EnvFilter {
    let base = rust_log.filter(|s| !s.trim().is_empty()).unwrap_or(default);
    let mut filter = tracing_subscriber::EnvFilter::try_new(base)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if !base.contains("libp2p_kad")
        && let Ok(quiet) = "libp2p_kad::behaviour=error".parse()
    {
        filter = filter.add_directive(quiet);
    }
    filter
}

/// The exit code and the message (if any) for an error: 2 for usage errors, 141 and no
/// message when stdout was closed early (what a process killed by SIGPIPE reports in a
/// shell), 3 for the rest.
fn exit_for(e: &anyhow::Error) -> (u8, Option<String>) {
    if e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    }) {
        return (141, None);
    }
    let code = if e.chain().any(|c| c.is::<UsageError>()) {
        2
    } else {
        3
    };
    (code, Some(error_message(e)))
}

/// The error and its causes, each said once: `a: b: c`, leaving out a cause whose text the
/// message already holds (the redis client's errors repeat their source's text, which gave
/// `Connection refused (os error 111): Connection refused (os error 111)`).
fn error_message(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let given = Given::from_matches(&matches);
    let rust_log = std::env::var("RUST_LOG").ok();
    let default_level = match cli.command {
        Command::Node(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(rust_log.as_deref(), default_level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Command::Node(args) = &cli.command
        && let Some(n) = args.threads
    {
        builder.worker_threads(usize::from(n));
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dice: cannot start the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(run(cli, given)) {
        Ok(code) => code,
        Err(e) => {
            let (code, msg) = exit_for(&e);
            if let Some(msg) = msg {
                eprintln!("dice: {msg}");
            }
            ExitCode::from(code)
        }
    }
}

/// Where `--node` and `--data` came from: the command line wins over the environment.
#[derive(Debug, Default, Clone, PartialEq)]
struct Given {
    node_on_cli: bool,
    data_on_cli: bool,
    password_on_cli: bool,
}

impl Given {
    fn from_matches(m: &clap::ArgMatches) -> Given {
        let on_cli = |id: &str| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
        Given {
            node_on_cli: on_cli("node"),
            data_on_cli: on_cli("data"),
            password_on_cli: on_cli("password"),
        }
    }
}

/// The target of a client command, from the flags (a subcommand's `--node` and
/// `--password` first, then the same before the subcommand, then `DICE_NODE` and
/// `DICE_PASSWORD`) and `--data`/`DICE_DATA`.
fn client_target(
    top_node: Option<String>,
    top_password: Option<String>,
    data: Option<PathBuf>,
    given: &Given,
    client: ClientArgs,
) -> Result<client::Target> {
    let password = client.password.or(top_password);
    let node_on_cli = client.node.is_some() || given.node_on_cli;
    let node = client.node.or(top_node);
    let both = "--node and --data both say which node to use: give one";
    let use_node = match (node.is_some(), data.is_some()) {
        (true, true) => match (node_on_cli, given.data_on_cli) {
            (true, false) => true,
            (false, true) => false,
            (true, true) => return Err(UsageError(both.into()).into()),
            (false, false) => {
                return Err(UsageError(
                    "DICE_NODE and DICE_DATA are both set: unset one, or give --node or --data"
                        .into(),
                )
                .into());
            }
        },
        (node, _) => node,
    };
    client::Target::resolve(if use_node { node } else { None }, data, password)
}

async fn run(cli: Cli, given: Given) -> Result<ExitCode> {
    let (request, client_args) = match cli.command {
        Command::Node(args) => {
            // Client flags before `node` would otherwise be taken and ignored.
            if given.node_on_cli {
                return Err(UsageError(
                    "--node names a node for the client commands; `dice node` listens on --api"
                        .into(),
                )
                .into());
            }
            if given.password_on_cli {
                return Err(UsageError(
                    "--password is for the client commands; `dice node` takes --requirepass".into(),
                )
                .into());
            }
            let dir = match cli.data {
                Some(d) => d,
                None => default_data_dir()?,
            };
            node::run(&dir, args).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Keygen { file: Some(path) } => {
            dice_net::keys::write_new_cluster_key(&path)?;
            eprintln!(
                "dice: cluster key written to {} (mode 0600); start every node with --cluster-key {}",
                path.display(),
                path.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        Command::Keygen { file: None } => {
            restrict_stdout_file();
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", dice_net::keys::generate_cluster_key())?;
            out.flush()?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Put {
            key,
            value,
            file,
            ttl,
            client,
        } => {
            let value = client::read_value(value, file.as_deref())?;
            // Said before sending: past the node's limits its RESP parser would only answer
            // "invalid bulk length". Nodes run by `dice node` use the default limits.
            dice_core::Limits::default().check(key.as_bytes(), Some(&value))?;
            (client::Request::Put { key, value, ttl }, client)
        }
        Command::Get { key, raw, client } => (client::Request::Get { key, raw }, client),
        Command::Del { keys, client } => (client::Request::Del { keys }, client),
        Command::Keys { pattern, client } => (client::Request::Keys { pattern }, client),
        Command::Status { json, client } => (client::Request::Status { json }, client),
    };
    let target = client_target(cli.node, cli.password, cli.data, &given, client_args)?;
    client::run(target, request).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ttl_accepts_the_documented_forms() {
        for (s, ms) in [
            ("250ms", 250),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
        ] {
            let cli = Cli::try_parse_from(["dice", "put", "k", "v", "--ttl", s]).unwrap();
            let Command::Put { ttl, .. } = cli.command else {
                panic!("parsed into the wrong command")
            };
            assert_eq!(ttl, Some(Duration::from_millis(ms)));
        }
        assert!(Cli::try_parse_from(["dice", "put", "k", "v", "--ttl", "soon"]).is_err());
        assert!(Cli::try_parse_from(["dice", "put", "k", "v", "--ttl", "0s"]).is_err());
    }

    #[test]
    fn requirepass_and_its_file_conflict() {
        assert!(
            Cli::try_parse_from([
                "dice",
                "node",
                "--requirepass",
                "x",
                "--requirepass-file",
                "f"
            ])
            .is_err()
        );
        assert!(Cli::try_parse_from(["dice", "node", "--requirepass-file", "f"]).is_ok());
        assert!(Cli::try_parse_from(["dice", "node", "--timeout", "30"]).is_ok());
        assert!(Cli::try_parse_from(["dice", "node", "--timeout", "-1"]).is_err());
    }

    fn target(args: &[&str]) -> Result<client::Target> {
        let matches = Cli::command().try_get_matches_from(args)?;
        let given = Given::from_matches(&matches);
        let cli = Cli::from_arg_matches(&matches)?;
        let client = match cli.command {
            Command::Get { client, .. } => client,
            other => panic!("not a get: {other:?}"),
        };
        client_target(cli.node, cli.password, cli.data, &given, client)
    }

    #[test]
    fn node_and_data_on_the_command_line_are_a_usage_error() {
        for args in [
            &["dice", "--node", "h:1", "--data", "d", "get", "k"][..],
            &["dice", "--data", "d", "get", "--node", "h:1", "k"][..],
        ] {
            let e = target(args).unwrap_err();
            assert_eq!(exit_for(&e).0, 2, "{args:?}: {e:#}");
        }
    }

    #[test]
    fn client_flags_go_after_the_subcommand_or_before_it() {
        let node = |addr: &str, password: Option<&str>| client::Target::Node {
            addr: addr.into(),
            password: password.map(str::to_string),
        };
        assert_eq!(
            target(&["dice", "get", "--node", "h:1", "--password", "p", "k"]).unwrap(),
            node("h:1", Some("p"))
        );
        assert_eq!(
            target(&["dice", "--node", "h:2", "--password", "q", "get", "k"]).unwrap(),
            node("h:2", Some("q"))
        );
        // After the subcommand wins over before it.
        assert_eq!(
            target(&["dice", "--node", "h:2", "get", "--node", "h:3", "k"]).unwrap(),
            node("h:3", None)
        );
        assert_eq!(
            target(&["dice", "get", "--data", "d", "k"]).unwrap(),
            client::Target::Data {
                dir: "d".into(),
                password: None
            }
        );
    }

    #[test]
    fn client_flags_are_not_offered_to_dice_node() {
        let mut cmd = Cli::command();
        let node = cmd.find_subcommand_mut("node").unwrap();
        let help = node.render_long_help().to_string();
        assert!(!help.contains("--node"), "{help}");
        assert!(!help.contains("--password"), "{help}");
        assert!(help.contains("Examples:"), "{help}");
        let get = cmd.find_subcommand_mut("get").unwrap();
        let help = get.render_long_help().to_string();
        assert!(help.contains("--node"), "{help}");
        assert!(help.contains("--password"), "{help}");
        assert!(Cli::try_parse_from(["dice", "node", "--node", "h:1"]).is_err());
        assert!(Cli::try_parse_from(["dice", "node", "--password", "p"]).is_err());
    }

    #[test]
    fn client_flags_before_dice_node_are_refused_not_ignored() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for (flag, hint) in [("--node", "--api"), ("--password", "--requirepass")] {
            let matches = Cli::command()
                .try_get_matches_from(["dice", flag, "x", "--data", "/nonexistent/d", "node"])
                .unwrap();
            let given = Given::from_matches(&matches);
            let cli = Cli::from_arg_matches(&matches).unwrap();
            let e = rt.block_on(run(cli, given)).unwrap_err();
            assert_eq!(exit_for(&e).0, 2, "{e:#}");
            assert!(e.to_string().contains(hint), "{e:#}");
        }
    }

    #[test]
    fn every_command_has_examples() {
        let cmd = Cli::command();
        assert!(
            cmd.get_after_help()
                .is_some_and(|h| h.to_string().contains("Examples:"))
        );
        for sub in cmd.get_subcommands() {
            assert!(
                sub.get_after_help()
                    .is_some_and(|h| h.to_string().contains("Examples:")),
                "{} has no examples",
                sub.get_name()
            );
        }
    }

    #[test]
    fn an_empty_key_is_a_usage_error() {
        for args in [
            &["dice", "get", ""][..],
            &["dice", "put", "", "v"][..],
            &["dice", "del", "a", ""][..],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
            assert!(e.to_string().contains("a key cannot be empty"), "{e}");
        }
    }

    #[test]
    fn put_takes_a_value_stdin_or_a_file_but_not_two() {
        assert!(Cli::try_parse_from(["dice", "put", "k", "v"]).is_ok());
        assert!(Cli::try_parse_from(["dice", "put", "k", "-"]).is_ok());
        assert!(Cli::try_parse_from(["dice", "put", "k", "--file", "f"]).is_ok());
        assert!(Cli::try_parse_from(["dice", "put", "k"]).is_err());
        assert!(Cli::try_parse_from(["dice", "put", "k", "v", "--file", "f"]).is_err());
    }

    #[test]
    fn an_error_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused (os 111)");
        #[derive(Debug)]
        struct Repeats(std::io::Error);
        impl std::fmt::Display for Repeats {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
        impl std::error::Error for Repeats {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::new(Repeats(io)).context("cannot reach a dice node at h:1");
        assert_eq!(
            error_message(&e),
            "cannot reach a dice node at h:1: refused (os 111)"
        );
        assert_eq!(exit_for(&e), (3, Some(error_message(&e))));
    }

    #[test]
    fn exit_codes() {
        let usage = anyhow::Error::new(UsageError("no data directory at x".into()));
        assert_eq!(exit_for(&usage).0, 2);
        let pipe = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing keys");
        assert_eq!(exit_for(&pipe), (141, None));
        assert_eq!(exit_for(&anyhow::anyhow!("server error")).0, 3);
    }

    #[test]
    fn the_lone_node_bootstrap_warning_is_filtered_unless_asked_for() {
        let shown = |filter: &tracing_subscriber::EnvFilter| filter.to_string();
        assert!(shown(&log_filter(None, "info")).contains("libp2p_kad::behaviour=error"));
        assert!(shown(&log_filter(Some("debug"), "info")).contains("libp2p_kad::behaviour=error"));
        assert!(!shown(&log_filter(Some("libp2p_kad=debug"), "info")).contains("=error"));
        let empty = shown(&log_filter(Some(""), "warn"));
        assert!(empty.contains("warn") && !empty.contains("info"), "{empty}");
    }
}
