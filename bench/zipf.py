#!/usr/bin/env python3
"""Zipf GET/SET workload against a Redis-protocol server: GET a key drawn from a Zipf
distribution; on a miss, SET it (a cache filled on demand). Prints the hit ratio.

    bench/zipf.py PORT [--keys 200000] [--ops 400000] [--s 0.99] [--value 100] [--seed 1]

Only the standard library: a minimal RESP client over one socket, pipelined in batches of 100
GETs, the misses of a batch SET in the next round trip. The first --warmup ops (default: as
many as --ops) fill the cache and are not counted.
"""
import argparse
import bisect
import random
import socket


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            self.buf += self.s.recv(1 << 16)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.s.recv(1 << 16)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"-":
            raise RuntimeError(rest.decode())
        return rest

    def pipeline(self, commands):
        self.s.sendall(b"".join(encode(*c) for c in commands))
        return [self._reply() for _ in commands]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--keys", type=int, default=200_000)
    p.add_argument("--ops", type=int, default=400_000)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--s", type=float, default=0.99)
    p.add_argument("--value", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    rng = random.Random(a.seed)
    cum, total = [], 0.0
    for i in range(1, a.keys + 1):
        total += 1.0 / (i ** a.s)
        cum.append(total)
    # Rank r is key (r * 7919) mod keys: popular keys are spread over the key space.
    def draw():
        r = bisect.bisect_left(cum, rng.random() * total)
        return "zipf:%d" % ((r * 7919) % a.keys)

    value = b"v" * a.value
    c = Conn(a.port)
    warmup = a.ops if a.warmup is None else a.warmup
    hits = gets = 0
    done = 0
    while done < warmup + a.ops:
        keys = [draw() for _ in range(100)]
        replies = c.pipeline([("GET", k) for k in keys])
        misses = [k for k, v in zip(keys, replies) if v is None]
        if misses:
            c.pipeline([("SET", k, value) for k in misses])
        if done >= warmup:
            gets += len(keys)
            hits += len(keys) - len(misses)
        done += len(keys)
    print("hit_ratio %.4f gets %d keys %d s %.2f value %d" % (hits / gets, gets, a.keys, a.s, a.value))


if __name__ == "__main__":
    main()
