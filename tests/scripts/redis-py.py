"""redis-py (8 or later, default settings) against a running dice node.

Runs the same checks with the client's default protocol (RESP3: redis-py 8 opens every
connection with HELLO 3) and with protocol=2: strings, misses, TTLs, a non-transactional
pipeline, keys and scans, INFO, and error replies. Exits non-zero on the first failure.

Usage: python3 redis-py.py HOST PORT PASSWORD   (see redis-py.sh, which starts a node)
"""

import sys
import time

import redis


def check(what, expected, got):
    if expected != got:
        raise AssertionError(f"{what}: expected {expected!r}, got {got!r}")
    print(f"ok   {what}")


def check_true(what, cond, detail=""):
    if not cond:
        raise AssertionError(f"{what}: {detail}")
    print(f"ok   {what}")


def expect_error(what, fn, error_type, text):
    try:
        got = fn()
    except error_type as e:
        check_true(what, text in str(e), f"error {e!r} lacks {text!r}")
        return
    raise AssertionError(f"{what}: expected {error_type.__name__}, got {got!r}")


def run(host, port, password, protocol):
    label = f"protocol={protocol or 'default'}"
    kwargs = {"host": host, "port": port, "password": password, "socket_timeout": 30}
    if protocol is not None:
        kwargs["protocol"] = protocol
    r = redis.Redis(**kwargs)
    print(f"-- redis-py {redis.__version__}, {label}")
    r.flushall()

    hello = r.execute_command("HELLO")
    proto = hello.get(b"proto", hello.get("proto")) if isinstance(hello, dict) else None
    if proto is None:  # RESP2: a flat list of pairs
        pairs = dict(zip(hello[::2], hello[1::2]))
        proto = pairs[b"proto"]
    check(f"[{label}] the connection speaks", protocol or 3, proto)

    # Strings, misses, binary values.
    check(f"[{label}] set", True, r.set("elixir", "awesome sauce"))
    check(f"[{label}] get", b"awesome sauce", r.get("elixir"))
    check(f"[{label}] get of a missing key", None, r.get("nope"))
    blob = bytes(range(256)) * 4
    r.set(b"bin\x00key", blob)
    check(f"[{label}] binary-safe value", blob, r.get(b"bin\x00key"))
    check(f"[{label}] mget with a miss", [b"awesome sauce", None], r.mget("elixir", "nope"))
    check(f"[{label}] mset", True, r.mset({"a": "1", "b": "2"}))
    check(f"[{label}] exists", 3, r.exists("a", "b", "a", "nope"))
    check(f"[{label}] set nx on a present key", None, r.set("a", "x", nx=True))
    check(f"[{label}] set get", b"1", r.set("a", "3", get=True))
    check(f"[{label}] getdel", b"3", r.getdel("a"))
    check(f"[{label}] getdel of a missing key", None, r.getdel("a"))
    check(f"[{label}] delete", 2, r.delete("b", "bin\x00key", "nope"))

    # TTLs.
    r.set("session", "alice", ex=100)
    ttl = r.ttl("session")
    check_true(f"[{label}] ttl in (0, 100]", 0 < ttl <= 100, f"ttl {ttl}")
    pttl = r.pttl("session")
    check_true(f"[{label}] pttl in (0, 100000]", 0 < pttl <= 100_000, f"pttl {pttl}")
    check(f"[{label}] ttl without expiry", -1, r.ttl("elixir"))
    check(f"[{label}] ttl of a missing key", -2, r.ttl("nope"))
    check(f"[{label}] expire", True, r.expire("elixir", 50))
    check_true(f"[{label}] ttl after expire", 0 < r.ttl("elixir") <= 50)
    check(f"[{label}] persist", True, r.persist("elixir"))
    check(f"[{label}] ttl after persist", -1, r.ttl("elixir"))
    r.set("short", "v", px=200)
    deadline = time.monotonic() + 10
    while r.exists("short") and time.monotonic() < deadline:
        time.sleep(0.05)
    check(f"[{label}] a key with px=200 expires", None, r.get("short"))

    # A pipeline without MULTI/EXEC: one round trip, replies in order.
    pipe = r.pipeline(transaction=False)
    for i in range(100):
        pipe.set(f"k{i}", f"v{i}")
    pipe.get("k7")
    pipe.mget("k1", "nope", "k99")
    pipe.exists("k1", "k2")
    pipe.ttl("k1")
    results = pipe.execute()
    check(f"[{label}] pipeline writes", [True] * 100, results[:100])
    check(
        f"[{label}] pipeline reads",
        [b"v7", [b"v1", None, b"v99"], 2, -1],
        results[100:],
    )
    pipe = r.pipeline(transaction=False)
    pipe.get("k1")
    pipe.execute_command("NOSUCHCMD")
    pipe.get("k2")
    results = pipe.execute(raise_on_error=False)
    check(f"[{label}] pipeline with an error, before", b"v1", results[0])
    check_true(
        f"[{label}] pipeline with an error, the error",
        isinstance(results[1], redis.ResponseError),
        repr(results[1]),
    )
    check(f"[{label}] pipeline with an error, after", b"v2", results[2])

    # Keys, scans, sizes.
    check(f"[{label}] dbsize", 102, r.dbsize())
    check(f"[{label}] keys", [b"k42"], r.keys("k42"))
    scanned = set(r.scan_iter(match="k*", count=7))
    check(f"[{label}] scan_iter", {f"k{i}".encode() for i in range(100)}, scanned)

    # INFO: a dict, the honest Redis version and dice's own.
    info = r.info("server")
    check(f"[{label}] INFO redis_version", "7.2.0", str(info["redis_version"]))
    check_true(f"[{label}] INFO dice_version", "dice_version" in info, repr(info))
    check_true(f"[{label}] INFO stats", "dice_auth_failures" in r.info("stats"))

    # Error replies.
    expect_error(
        f"[{label}] unknown command",
        lambda: r.execute_command("INCR", "x"),
        redis.ResponseError,
        "unknown command 'INCR'",
    )
    expect_error(
        f"[{label}] wrong arity",
        lambda: r.execute_command("GET"),
        redis.ResponseError,
        "wrong number of arguments for 'get' command",
    )
    expect_error(
        f"[{label}] syntax error",
        lambda: r.execute_command("SET", "k", "v", "EX"),
        redis.ResponseError,
        "syntax error",
    )
    expect_error(
        f"[{label}] not an integer",
        lambda: r.execute_command("EXPIRE", "k1", "soon"),
        redis.ResponseError,
        "not an integer",
    )
    check(f"[{label}] the connection still works after errors", b"v1", r.get("k1"))

    # A wrong password is refused.
    bad = redis.Redis(**{**kwargs, "password": "wrong"})
    expect_error(
        f"[{label}] wrong password",
        bad.ping,
        redis.AuthenticationError,
        "invalid username-password pair",
    )
    check(f"[{label}] flushall", True, r.flushall())
    r.close()


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    host, port, password = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    major = int(redis.__version__.split(".")[0])
    if major < 8:
        sys.exit(f"redis-py {redis.__version__} is too old: this checks redis-py 8 or later")
    for protocol in (None, 2):
        run(host, port, password, protocol)
    print("redis-py: all checks passed")


if __name__ == "__main__":
    main()
