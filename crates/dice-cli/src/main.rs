//! `dice`: run a dice node, and use a node's cache from the shell.
//!
//! `dice node` runs a networked node (dice-net) with a Redis-protocol port (dice-resp).
//! `put/get/del/keys/status` talk to a node over that port: `--node HOST:PORT`, or
//! `--data DIR` (the node running on that data directory, found through the API address it
//! writes there), or `127.0.0.1:7379`. With `--data DIR` and no node running on it, they
//! open the directory directly.

mod client;
mod node;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
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
#[command(name = "dice", version, about, propagate_version = true)]
struct Cli {
    /// Data directory (default: $XDG_DATA_HOME/dice or ~/.local/share/dice).
    #[arg(long, global = true, env = "DICE_DATA", value_name = "DIR")]
    data: Option<PathBuf>,
    /// A running node's API address, for put/get/del/keys/status [default: 127.0.0.1:7379].
    #[arg(
        long,
        global = true,
        env = "DICE_NODE",
        value_name = "HOST:PORT",
        conflicts_with = "data"
    )]
    node: Option<String>,
    /// Password of the node's API (its --requirepass).
    #[arg(
        long,
        global = true,
        env = "DICE_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node in the foreground until SIGINT or SIGTERM.
    Node(node::NodeArgs),
    /// Store VALUE under KEY.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Expire after this long: 250ms, 30s, 5m, 1h.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
    },
    /// Print the value of KEY (exit 1 if absent).
    Get {
        /// The key.
        key: String,
    },
    /// Delete keys; prints how many were present.
    Del {
        /// The keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// List keys matching PATTERN (Redis glob: *, ?, [abc]).
    Keys {
        /// The pattern.
        #[arg(default_value = "*")]
        pattern: String,
    },
    /// Show the node id, key count, digest and peers.
    Status {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Make a new cluster key for --cluster-key: written to FILE (created 0600, never
    /// overwritten), or printed (a file that stdout is redirected to is made 0600).
    Keygen {
        /// Where to write the key.
        file: Option<PathBuf>,
    },
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
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
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dice: {e:#}");
            ExitCode::from(3)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Node(args) => {
            let dir = match cli.data {
                Some(d) => d,
                None => default_data_dir()?,
            };
            node::run(&dir, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { file: Some(path) } => {
            dice_net::keys::write_new_cluster_key(&path)?;
            eprintln!(
                "dice: cluster key written to {} (mode 0600); start every node with --cluster-key {}",
                path.display(),
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { file: None } => {
            restrict_stdout_file();
            println!("{}", dice_net::keys::generate_cluster_key());
            Ok(ExitCode::SUCCESS)
        }
        command => {
            let target = client::Target::resolve(cli.node, cli.data, cli.password)?;
            client::run(target, command).await
        }
    }
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

    #[test]
    fn node_and_data_conflict() {
        assert!(Cli::try_parse_from(["dice", "--node", "h:1", "--data", "d", "get", "k"]).is_err());
    }
}
