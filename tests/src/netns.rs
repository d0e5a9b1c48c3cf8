//! A LAN of test hosts made of Linux network namespaces, for whole-system tests of mDNS
//! discovery, partitions and strangers with real `dice node` processes.
//!
//! A [`Lan`] creates one namespace per host and one for a bridge (`br0`); each host is joined
//! to the bridge by a veth pair (`eth0` in the host, `h<i>` on the bridge) and gets the
//! address `10.77.0.<i+1>/24`. Those addresses exist only inside these namespaces: nothing
//! is routed to or from the namespace the tests run in. Multicast snooping is off on the
//! bridge and each host routes `224.0.0.0/4` through `eth0`, so mDNS (224.0.0.251) reaches
//! every host on the bridge. Every node listens on `/ip4/0.0.0.0/tcp/7380` with its API on
//! the namespace's own `127.0.0.1:7379`, started by `ip netns exec NS dice ...` with no
//! `--peer`: discovery is mDNS alone.
//!
//! Names are `dicelan-<pid>-<run>-<host>`, unique per process and per [`Lan`]. Dropping a
//! [`Lan`] (also when a test panics) kills the nodes it started, by their pids, and deletes
//! its namespaces, which removes the bridge and the veth pairs with them. The first [`Lan`]
//! of a process also removes what earlier, interrupted runs left: namespaces with this
//! prefix whose pid no longer exists (after killing, by pid, the processes still in them).
//!
//! Creating namespaces needs root (`CAP_SYS_ADMIN`, `CAP_NET_ADMIN`) and iproute2's `ip`;
//! without them [`Lan::new`] panics with a message saying so. It never skips.
//!
//! [`Lan::add_network`] adds a second bridge (`br1`, hosts `10.77.1.<i+1>/24`) joined to the
//! first by a router namespace (`10.77.0.254` and `10.77.1.254`) that forwards unicast only:
//! no multicast crosses it, so mDNS finds only the hosts of one's own network, as on two
//! subnets of a real site. [`Lan::cut_router`] partitions the two networks.
//!
//! [`Lan`]s of one process run one at a time (each holds a process-wide lock), so that the
//! timings the tests print are not skewed by another LAN's load.

use crate::{NodeProcess, dice_bin, wait_for};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

/// Prefix of every namespace this harness creates.
pub const PREFIX: &str = "dicelan-";
/// The API address of every node, on its own namespace's loopback.
pub const API: &str = "127.0.0.1:7379";
/// The libp2p listen address of every node.
pub const LISTEN: &str = "/ip4/0.0.0.0/tcp/7380";
/// The bridge inside the bridge namespace.
const BRIDGE: &str = "br0";

/// Runs `ip ARGS`; its stdout, or a message with its stderr.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `ip ARGS`, panicking with its error.
fn ip_ok(args: &[&str]) -> String {
    ip(args).unwrap_or_else(|e| panic!("setting up the test LAN: {e}"))
}

/// The name of the filler file [`Lan::fill_disk`] writes in a data dir.
const FILLER: &str = "nemesis-filler";

/// Runs `cmd` to completion; an error with its stderr if it fails.
fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `cmd`, panicking with its error.
fn run_ok(cmd: &mut Command) {
    run(cmd).unwrap_or_else(|e| panic!("setting up the test LAN: {e}"));
}

/// Whether `path` is a mount point (listed in `/proc/self/mounts`).
fn is_mount_point(path: &Path) -> bool {
    let path = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split_whitespace().nth(1) == Some(path.as_ref()))
    })
}

/// libfaketime's preload library, from Debian's `faketime` package.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The environment that runs a process with its wall clock shifted by `offset` (libfaketime
/// syntax: `"+1h"`, `"-30m"`), for [`Lan::start_env`]. Monotonic clocks are left alone.
///
/// # Panics
/// If libfaketime is not installed (`apt-get install faketime`), saying so.
pub fn faketime_env(offset: &str) -> Vec<(&'static str, String)> {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} not found: clock skew tests need libfaketime (apt-get install faketime)"
    );
    vec![
        ("LD_PRELOAD", LIBFAKETIME.to_string()),
        ("FAKETIME", offset.to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
        ("FAKETIME_NO_CACHE", "1".to_string()),
    ]
}

