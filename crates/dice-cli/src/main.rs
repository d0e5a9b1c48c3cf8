//! `dice`: run a dice node and use its cache from the shell.
//!
//! `dice node` runs a networked node (dice-net). The other commands work on a data directory
//! directly (`--data`, default the platform's data directory) while no node holds it; talking
//! to a running node comes with the Redis-protocol port.

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use dice_core::{Cache, CacheOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// A replicated cache: an LWW-map CRDT persisted in SQLite.
#[derive(Parser, Debug)]
#[command(name = "dice", version, about, propagate_version = true)]
struct Cli {
    /// Data directory (default: $XDG_DATA_HOME/dice or ~/.local/share/dice).
    #[arg(long, global = true, env = "DICE_DATA", value_name = "DIR")]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node in the foreground until SIGINT or SIGTERM.
    Node(NodeArgs),
    /// Print a new cluster key (save it to a file for --cluster-key).
    Keygen,
    /// Store VALUE under KEY.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Expire after this long: 250ms, 30s, 5m, 1h.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// Print the value of KEY (exit 1 if absent).
    Get {
        /// The key.
        key: String,
    },
    /// Delete keys.
    Del {
        /// The keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// List keys starting with PREFIX.
    Keys {
        /// Only keys starting with this.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Show the node id, key count, digest and version vector.
    Status {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Flags of `dice node`.
#[derive(clap::Args, Debug)]
struct NodeArgs {
    /// libp2p listen address (repeatable) [default: /ip4/0.0.0.0/tcp/7380].
    #[arg(
        long,
        value_name = "MULTIADDR",
        env = "DICE_LISTEN",
        value_delimiter = ','
    )]
    listen: Vec<dice_net::Multiaddr>,
    /// Bootstrap peer, with or without /p2p/<peer id> (repeatable).
    #[arg(
        long,
        value_name = "MULTIADDR",
        env = "DICE_PEER",
        value_delimiter = ','
    )]
    peer: Vec<dice_net::Multiaddr>,
    /// Cluster name: nodes of other clusters never exchange data.
    #[arg(
        long,
        value_name = "NAME",
        env = "DICE_CLUSTER",
        default_value = "default"
    )]
    cluster: String,
    /// File holding the pre-shared cluster key (see `dice keygen`).
    #[arg(long, value_name = "FILE", env = "DICE_CLUSTER_KEY")]
    cluster_key: Option<PathBuf>,
    /// Do not discover peers with mDNS.
    #[arg(long, env = "DICE_NO_MDNS")]
    no_mdns: bool,
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
    let runtime = match tokio::runtime::Runtime::new() {
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
    let dir = match cli.data {
        Some(d) => d,
        None => default_data_dir()?,
    };
    let command = match cli.command {
        Command::Node(args) => {
            run_node(&dir, args).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Keygen => {
            println!("{}", dice_net::keys::generate_cluster_key());
            return Ok(ExitCode::SUCCESS);
        }
        other => other,
    };
    let cache = Cache::open_with(&dir, CacheOptions::default())
        .await
        .with_context(|| format!("opening {}", dir.display()))?;
    let code = match command {
        Command::Node(_) | Command::Keygen => ExitCode::SUCCESS,
        Command::Put { key, value, ttl } => {
            match ttl {
                Some(ttl) => cache.put_with_ttl(key, value, ttl).await?,
                None => cache.put(key, value).await?,
            };
            println!("OK");
            ExitCode::SUCCESS
        }
        Command::Get { key } => match cache.get(key.as_bytes()) {
            Some(v) => {
                println!("{}", String::from_utf8_lossy(&v));
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("dice: {key:?}: no such key");
                ExitCode::from(1)
            }
        },
        Command::Del { keys } => {
            let mut deleted = 0;
            for k in keys {
                deleted += usize::from(cache.delete(Bytes::from(k)).await?);
            }
            println!("{deleted}");
            ExitCode::SUCCESS
        }
        Command::Keys { prefix } => {
            for (k, _) in cache.scan_prefix(prefix.as_bytes()) {
                println!("{}", String::from_utf8_lossy(&k));
            }
            ExitCode::SUCCESS
        }
        Command::Status { json } => {
            let s = cache.stats();
            let vv: serde_json::Map<String, serde_json::Value> =
                s.vv.iter()
                    .map(|(o, seq)| (o.to_string(), seq.into()))
                    .collect();
            if json {
                let obj = serde_json::json!({
                    "node_id": s.node_id.to_string(),
                    "keys": s.keys,
                    "entries": s.entries,
                    "digest": format!("{:016x}", s.digest),
                    "vv": vv,
                    "peers": [],
                });
                println!("{obj}");
            } else {
                println!("node id:  {}", s.node_id);
                println!("data dir: {}", dir.display());
                println!(
                    "keys:     {} ({} entries with tombstones)",
                    s.keys, s.entries
                );
                println!("digest:   {:016x}", s.digest);
                for (o, seq) in s.vv.iter() {
                    println!("vv:       {o} = {seq}");
                }
            }
            ExitCode::SUCCESS
        }
    };
    cache.close().await?;
    Ok(code)
}

async fn run_node(dir: &std::path::Path, args: NodeArgs) -> Result<()> {
    let mut builder = dice_net::NodeBuilder::new(dir)
        .cluster(args.cluster)
        .mdns(!args.no_mdns);
    for addr in args.listen {
        builder = builder.listen(addr);
    }
    for addr in args.peer {
        builder = builder.peer(addr);
    }
    if let Some(path) = &args.cluster_key {
        builder = builder.cluster_key(dice_net::keys::read_cluster_key(path)?);
    }
    let node = builder
        .start()
        .await
        .with_context(|| format!("starting a node on {}", dir.display()))?;
    let status = node.status().await?;
    tracing::info!(
        peer_id = %node.peer_id(),
        node_id = %status.cache.node_id,
        keys = status.cache.keys,
        dir = %dir.display(),
        listen = ?status.listen_addrs,
        "node running; Ctrl-C to stop"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: committing pending writes, closing connections");
    node.shutdown().await?;
    Ok(())
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
    }
}
