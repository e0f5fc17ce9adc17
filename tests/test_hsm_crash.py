"""Durability: SIGKILL an HSM process mid-load; every acknowledged change survives.

A child process opens an HSM on a file and creates crypto users and token
keys in a loop, printing each one only after ``handle`` returned (the moment
a client would see the acknowledgement). The test kills it with SIGKILL while
it is still writing, reopens the file and checks that every acknowledged user
and key is there, that nothing is half-written (every key has its audit record
and vice versa, the audit sequence has no gap, SQLite's integrity check passes).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hsm_support import MASKING_KEY, TEST_SCRYPT_N, identity

from simulator.hsm import Hsm

_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from simulator.hsm import Hsm, HsmIdentity

    path, masking_hex, scrypt_n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    batch = int(sys.argv[4])
    identity = HsmIdentity("hsm-abcdefghijk", "cluster-abcdefghijk", "5.3G1941-ICM000590",
                           "hsm2m.medium")
    hsm = Hsm.open(identity, path, bytes.fromhex(masking_hex), scrypt_n=scrypt_n)
    hsm.initialize()
    s = hsm.open_session(peer="crash", client_cert_der=None)
    assert hsm.handle(s, "cluster.activate", {"password": "admin-password-1"})[0] == 0
    assert hsm.handle(s, "login", {"username": "admin", "role": "admin",
                                   "password": "admin-password-1"})[0] == 0
    assert hsm.handle(s, "user.create", {"username": "owner", "role": "crypto-user",
                                         "password": "owner-pass"})[0] == 0
    cu = hsm.open_session(peer="crash", client_cert_der=None)
    assert hsm.handle(cu, "login", {"username": "owner", "role": "crypto-user",
                                    "password": "owner-pass"})[0] == 0
    print("READY", flush=True)
    i = 0
    while True:
        status, result = hsm.handle(s, "user.create", {"username": f"user_{i}",
                                    "role": "crypto-user", "password": "pw123456"})
        assert status == 0, result
        print(f"USER user_{i}", flush=True)
        # Group commit: acknowledge a batch only after handle_batch returned.
        requests = [(cu, "key.generate", {"key_type": "aes", "key_length_bytes": 32,
                     "label": f"key_{i}_{j}"}) for j in range(batch)]
        responses = hsm.handle_batch(requests)
        for j, (status, result) in enumerate(responses):
            assert status == 0, result
            print(f"KEY {result['key']['key-reference']} key_{i}_{j}", flush=True)
        i += 1
    """
)

#: Acknowledged operations to wait for before the kill.
_ACKNOWLEDGED = 150


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 8], ids=["one-commit-per-op", "group-commit"])
def test_sigkill_mid_load_loses_nothing_acknowledged(tmp_path: Path, batch: int) -> None:
    path = tmp_path / "hsm.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(path),
            MASKING_KEY.hex(),
            str(TEST_SCRYPT_N),
            str(batch),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    acknowledged_users: list[str] = []
    acknowledged_keys: dict[int, str] = {}
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 60
        for line in child.stdout:
            kind, *rest = line.split()
            if kind == "USER":
                acknowledged_users.append(rest[0])
            elif kind == "KEY":
                acknowledged_keys[int(rest[0])] = rest[1]
            if len(acknowledged_users) + len(acknowledged_keys) >= _ACKNOWLEDGED:
                break
            assert time.monotonic() < deadline, "the child is too slow"
        # Kill while the child is mid-write (it never stops creating).
        child.send_signal(signal.SIGKILL)
        # Whatever it printed before dying was acknowledged too.
        rest_out, errors = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    for line in rest_out.splitlines():
        kind, *rest = line.split()
        if kind == "USER":
            acknowledged_users.append(rest[0])
        elif kind == "KEY":
            acknowledged_keys[int(rest[0])] = rest[1]
    assert child.returncode == -signal.SIGKILL, errors
    assert len(acknowledged_keys) >= _ACKNOWLEDGED // 2 - 1

    hsm = Hsm.open(identity(), path, MASKING_KEY, scrypt_n=TEST_SCRYPT_N)
    try:
        assert hsm._store.integrity_check() == "ok"
        anonymous = hsm.open_session(peer="check", client_cert_der=None)
        _, listed = hsm.handle(anonymous, "user.list", {})
        names = {u["username"] for u in listed["users"]}
        assert set(acknowledged_users) <= names
        owner = hsm.open_session(peer="check", client_cert_der=None)
        hsm.handle(
            owner, "login", {"username": "owner", "role": "crypto-user", "password": "owner-pass"}
        )
        _, found = hsm.handle(owner, "key.find", {})
        stored = {k["key-reference"]: k["attributes"]["label"] for k in found["keys"]}
        for handle, label in acknowledged_keys.items():
            assert stored.get(handle) == label
        # All or nothing: at most one unacknowledged commit (one batch) landed.
        assert len(stored) - len(acknowledged_keys) <= batch
        assert len(names) - 3 - len(acknowledged_users) <= 1  # admin, app_user, owner
        # Every key has its audit record and every audited key exists.
        records = hsm.audit_records()
        assert [r["sequence"] for r in records] == list(range(len(records)))
        audited = {r["key_handle"] for r in records if r["opcode"] == "CN_GENERATE_KEY (0x17)"}
        assert audited == set(stored)
        created = {r["user_name"] for r in records if r["opcode"] == "CN_CREATE_USER (0x3)"}
        assert created == names - {"admin", "app_user"}
        # Material of every key opens (nothing torn).
        _, digests = hsm.handle(owner, "key.digests", {})
        assert set(digests["keys"]) == set(stored)
    finally:
        hsm.close()
