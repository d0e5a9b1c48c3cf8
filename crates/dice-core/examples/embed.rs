//! Embedding dice-core: a local persistent LWW cache in your own program.
//!
//! Run with `cargo run -p dice-core --example embed`: the cache lives in `dice-embed` under
//! the system temp dir (printed; run it again and the data is still there), or in the
//! directory given as the first argument: `cargo run -p dice-core --example embed -- DIR`.

use dice_core::{Cache, CacheOptions, Durability};
use std::time::Duration;

#[tokio::main]
async fn main() -> dice_core::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("dice-embed"));
    println!("data directory: {}", dir.display());
    let options = CacheOptions::default().with_durability(Durability::Fsync);
    let cache = Cache::open_with(&dir, options).await?;

    // Watch changes (local writes, and remote ones once a node syncs this cache).
    let mut changes = cache.subscribe();
    let watcher = tokio::spawn(async move {
        while let Ok(event) = changes.recv().await {
            println!(
                "changed: {} = {:?} ({:?})",
                String::from_utf8_lossy(&event.key),
                event.value.as_deref().map(String::from_utf8_lossy),
                event.source
            );
        }
    });

    cache.put("elixir", "awesome sauce").await?;
    cache
        .put_with_ttl("session:42", "alice", Duration::from_secs(30))
        .await?;
    if let Some(v) = cache.get(b"elixir") {
        println!("elixir = {}", String::from_utf8_lossy(&v));
    }
    for (k, v) in cache.scan_prefix(b"session:") {
        println!(
            "{} = {}",
            String::from_utf8_lossy(&k),
            String::from_utf8_lossy(&v)
        );
    }
    let stats = cache.stats();
    println!(
        "node {} holds {} keys, digest {:016x}",
        stats.node_id, stats.keys, stats.digest
    );
    cache.close().await?;
    watcher.await.ok();
    Ok(())
}
