"""Key store at the hsm2m.medium quota: create rate, find-by-label latency, memory.

One on-disk HSM (WAL, synchronous=FULL) in a temporary directory; one crypto
user creates 16,666 AES-256 token keys, as the endpoint would:

* the first 2,000 one request at a time (``Hsm.handle``): one transaction and
  one fsync per key, the rate of a client with one request in flight;
* the rest pipelined, 32 in flight (``Hsm.handle_batch``): group commit, one
  fsync per batch, every response sent only after its batch is durable.

The raw SQLite commit rate of the same disk (one tiny insert per FULL commit)
is printed beside them: per-request durability cannot beat it. Then
``key.find`` by label among all the keys, and the peak resident memory.
"""

from __future__ import annotations

import resource
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from protocol.status import Status
from simulator.hsm import Hsm, HsmIdentity
from simulator.hsm.keystore import KEY_QUOTA

KEYS = KEY_QUOTA["hsm2m.medium"][0]
SERIAL_KEYS = 2000
PIPELINE_DEPTH = 32
TARGET_KEYS_PER_S = 1000.0
TARGET_FIND_MS = 5.0
TARGET_RSS_MIB = 200.0
_IDENTITY = HsmIdentity("hsm-benchmarkaaa", "cluster-benchmarkaa", "bench-0001", "hsm2m.medium")


def _ok(hsm: Hsm, session: int, op: str, args: dict[str, object]) -> dict[str, object]:
    status, result = hsm.handle(session, op, args)
    if status is not Status.SUCCESS:
        raise RuntimeError(f"{op} failed: {status.name} {result}")
    assert isinstance(result, dict)
    return result


def _rss_mib() -> float:
    # ru_maxrss is KiB on Linux: the peak resident set of this process.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sqlite_commit_rate(commits: int = 500) -> float:
    """The disk's ceiling: tiny WAL + synchronous=FULL commits per second."""
    with tempfile.TemporaryDirectory(prefix="hsm-bench-") as tmp:
        conn = sqlite3.connect(Path(tmp) / "raw.db", isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("CREATE TABLE t (v BLOB)")
            started = time.perf_counter()
            for _ in range(commits):
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO t VALUES (?)", (bytes(64),))
                conn.execute("COMMIT")
            return commits / (time.perf_counter() - started)
        finally:
            conn.close()


def run(keys: int = KEYS) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="hsm-bench-") as tmp:
        hsm = Hsm.open(_IDENTITY, Path(tmp) / "hsm.db", bytes(32))
        try:
            hsm.initialize()
            s = hsm.open_session(peer="bench", client_cert_der=None)
            _ok(hsm, s, "cluster.activate", {"password": "bench-password"})
            _ok(
                hsm,
                s,
                "login",
                {"username": "admin", "role": "admin", "password": "bench-password"},
            )
            _ok(
                hsm,
                s,
                "user.create",
                {"username": "bench", "role": "crypto-user", "password": "bench-password"},
            )
            cu = hsm.open_session(peer="bench", client_cert_der=None)
            _ok(
                hsm,
                cu,
                "login",
                {"username": "bench", "role": "crypto-user", "password": "bench-password"},
            )

            def generate(i: int) -> tuple[int, str, dict[str, object]]:
                return (
                    cu,
                    "key.generate",
                    {"key_type": "aes", "key_length_bytes": 32, "label": f"key-{i}"},
                )

            serial = min(SERIAL_KEYS, keys)
            started = time.perf_counter()
            for i in range(serial):
                _ok(hsm, *generate(i))
            serial_s = time.perf_counter() - started
            started = time.perf_counter()
            for first in range(serial, keys, PIPELINE_DEPTH):
                batch = [generate(i) for i in range(first, min(first + PIPELINE_DEPTH, keys))]
                for status, result in hsm.handle_batch(batch):
                    if status is not Status.SUCCESS:
                        raise RuntimeError(f"key.generate failed: {status.name} {result}")
            pipelined_s = time.perf_counter() - started
            samples = []
            for i in range(0, keys, max(1, keys // 500)):
                t0 = time.perf_counter()
                found = _ok(hsm, cu, "key.find", {"filter": {"label": f"key-{i}"}})
                samples.append((time.perf_counter() - t0) * 1000)
                assert len(found["keys"]) == 1  # type: ignore[arg-type]
            t0 = time.perf_counter()
            everything = _ok(hsm, cu, "key.find", {"verbose": False})
            list_all_ms = (time.perf_counter() - t0) * 1000
            assert len(everything["keys"]) == keys  # type: ignore[arg-type]
        finally:
            hsm.close()
    return {
        "keys": float(keys),
        "serial_keys_per_s": serial / serial_s,
        "pipelined_keys_per_s": (keys - serial) / pipelined_s if keys > serial else 0.0,
        "keys_per_s": keys / (serial_s + pipelined_s),
        "sqlite_commits_per_s": _sqlite_commit_rate(),
        "find_label_median_ms": statistics.median(samples),
        "find_label_p99_ms": sorted(samples)[int(len(samples) * 0.99) - 1],
        "list_all_ms": list_all_ms,
        "rss_mib": _rss_mib(),
    }


def main() -> None:
    figures = run()
    target_rate = f">= {TARGET_KEYS_PER_S:,.0f}"
    rows = [
        (
            f"create, {PIPELINE_DEPTH} in flight",
            f"{figures['pipelined_keys_per_s']:,.0f} keys/s",
            target_rate,
            figures["pipelined_keys_per_s"] >= TARGET_KEYS_PER_S,
        ),
        (
            "create, 1 in flight",
            f"{figures['serial_keys_per_s']:,.0f} keys/s",
            f"(disk: {figures['sqlite_commits_per_s']:,.0f} commits/s)",
            True,
        ),
        (
            "create, all keys",
            f"{figures['keys_per_s']:,.0f} keys/s",
            "-",
            True,
        ),
        (
            "find by label (median)",
            f"{figures['find_label_median_ms']:.3f} ms",
            f"< {TARGET_FIND_MS} ms",
            figures["find_label_median_ms"] < TARGET_FIND_MS,
        ),
        (
            "find by label (p99)",
            f"{figures['find_label_p99_ms']:.3f} ms",
            f"< {TARGET_FIND_MS} ms",
            figures["find_label_p99_ms"] < TARGET_FIND_MS,
        ),
        ("list all keys", f"{figures['list_all_ms']:.1f} ms", "-", True),
        (
            "peak resident memory",
            f"{figures['rss_mib']:.0f} MiB",
            f"< {TARGET_RSS_MIB:.0f} MiB",
            figures["rss_mib"] < TARGET_RSS_MIB,
        ),
    ]
    print(
        f"key store: {int(figures['keys']):,} AES-256 token keys on disk "
        "(WAL, synchronous=FULL; durable before each response)"
    )
    for name, value, target, met in rows:
        verdict = "" if target == "-" or target.startswith("(") else ("ok" if met else "MISSED")
        print(f"  {name:<24} {value:>16}   {target:<28} {verdict}")


if __name__ == "__main__":
    main()