/// The network namespaces that exist (`ip netns list`), by name.
fn netns_list() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Removes what earlier runs of this harness left behind (their pid no longer exists): kills,
/// by pid, the processes still inside their namespaces, deletes the namespaces, and removes
/// their hosts' data dirs. Returns the names removed.
pub fn remove_leftovers() -> Vec<String> {
    let mut removed = Vec::new();
    for name in netns_list() {
        match owner_pid(&name) {
            Some(pid) if !alive(pid) => {}
            _ => continue, // not ours, or a live run (maybe another test process) owns it
        }
        for pid in ip(&["netns", "pids", &name])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        match ip(&["netns", "del", &name]) {
            Ok(_) => removed.push(name),
            Err(e) => eprintln!("lan: could not remove leftover namespace: {e}"),
        }
    }
    // The hosts' data dirs (`<namespace>-XXXXXX` in the temp dir).
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if owner_pid(&name).is_some_and(|pid| !alive(pid)) {
                if is_mount_point(&entry.path())
                    && let Err(e) = run(Command::new("umount").arg(entry.path()))
                {
                    eprintln!("lan: {e}");
                }
                match std::fs::remove_dir_all(entry.path()) {
                    Ok(()) => removed.push(entry.path().display().to_string()),
                    Err(e) => eprintln!("lan: could not remove {}: {e}", entry.path().display()),
                }
            }
        }
    }
    removed
}

/// The pid in a name of this harness (`dicelan-<pid>-...`).
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Whether process `pid` exists.
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Makes the calling thread enter network namespace `ns` (sockets it opens afterwards live
/// there, and stay there when handed to other threads). Call it only on a thread of your own.
///
/// # Panics
/// If the namespace cannot be entered.
pub fn enter_netns(ns: &str) {
    let path = format!("/var/run/netns/{ns}");
    let file =
        std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path} to enter it: {e}"));
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("entering network namespace {ns}: {e}"));
}

/// Runs `f` on a new thread inside network namespace `ns` and returns its result.
///
/// # Panics
/// If the namespace cannot be entered, or `f` panics.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(ns);
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Opens a Redis-protocol connection to the node API of the namespace the calling thread is
/// in, with 20 s read and write timeouts.
pub fn connect_api() -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://{API}/"))?;
    let conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    conn.set_write_timeout(Some(Duration::from_secs(20)))?;
    Ok(conn)
}

/// Writes every `(key, value)` with `SET`, pipelined `batch` commands at a time; the number
/// acknowledged before the first error (all of them on success).
pub fn set_pipelined(
    conn: &mut redis::Connection,
    pairs: &[(String, String)],
    batch: usize,
) -> Result<usize, (usize, redis::RedisError)> {
    let mut acked = 0;
    for chunk in pairs.chunks(batch.max(1)) {
        let mut pipe = redis::pipe();
        for (k, v) in chunk {
            pipe.cmd("SET").arg(k).arg(v);
        }
        match pipe.query::<Vec<String>>(conn) {
            Ok(_) => acked += chunk.len(),
            Err(e) => return Err((acked, e)),
        }
    }
    Ok(acked)
}

/// Reads `keys` with `MGET`, 500 at a time.
///
/// # Panics
/// On an error from the node.
pub fn mget(conn: &mut redis::Connection, keys: &[String]) -> Vec<Option<String>> {
    let mut values = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        let part: Vec<Option<String>> = redis::cmd("MGET")
            .arg(chunk)
            .query(conn)
            .expect("MGET on a node");
        values.extend(part);
    }
    values
}

/// One test host: a network namespace, its address on the bridge, a data directory, and the
/// node running there if any.
pub struct Host {
    ns: String,
    addr: Ipv4Addr,
    port: String,
    dir: tempfile::TempDir,
    node: Option<NodeProcess>,
    /// Logs of earlier (killed or stopped) node processes on this host.
    old_logs: String,
    /// Whether a tmpfs is mounted on the data directory (unmounted on drop).
    tmpfs: bool,
    /// Hosts this one's packets to are dropped (blackhole routes), see [`Lan::block_outbound`].
    blocked: Vec<usize>,
}

