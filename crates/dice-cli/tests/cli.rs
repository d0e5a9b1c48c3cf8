//! The `dice` binary's contract: exit codes and output.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn dice(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dice"))
        .arg("--data")
        .arg(dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn put_get_del_keys_status() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        dice(dir.path(), &["put", "elixir", "awesome sauce"])
            .status
            .success()
    );
    let out = dice(dir.path(), &["get", "elixir"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "awesome sauce\n");

    let out = dice(dir.path(), &["keys", "eli*"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "elixir\n");

    let out = dice(dir.path(), &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["keys"], 1);
    assert_eq!(status["node_id"].as_str().unwrap().len(), 16);
    assert_eq!(status["repairs"], 0);
    assert_eq!(status["repaired_entries"], 0);

    assert!(dice(dir.path(), &["del", "elixir"]).status.success());
    let out = dice(dir.path(), &["get", "elixir"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("no such key")
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        dice(dir.path(), &["put", "only-key"]).status.code(),
        Some(2)
    );
    assert_eq!(
        dice(dir.path(), &["put", "k", "v", "--ttl", "soon"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(dice(dir.path(), &["frobnicate"]).status.code(), Some(2));
}

#[test]
fn a_garbage_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dice.sqlite3"),
        b"this is not sqlite at all, no",
    )
    .unwrap();
    let out = dice(dir.path(), &["get", "k"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("is not a dice database"), "{err}");
}
