//! Embedding a full dice cluster node in a Rust program.
//!
//! Start two in two shells (each prints its address):
//!
//! ```text
//! cargo run -p dice-net --example cluster_node -- /tmp/dice-a
//! cargo run -p dice-net --example cluster_node -- /tmp/dice-b /ip4/127.0.0.1/tcp/<port>/p2p/<id>
//! ```
//!
//! Each writes a key named after its peer id every two seconds and prints what it holds,
//! until Ctrl-C (or SIGTERM), then shuts down cleanly. With no arguments the data directory
//! is `dice-node-<pid>` under the system temp dir (printed).

use dice_net::{Multiaddr, NodeBuilder};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("dice-node-{}", std::process::id())));
    println!("data directory: {}", dir.display());
    let mut builder = NodeBuilder::new(dir)
        .listen("/ip4/127.0.0.1/tcp/0".parse()?)
        .mdns(false);
    for peer in args {
        builder = builder.peer(peer.parse::<Multiaddr>()?);
    }
    let node = builder.start().await?;
    let status = node.status().await?;
    for addr in &status.listen_addrs {
        println!("listening on {addr}/p2p/{}", node.peer_id());
    }

    let me = node.peer_id().to_string();
    let mut ticks = tokio::time::interval(Duration::from_secs(2));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut round = 0u64;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            r = tokio::signal::ctrl_c() => {
                r?;
                break;
            }
            _ = term.recv() => break,
        }
        node.put(format!("hello-from-{me}"), format!("round {round}"))
            .await?;
        round += 1;
        let status = node.status().await?;
        println!(
            "{} keys, digest {:016x}, {} peers connected",
            status.cache.keys,
            status.cache.digest,
            status.peers.iter().filter(|p| p.connected).count()
        );
    }
    println!("shutting down");
    node.shutdown().await?;
    Ok(())
}