impl Host {
    /// The namespace's name.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The host's address on the bridge.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The node's data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Serializes [`Lan`]s inside one test process.
static SERIAL: Mutex<()> = Mutex::new(());
/// Counts [`Lan`]s of this process, for unique names.
static RUNS: AtomicUsize = AtomicUsize::new(0);
/// Leftovers are removed once per process.
static CLEAN: Once = Once::new();

/// Hosts on one bridge, each in its own network namespace. See the [module](self) docs.
pub struct Lan {
    name: String,
    bridge_ns: String,
    /// The router between the networks, once [`Lan::add_network`] made a second one.
    router_ns: Option<String>,
    hosts: Vec<Host>,
    /// Namespaces created so far, deleted on drop.
    created: Vec<String>,
    _serial: MutexGuard<'static, ()>,
}

/// Whether the LAN tests run. They need root and iproute2. `DICE_LAN_TESTS=require` runs them
/// whatever the user (and they fail without root: CI sets it, so they never skip there);
/// `DICE_LAN_TESTS=0` skips them; unset, they run as root and are skipped, saying so, for
/// other users (so `cargo test --workspace` passes for a user who is not root).
pub fn lan_tests_enabled(test: &str) -> bool {
    match std::env::var("DICE_LAN_TESTS").as_deref() {
        Ok("require" | "1") => true,
        Ok("0" | "skip") => {
            eprintln!("{test}: SKIPPED (DICE_LAN_TESTS=0)");
            false
        }
        _ if running_as_root() => true,
        _ => {
            eprintln!(
                "{test}: SKIPPED: the LAN tests need root (network namespaces); run them as \
                 root, or set DICE_LAN_TESTS=require to fail instead of skipping"
            );
            false
        }
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

impl Lan {
    /// A bridge and `hosts` hosts on it (no nodes started yet).
    ///
    /// # Panics
    /// If namespaces cannot be created (not root, no `ip`), with a message saying so.
    pub fn new(hosts: usize) -> Lan {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        CLEAN.call_once(|| {
            let removed = remove_leftovers();
            if !removed.is_empty() {
                eprintln!("lan: removed leftovers of earlier runs: {removed:?}");
            }
        });
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        );
        let mut lan = Lan {
            bridge_ns: format!("{name}-br"),
            router_ns: None,
            name,
            hosts: Vec::new(),
            created: Vec::new(),
            _serial: serial,
        };
        let bridge_ns = lan.bridge_ns.clone();
        lan.add_netns(&bridge_ns);
        ip_ok(&["-n", &bridge_ns, "link", "set", "lo", "up"]);
        ip_ok(&["-n", &bridge_ns, "link", "add", BRIDGE, "type", "bridge"]);
        // Forward multicast to every port whether or not anyone joined with IGMP.
        ip_ok(&[
            "-n",
            &bridge_ns,
            "link",
            "set",
            BRIDGE,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip_ok(&["-n", &bridge_ns, "link", "set", BRIDGE, "up"]);
        for _ in 0..hosts {
            lan.add_host();
        }
        lan
    }

    /// Creates namespace `ns`, recording it for removal.
    fn add_netns(&mut self, ns: &str) {
        if let Err(e) = ip(&["netns", "add", ns]) {
            panic!(
                "cannot create network namespace {ns}: {e}\n\
                 These LAN tests need root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's \
                 `ip` (apt-get install iproute2). They do not skip: run them as root."
            );
        }
        self.created.push(ns.to_string());
    }

    /// Adds a host on the (first) bridge; its index.
    ///
    /// # Panics
    /// If its namespace or links cannot be set up.
    pub fn add_host(&mut self) -> usize {
        self.add_host_on(0)
    }

    /// Adds a second network, `br1` (`10.77.1.0/24`), and a router namespace joining it to
    /// the first; hosts of either network reach the other's through it, unicast only.
    /// Add hosts to it with [`Lan::add_host_on`]`(1)`.
    ///
    /// # Panics
    /// If it exists already, or a namespace or link cannot be set up.
    pub fn add_network(&mut self) {
        assert!(
            self.router_ns.is_none(),
            "this LAN has two networks already"
        );
        let br = self.bridge_ns.clone();
        ip_ok(&["-n", &br, "link", "add", "br1", "type", "bridge"]);
        ip_ok(&["-n", &br, "link", "set", "br1", "up"]);
        let router = format!("{}-rt", self.name);
        self.add_netns(&router);
        ip_ok(&["-n", &router, "link", "set", "lo", "up"]);
        for net in 0..2u8 {
            let (port, inside) = (format!("rt{net}"), format!("eth{net}"));
            ip_ok(&[
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", &inside, "netns",
                &router,
            ]);
            ip_ok(&[
                "-n",
                &br,
                "link",
                "set",
                &port,
                "master",
                &format!("br{net}"),
            ]);
            ip_ok(&["-n", &br, "link", "set", &port, "up"]);
            ip_ok(&[
                "-n",
                &router,
                "addr",
                "add",
                &format!("10.77.{net}.254/24"),
                "dev",
                &inside,
            ]);
            ip_ok(&["-n", &router, "link", "set", &inside, "up"]);
        }
        run_ok(Command::new("ip").args([
            "netns",
            "exec",
            &router,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_forward=1",
        ]));
        self.router_ns = Some(router);
        for i in 0..self.hosts.len() {
            self.route_to_other_network(i);
        }
    }

    /// Gives host `i` a route to the other network through the router.
    fn route_to_other_network(&self, i: usize) {
        let host = &self.hosts[i];
        let net = host.addr.octets()[2];
        ip_ok(&[
            "-n",
            &host.ns,
            "route",
            "add",
            &format!("10.77.{}.0/24", 1 - net),
            "via",
            &format!("10.77.{net}.254"),
        ]);
    }

    /// Partitions the two networks: the router's links go down (hosts of one network still
    /// reach each other).
    ///
    /// # Panics
    /// Without a second network.
    pub fn cut_router(&self) {
        self.set_router("down");
    }

    /// Joins the two networks again.
    ///
    /// # Panics
    /// Without a second network.
    pub fn heal_router(&self) {
        self.set_router("up");
    }

    fn set_router(&self, state: &str) {
        let router = self
            .router_ns
            .as_ref()
            .expect("a second network (add_network)");
        for inside in ["eth0", "eth1"] {
            ip_ok(&["-n", router, "link", "set", inside, state]);
        }
    }

    /// Adds a host on network `net` (0, or 1 after [`Lan::add_network`]); its index.
    ///
    /// # Panics
    /// If `net` does not exist, or its namespace or links cannot be set up.
    pub fn add_host_on(&mut self, net: u8) -> usize {
        assert!(
            net == 0 || (net == 1 && self.router_ns.is_some()),
            "no network {net} (add_network makes network 1)"
        );
        let i = self.hosts.len();
        assert!(i < 250, "at most 250 hosts on one test LAN");
        let ns = format!("{}-h{i}", self.name);
        let port = format!("h{i}");
        let addr = Ipv4Addr::new(10, 77, net, i as u8 + 1);
        self.add_netns(&ns);
        let br = self.bridge_ns.clone();
        ip_ok(&[
            "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        let bridge = if net == 0 { BRIDGE } else { "br1" };
        ip_ok(&["-n", &br, "link", "set", &port, "master", bridge]);
        ip_ok(&["-n", &br, "link", "set", &port, "up"]);
        ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);
        ip_ok(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        ip_ok(&["-n", &ns, "link", "set", "eth0", "multicast", "on", "up"]);
        // mDNS sends to 224.0.0.251: give multicast a route (there is no default route).
        ip_ok(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"]);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{ns}-"))
            .tempdir()
            .expect("a temp data dir");
        self.hosts.push(Host {
            ns,
            addr,
            port,
            dir,
            node: None,
            old_logs: String::new(),
            tmpfs: false,
            blocked: Vec::new(),
        });
        if self.router_ns.is_some() {
            self.route_to_other_network(i);
        }
        i
    }

    /// Gives host `i` one more address on its bridge port, e.g. one outside the private
    /// ranges (`198.51.100.1/24`, a documentation range) to play a host beyond the LAN.
    /// It exists only inside this LAN's namespaces.
    pub fn add_address(&self, i: usize, cidr: &str) {
        ip_ok(&["-n", &self.hosts[i].ns, "addr", "add", cidr, "dev", "eth0"]);
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// The number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether the LAN has no hosts.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Starts `dice --data DIR node --listen /ip4/0.0.0.0/tcp/7380 --api 127.0.0.1:7379
    /// EXTRA...` in host `i` (mDNS on, no `--peer`) and waits until it runs; returns how long
    /// that took.
    ///
    /// # Panics
    /// If a node already runs there, or it does not start within 30 s (with its log).
    pub fn start(&mut self, i: usize, extra: &[&str]) -> Duration {
        self.start_env(i, extra, &[])
    }

    /// [`Lan::start`] with environment variables `env` set for the node: e.g. libfaketime's
    /// `LD_PRELOAD` and `FAKETIME`, to run it with a skewed clock (see [`faketime_env`]).
    ///
    /// # Panics
    /// As [`Lan::start`].
    pub fn start_env(&mut self, i: usize, extra: &[&str], env: &[(&str, &str)]) -> Duration {
        let t0 = Instant::now();
        let host = &mut self.hosts[i];
        assert!(host.node.is_none(), "a node already runs on host {i}");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.ns]);
        if !env.is_empty() {
            // Through `env`, which execs the node in place: only the node gets them (not
            // `ip`), and its pid is still the one `kill` signals.
            cmd.arg("env");
            cmd.args(env.iter().map(|(k, v)| format!("{k}={v}")));
        }
        cmd.arg(dice_bin())
            .arg("--data")
            .arg(host.dir.path())
            .args(["node", "--listen", LISTEN, "--api", API])
            .args(extra);
        let mut node = NodeProcess::spawn(cmd);
        let ran = wait_for(Duration::from_secs(30), || {
            if node.log().contains("node running") {
                return Some(true);
            }
            node.exited().then_some(false)
        });
        if ran != Some(true) {
            panic!(
                "the node on host {i} ({}) did not start{}; its log:\n{}",
                host.ns,
                if ran.is_none() {
                    " within 30 s"
                } else {
                    ": it exited"
                },
                node.log()
            );
        }
        // `ip netns exec` execs the node in place: its pid is the node's, which is what
        // `kill` and drop signal.
        let comm =
            std::fs::read_to_string(format!("/proc/{}/comm", node.pid())).unwrap_or_default();
        assert_eq!(
            comm.trim(),
            "dice",
            "pid {} is not the dice node itself",
            node.pid()
        );
        host.node = Some(node);
        t0.elapsed()
    }

    /// Kills host `i`'s node with SIGKILL (by its pid) and reaps it.
    ///
    /// # Panics
    /// If no node runs there.
    pub fn kill(&mut self, i: usize) {
        let host = &mut self.hosts[i];
        let node = host.node.take().expect("a node to kill");
        host.old_logs.push_str(&node.log());
        host.old_logs.push_str("---- SIGKILL ----\n");
        node.kill();
    }

    /// The log of host `i`'s node (earlier processes' logs first).
    pub fn log(&self, i: usize) -> String {
        let host = &self.hosts[i];
        let mut log = host.old_logs.clone();
        if let Some(node) = &host.node {
            log.push_str(&node.log());
        }
        log
    }

    /// The pid of host `i`'s node.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.hosts[i].node.as_ref().map(NodeProcess::pid)
    }

    /// Runs `dice --node 127.0.0.1:7379 ARGS...` inside host `i`.
    pub fn dice(&self, i: usize, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.hosts[i].ns])
            .arg(dice_bin())
            .args(["--node", API])
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("running ip netns exec dice")
    }

    /// `dice put KEY VALUE` on host `i`.
    ///
    /// # Panics
    /// If it fails.
    pub fn put(&self, i: usize, key: &str, value: &str) {
        let out = self.dice(i, &["put", key, value]);
        assert!(
            out.status.success(),
            "dice put {key} on host {i} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `dice get KEY` on host `i`: the value, or `None` if absent.
    ///
    /// # Panics
    /// If the command fails otherwise (exit status other than 0 and 1).
    pub fn get(&self, i: usize, key: &str) -> Option<String> {
        let out = self.dice(i, &["get", key]);
        match out.status.code() {
            Some(0) => Some(
                String::from_utf8_lossy(&out.stdout)
                    .trim_end_matches('\n')
                    .to_string(),
            ),
            Some(1) => None,
            _ => panic!(
                "dice get {key} on host {i} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// `dice status --json` on host `i`.
    ///
    /// # Panics
    /// If it fails or prints something else than JSON.
    pub fn status(&self, i: usize) -> serde_json::Value {
        let out = self.dice(i, &["status", "--json"]);
        assert!(
            out.status.success(),
            "dice status on host {i} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "dice status --json on host {i} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// The peer ids host `i`'s node is connected to, from `dice status --json`.
    pub fn connected_peers(&self, i: usize) -> Vec<String> {
        connected_peers(&self.status(i))
    }

    /// Polls until every host in `hosts` is connected to all the others; how long it took.
    pub fn wait_mesh(&self, hosts: &[usize], timeout: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        let ids: HashMap<usize, String> = hosts
            .iter()
            .map(|&i| {
                (
                    i,
                    self.status(i)["peer_id"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        wait_for(timeout, || {
            hosts
                .iter()
                .all(|&i| {
                    let peers = self.connected_peers(i);
                    hosts
                        .iter()
                        .filter(|&&j| j != i)
                        .all(|j| peers.contains(&ids[j]))
                })
                .then(|| t0.elapsed())
        })
    }

    /// Polls `dice status --json` on `hosts` until they all show the same digest and key
    /// count; that digest and how long it took.
    pub fn wait_converged(&self, hosts: &[usize], timeout: Duration) -> Option<(String, Duration)> {
        let t0 = Instant::now();
        wait_for(timeout, || {
            let states: Vec<(String, u64)> = hosts
                .iter()
                .map(|&i| {
                    let s = self.status(i);
                    (
                        s["digest"].as_str().unwrap_or("").to_string(),
                        s["keys"].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            let first = states.first()?.clone();
            states
                .iter()
                .all(|s| *s == first)
                .then(|| (first.0, t0.elapsed()))
        })
    }

    /// A Redis-protocol connection to host `i`'s node API (opened from inside its namespace;
    /// usable from any thread).
    ///
    /// # Panics
    /// If it cannot connect.
    pub fn connect(&self, i: usize) -> redis::Connection {
        in_netns(&self.hosts[i].ns, connect_api)
            .unwrap_or_else(|e| panic!("connecting to the API of host {i}: {e}"))
    }

    /// Cuts host `i` off the LAN: its bridge port goes down (the host sees no carrier).
    pub fn cut(&self, i: usize) {
        self.set_port(i, "down");
    }

    /// Puts host `i` back on the LAN.
    pub fn heal(&self, i: usize) {
        self.set_port(i, "up");
    }

    /// Sets host `i`'s bridge port `up` or `down`.
    fn set_port(&self, i: usize, state: &str) {
        let port = &self.hosts[i].port;
        ip_ok(&["-n", &self.bridge_ns, "link", "set", port, state]);
    }

    /// Mounts a tmpfs of `size` (e.g. `"32m"`) on host `i`'s data directory, so that a test
    /// can fill it ([`Lan::fill_disk`]). Call it before starting a node there. It is
    /// unmounted when the [`Lan`] is dropped, after its nodes are killed.
    ///
    /// # Panics
    /// If it cannot be mounted (not root), or the directory is not empty.
    pub fn mount_tmpfs(&mut self, i: usize, size: &str) {
        let host = &mut self.hosts[i];
        assert!(
            host.node.is_none(),
            "mount a tmpfs on host {i} before starting its node"
        );
        assert!(
            !host.tmpfs,
            "a tmpfs is already mounted on host {i}'s data dir"
        );
        let dir = host.dir.path().to_path_buf();
        assert!(
            std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_none()),
            "{} is not empty",
            dir.display()
        );
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
                .arg("tmpfs")
                .arg(&dir),
        );
        host.tmpfs = true;
    }

    /// Fills host `i`'s tmpfs data dir to the last byte with a filler file; the bytes written.
    ///
    /// # Panics
    /// If no tmpfs is mounted there, or the filler cannot be written for another reason than
    /// a full disk.
    pub fn fill_disk(&self, i: usize) -> u64 {
        use std::io::Write;
        let host = &self.hosts[i];
        assert!(
            host.tmpfs,
            "fill_disk needs a tmpfs on host {i} (mount_tmpfs)"
        );
        let path = host.dir.path().join(FILLER);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        let chunk = vec![0xa5u8; 64 * 1024];
        let mut written = 0u64;
        // Big chunks, then smaller ones, down to single bytes: the disk ends up full.
        for size in [chunk.len(), 4096, 512, 1] {
            loop {
                match file.write(&chunk[..size]) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                    Err(e) => panic!("filling {}: {e}", path.display()),
                }
            }
        }
        written
    }

    /// Deletes host `i`'s filler file (see [`Lan::fill_disk`]), if any.
    pub fn free_disk(&self, i: usize) {
        let path = self.hosts[i].dir.path().join(FILLER);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing {}: {e}", path.display()),
        }
    }

    /// A one-way partition: packets from host `i` to each host of `to` are dropped
    /// (blackhole routes in `i`'s namespace); packets the other way still arrive.
    /// [`Lan::unblock_outbound`] removes them.
    pub fn block_outbound(&mut self, i: usize, to: &[usize]) {
        for &j in to {
            if j == i || self.hosts[i].blocked.contains(&j) {
                continue;
            }
            let dst = format!("{}/32", self.hosts[j].addr);
            ip_ok(&["-n", &self.hosts[i].ns, "route", "add", "blackhole", &dst]);
            self.hosts[i].blocked.push(j);
        }
    }

    /// Removes host `i`'s one-way partitions (see [`Lan::block_outbound`]).
    pub fn unblock_outbound(&mut self, i: usize) {
        for j in std::mem::take(&mut self.hosts[i].blocked) {
            let dst = format!("{}/32", self.hosts[j].addr);
            ip_ok(&["-n", &self.hosts[i].ns, "route", "del", "blackhole", &dst]);
        }
    }
}

/// The peer ids a `dice status --json` shows as connected.
pub fn connected_peers(status: &serde_json::Value) -> Vec<String> {
    status["peers"]
        .as_array()
        .map(|peers| {
            peers
                .iter()
                .filter(|p| p["connected"] == 1)
                .filter_map(|p| p["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes a new cluster key (`dice keygen`) to `path`.
///
/// # Panics
/// If `dice keygen` fails.
pub fn keygen(path: &Path) {
    let out = Command::new(dice_bin())
        .arg("keygen")
        .arg(path)
        .output()
        .expect("running dice keygen");
    assert!(
        out.status.success(),
        "dice keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Lan {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for (i, host) in self.hosts.iter_mut().enumerate() {
            if let Some(node) = host.node.take() {
                if panicking {
                    let log = format!("{}{}", host.old_logs, node.log());
                    let lines: Vec<&str> = log.lines().collect();
                    // DICE_TEST_LOG_LINES: more of it (with RUST_LOG=debug, say).
                    let keep = std::env::var("DICE_TEST_LOG_LINES")
                        .ok()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(40);
                    let tail = &lines[lines.len().saturating_sub(keep)..];
                    eprintln!(
                        "---- last lines of the log of host {i} ({}) ----\n{}",
                        host.ns,
                        tail.join("\n")
                    );
                }
                node.kill(); // by its pid: `ip netns exec` execs the node in place
            }
        }
        for host in &mut self.hosts {
            if host.tmpfs {
                if let Err(e) = run(Command::new("umount").arg(host.dir.path())) {
                    eprintln!("lan: {e}");
                }
                host.tmpfs = false;
            }
        }
        for ns in self.created.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("lan: {e}");
            }
        }
    }
}
