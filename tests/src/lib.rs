//! Helpers for whole-system tests: find the `dice` binary, run it in temp data dirs, and
//! stop only the processes these tests started.
//!
//! The tests in `tests/tests/` are targets of the `dice-cli` package, so Cargo builds the
//! binary before them and names it in `CARGO_BIN_EXE_dice` ([`dice_bin`]).
//!
//! [`netns`] makes test hosts out of Linux network namespaces on one bridge, for the LAN
//! tests (mDNS, partitions); it needs root.

pub mod netns;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `dice` binary under test: the one Cargo built for this test run
/// (`CARGO_BIN_EXE_dice`, set for the tests of the `dice-cli` package, which these are), or,
/// for a test executable run by hand, the `dice` next to it (`target/<profile>/dice`).
///
/// # Panics
/// If neither exists.
pub fn dice_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("CARGO_BIN_EXE_dice") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current test executable");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .join("dice");
    assert!(
        bin.exists(),
        "{} not found: run the tests with `cargo test -p dice-cli`, or build it with \
         `cargo build -p dice-cli`",
        bin.display()
    );
    bin
}

/// Runs `dice --data DIR ARGS...` to completion.
pub fn dice(dir: &Path, args: &[&str]) -> Output {
    Command::new(dice_bin())
        .arg("--data")
        .arg(dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running dice")
}

/// The command line of [`NodeProcess::start`], listening for peers on `listen` (a loopback
/// multiaddr; port 0 picks a free one), for a test to add environment variables before
/// [`NodeProcess::spawn`].
pub fn node_command(dir: &Path, listen: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(dice_bin());
    cmd.arg("--data").arg(dir).args([
        "node",
        "--listen",
        listen,
        "--api",
        "127.0.0.1:0",
        "--no-mdns",
    ]);
    cmd.args(extra);
    cmd
}

/// A `dice node` process started by a test; killed (by its own pid) when dropped.
pub struct NodeProcess {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl NodeProcess {
    /// Starts `dice --data DIR node` on loopback with mDNS off (tests send nothing beyond
    /// 127.0.0.1).
    pub fn start(dir: &Path, extra: &[&str]) -> NodeProcess {
        NodeProcess::spawn(node_command(dir, "/ip4/127.0.0.1/tcp/0", extra))
    }

    /// Starts `cmd` (a `dice node` command line, possibly behind a wrapper such as
    /// `ip netns exec` that execs it in place), with `RUST_LOG=info` unless `cmd` sets it,
    /// its stderr collected as the node's log.
    ///
    /// # Panics
    /// If the process cannot be started.
    pub fn spawn(mut cmd: Command) -> NodeProcess {
        if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting dice node ({cmd:?}): {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(mut l) = log.lock() {
                        l.push_str(&line);
                        l.push('\n');
                    }
                }
            });
        }
        NodeProcess { child, log }
    }

    /// Waits (bounded) until the node's log contains `needle`; returns the log so far.
    ///
    /// # Panics
    /// If it does not appear in time, with the log in the message.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let found = wait_for(timeout, || {
            let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
            log.contains(needle).then_some(log)
        });
        match found {
            Some(log) => log,
            None => panic!(
                "node log never showed {needle:?}; log so far:\n{}",
                self.log.lock().map(|l| l.clone()).unwrap_or_default()
            ),
        }
    }

    /// The node's log (its stderr) so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the node with SIGKILL (no shutdown at all) and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `f` every 20 ms until it returns `Some`, or gives up after `timeout`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The libp2p address (with `/p2p/<peer id>`) a node logged in its start line.
///
/// # Panics
/// If the log has no start line with a peer id and a listen address.
pub fn dial_addr(log: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains("node running"))
        .expect("start line");
    let peer = line
        .split("peer_id=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("peer_id in the start line");
    let addr = line
        .split("listen=[")
        .nth(1)
        .and_then(|s| s.split([',', ']']).next())
        .expect("listen addresses in the start line");
    format!("{}/p2p/{peer}", addr.trim())
}

/// The API (Redis-protocol) address a node logged in its start line: with `--api
/// 127.0.0.1:0`, each start of a node on one data dir gets a new one (and the `api.addr`
/// file a SIGKILLed node leaves behind names the dead one).
///
/// # Panics
/// If the log has no start line with an API address.
pub fn api_addr(log: &str) -> std::net::SocketAddr {
    log.lines()
        .find(|l| l.contains("node running"))
        .and_then(|l| l.split(" api=").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("api=<address> in the start line")
}
