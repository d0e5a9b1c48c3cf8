//! `INFO [section ...]`: sections server, clients, memory, persistence, stats, keyspace and
//! cluster.

use super::Ctx;
use super::connection::REDIS_VERSION;
use crate::frame::{Request, write_verbatim};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

const SERVER: usize = 0;
const CLIENTS: usize = 1;
const MEMORY: usize = 2;
const KEYSPACE: usize = 3;
const CLUSTER: usize = 4;
const PERSISTENCE: usize = 5;
const STATS: usize = 6;
const SECTIONS: [&str; 7] = [
    "server",
    "clients",
    "memory",
    "keyspace",
    "cluster",
    "persistence",
    "stats",
];

pub(crate) fn info(ctx: &mut Ctx<'_>, req: Request<'_>) {
    let mut wanted = [req.len() == 1; SECTIONS.len()];
    for arg in req.args().skip(1) {
        if ["default", "all", "everything"]
            .iter()
            .any(|w| arg.eq_ignore_ascii_case(w.as_bytes()))
        {
            wanted = [true; SECTIONS.len()];
        } else if let Some(i) = SECTIONS
            .iter()
            .position(|s| arg.eq_ignore_ascii_case(s.as_bytes()))
        {
            wanted[i] = true;
        }
        // Unknown sections are ignored, as in Redis.
    }
    let mut text = String::new();
    let mut section = |name: &str, body: &dyn Fn(&mut String)| {
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        let _ = write!(text, "# {name}\r\n");
        body(&mut text);
    };
    let server = ctx.server;
    if wanted[SERVER] {
        section("Server", &|t| {
            let uptime = server.started.elapsed().as_secs();
            let _ = write!(
                t,
                "redis_version:{REDIS_VERSION}\r\n\
                 dice_version:{}\r\n\
                 redis_mode:standalone\r\n\
                 os:{} {}\r\n\
                 arch_bits:{}\r\n\
                 process_id:{}\r\n\
                 dice_node_id:{}\r\n\
                 run_id:{:040x}\r\n\
                 tcp_port:{}\r\n\
                 server_time_usec:{}\r\n\
                 uptime_in_seconds:{uptime}\r\n\
                 uptime_in_days:{}\r\n\
                 hz:10\r\n\
                 configured_hz:10\r\n\
                 executable:{}\r\n\
                 config_file:\r\n\
                 io_threads_active:0\r\n",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::env::consts::ARCH,
                usize::BITS,
                std::process::id(),
                server.cache.node_id(),
                server.run_id,
                server.port,
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros()),
                uptime / 86_400,
                std::env::current_exe()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
                    .replace(['\r', '\n'], " "),
            );
        });
    }
    if wanted[CLIENTS] {
        section("Clients", &|t| {
            let _ = write!(
                t,
                "connected_clients:{}\r\ncluster_connections:0\r\nmaxclients:{}\r\n\
                 blocked_clients:0\r\ntracking_clients:{}\r\nclients_in_timeout_table:0\r\n\
                 total_blocking_keys:0\r\n",
                server.connected_clients(),
                server.config.max_clients,
                server.tracking.clients(),
            );
        });
    }
    if wanted[MEMORY] {
        section("Memory", &|t| {
            let usage = server.cache.memory_usage();
            let limit = server.cache.memory_limit();
            let used = usage.total();
            let _ = write!(
                t,
                "used_memory:{used}\r\nused_memory_human:{}\r\n\
                 used_memory_dataset:{}\r\nused_memory_pending:{}\r\n\
                 used_memory_clients:{}\r\nused_memory_other:{}\r\n",
                human_bytes(used),
                usage.dataset,
                usage.pending,
                usage.clients,
                usage.other,
            );
            let rss = rss_bytes();
            if let Some(rss) = rss {
                let _ = write!(
                    t,
                    "used_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\n\
                     mem_fragmentation_ratio:{:.2}\r\n",
                    human_bytes(rss),
                    rss as f64 / used.max(1) as f64,
                );
            }
            // As Redis shows jemalloc's: what the program holds, the pages it is on, what is
            // resident. RSS far above `used_memory` is either uncounted allocations
            // (`allocator_allocated` high too) or pages the allocator keeps.
            if let Some(a) = server.config.allocator_stats.and_then(|read| read()) {
                let ratio = |x: usize, y: usize| x as f64 / y.max(1) as f64;
                let _ = write!(
                    t,
                    "allocator_allocated:{}\r\nallocator_active:{}\r\nallocator_resident:{}\r\n\
                     allocator_frag_ratio:{:.2}\r\nallocator_rss_ratio:{:.2}\r\n",
                    a.allocated,
                    a.active,
                    a.resident,
                    ratio(a.active, a.allocated),
                    ratio(a.resident, a.active),
                );
            }
            let max = usize::try_from(limit.max_bytes).unwrap_or(usize::MAX);
            let _ = write!(
                t,
                "maxmemory:{max}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:{}\r\n\
                 maxmemory_samples:{}\r\nevicted_keys:{}\r\n",
                human_bytes(max),
                limit.policy,
                limit.samples,
                server.cache.stats().replica.evicted_keys,
            );
            // Tombstones wait for every member to hold them (see "Eviction and the memory
            // limit" in docs/ARCHITECTURE.md); the GC counters say whether they can go.
            // Eviction leaves live keys at least half the limit whatever tombstones hold
            // (`dice_tombstones_bytes`): past that, writes are refused until they go.
            // A node over its limit with nothing left to evict says so to its members, whose
            // writes wait for it (`dice_writes_held` counts those that waited for a member).
            let (memory, stats) = server.cache.with_replica(|r| (r.memory(), r.stats()));
            let cs = server.cache.stats();
            let _ = write!(
                t,
                "dice_tombstones:{}\r\ndice_tombstones_bytes:{}\r\ndice_gc_dropped:{}\r\n\
                 dice_gc_waiting:{}\r\ndice_memory_pressed:{}\r\ndice_members_pressed:{}\r\n\
                 dice_writes_held:{}\r\n",
                memory.tombstones,
                memory.dead_bytes(),
                stats.gc_dropped,
                stats.gc_waiting,
                u8::from(cs.pressed),
                cs.members_pressed,
                cs.writes_held,
            );
        });
    }
    if wanted[PERSISTENCE] {
        section("Persistence", &|t| {
            let s = server.cache.stats();
            let _ = write!(
                t,
                "loading:0\r\n\
                 async_loading:0\r\n\
                 rdb_changes_since_last_save:{}\r\n\
                 rdb_bgsave_in_progress:0\r\n\
                 rdb_last_bgsave_status:{}\r\n\
                 aof_enabled:0\r\n\
                 aof_rewrite_in_progress:0\r\n\
                 dice_commits:{}\r\n\
                 dice_commit_failures:{}\r\n\
                 dice_pending_keys:{}\r\n\
                 dice_log_entries:{}\r\n\
                 dice_snapshots:{}\r\n\
                 dice_snapshot_cleanup_pending:{}\r\n\
                 dice_writes_refused:{}\r\n",
                s.pending_keys,
                if s.writes_refused.is_some() {
                    "err"
                } else {
                    "ok"
                },
                s.commits,
                s.commit_failures,
                s.pending_keys,
                s.log_entries,
                s.snapshots,
                u8::from(s.cleanup_pending),
                u8::from(s.writes_refused.is_some()),
            );
            if let Some(why) = &s.writes_refused {
                // One line: INFO is line-oriented.
                let why: String = why
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                let _ = write!(t, "dice_writes_refused_reason:{why}\r\n");
            }
        });
    }
    if wanted[STATS] {
        section("Stats", &|t| {
            let st = &server.stats;
            let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            let tracking = server.tracking.totals();
            let ts = &server.tracking.stats;
            let _ = write!(
                t,
                "total_connections_received:{}\r\n\
                 total_commands_processed:{}\r\n\
                 total_net_input_bytes:{}\r\n\
                 total_net_output_bytes:{}\r\n\
                 rejected_connections:{}\r\n\
                 evicted_keys:{}\r\n\
                 dice_auth_failures:{}\r\n\
                 dice_auth_disconnects:{}\r\n\
                 dice_idle_timeouts:{}\r\n\
                 dice_input_buffered_bytes:{}\r\n\
                 dice_input_budget_refusals:{}\r\n\
                 dice_output_stall_disconnects:{}\r\n\
                 pubsub_channels:{}\r\n\
                 pubsub_patterns:{}\r\n\
                 dice_pubsub_subscriptions:{}\r\n\
                 dice_pubsub_output_disconnects:{}\r\n\
                 dice_pubsub_remote_received:{}\r\n\
                 tracking_total_keys:{}\r\n\
                 tracking_total_items:{}\r\n\
                 tracking_total_prefixes:{}\r\n\
                 dice_tracking_invalidations:{}\r\n\
                 dice_tracking_evictions:{}\r\n\
                 dice_tracking_resets:{}\r\n\
                 dice_tracking_output_disconnects:{}\r\n",
                n(&st.connections_received),
                n(&st.commands_processed),
                n(&st.net_input_bytes),
                n(&st.net_output_bytes),
                n(&st.rejected_connections),
                server.cache.stats().replica.evicted_keys,
                n(&st.auth_failures),
                n(&st.auth_disconnects),
                n(&st.idle_timeouts),
                server.input_buffered(),
                n(&st.input_budget_refusals),
                n(&st.output_stalls),
                server.pubsub.channel_count(),
                server.pubsub.numpat(),
                server.pubsub.total(),
                n(&server.pubsub.output_disconnects),
                n(&server.pubsub.remote_received),
                tracking.0,
                tracking.1,
                tracking.2,
                n(&ts.messages),
                n(&ts.evictions),
                n(&ts.resets),
                n(&ts.output_disconnects),
            );
        });
    }
    if wanted[KEYSPACE] {
        section("Keyspace", &|t| {
            let now = server.cache.now_ms();
            let (keys, expires) = server
                .cache
                .with_replica(|r| (r.live_len(now), r.live_with_ttl(now)));
            if keys > 0 {
                let _ = write!(t, "db0:keys={keys},expires={expires},avg_ttl=0\r\n");
            }
        });
    }
    if wanted[CLUSTER] {
        section("Cluster", &|t| {
            t.push_str("cluster_enabled:0\r\n");
            match &server.cluster {
                Some(provider) => {
                    for line in provider.cluster_lines() {
                        t.extend(line.chars().map(|c| match c {
                            '\r' | '\n' => ' ',
                            c => c,
                        }));
                        t.push_str("\r\n");
                    }
                }
                None => {
                    let _ = write!(t, "dice_digest:{:016x}\r\n", server.cache.digest());
                }
            }
        });
    }
    // A verbatim text string in RESP3, a bulk string in RESP2 (as Redis answers).
    write_verbatim(ctx.out, "txt", text.as_bytes(), ctx.session.proto);
}

/// The process's resident set size (Linux: `/proc/self/statm`, assuming 4 KiB pages).
fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Bytes the way Redis's `INFO` shows them: `512B`, `1.50K`, `2.00M`, `3.25G`.
fn human_bytes(n: usize) -> String {
    let n = n as f64;
    const K: f64 = 1024.0;
    if n < K {
        format!("{n}B")
    } else if n < K * K {
        format!("{:.2}K", n / K)
    } else if n < K * K * K {
        format!("{:.2}M", n / (K * K))
    } else {
        format!("{:.2}G", n / (K * K * K))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_bytes() {
        assert_eq!(super::human_bytes(512), "512B");
        assert_eq!(super::human_bytes(1536), "1.50K");
        assert_eq!(super::human_bytes(3 * 1024 * 1024), "3.00M");
    }
}
