"""The HSM core's cost on top of the cryptography it runs.

Four operations, each through ``Hsm.handle`` in process (an activated in-memory
HSM, a logged-in crypto user, keys imported into it) and through
``cryptography`` called directly with the same key and data:

* RSA-2048 sign (PKCS#1 v1.5, SHA-256)  — target: the core adds under 30 %
* ECDSA P-256 sign (SHA-256)             — target: under 3x
* AES-256-GCM encrypt, 1 KiB             — target: under 3x
* HMAC-SHA256, 1 KiB                     — target: under 3x

Prints ops/s for both paths and the overhead ratio (core time / direct time).
Figures are only comparable within one run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from protocol.status import Status
from simulator.hsm import Hsm, HsmIdentity

#: Seconds each measurement runs for (the best of REPEATS runs is kept).
DURATION = 0.4
REPEATS = 5
KIB = os.urandom(1024)
#: A cheap password-hash cost: logins are not what this measures.
SCRYPT_N = 2**4


@dataclass(frozen=True)
class Case:
    name: str
    target: float  # largest acceptable core/direct time ratio
    core: Callable[[], object]
    direct: Callable[[], object]


def _timed(fn: Callable[[], object]) -> float:
    """Operations per second over one run of about DURATION seconds."""
    count = 0
    start = time.perf_counter()
    deadline = start + DURATION
    while True:
        for _ in range(16):
            fn()
        count += 16
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def _rates(core: Callable[[], object], direct: Callable[[], object]) -> tuple[float, float]:
    """Best ops/s of each path, alternating runs so machine load hits both alike."""
    core()  # warm caches (parsed keys, code paths)
    direct()
    best_core = best_direct = 0.0
    for _ in range(REPEATS):
        best_core = max(best_core, _timed(core))
        best_direct = max(best_direct, _timed(direct))
    return best_core, best_direct


def _call(hsm: Hsm, session: int, op: str, **args: Any) -> Any:
    status, result = hsm.handle(session, op, args)
    if status is not Status.SUCCESS:
        raise RuntimeError(f"{op} failed: {status.name} {result}")
    return result


def _hsm_with_crypto_user() -> tuple[Hsm, int]:
    identity = HsmIdentity(
        hsm_id="hsm-benchmarkaaa",
        cluster_id="cluster-benchmarkaa",
        serial="5.3G1941-ICM000590",
        hsm_type="hsm2m.medium",
    )
    hsm = Hsm.open(identity, None, os.urandom(32), scrypt_n=SCRYPT_N)
    hsm.initialize()
    setup = hsm.open_session(peer="127.0.0.1", client_cert_der=None)
    _call(hsm, setup, "cluster.activate", password="admin-password-1")
    _call(hsm, setup, "login", username="admin", role="admin", password="admin-password-1")
    _call(hsm, setup, "user.create", username="bench", role="crypto-user", password="bench-pw-1")
    hsm.close_session(setup)
    session = hsm.open_session(peer="127.0.0.1", client_cert_der=None)
    _call(hsm, session, "login", username="bench", role="crypto-user", password="bench-pw-1")
    return hsm, session


def _import_private(
    hsm: Hsm, session: int, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
) -> int:
    """Import a private key made here, so both paths sign with the very same key."""
    key_type = "rsa" if isinstance(key, rsa.RSAPrivateKey) else "ec"
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    result = _call(
        hsm,
        session,
        "key.import",
        key_class="private-key",
        key_type=key_type,
        pem=pem,
        attributes={"sign": True},
    )
    return int(result["key"]["key-reference"])


def _import_secret(hsm: Hsm, session: int, key_type: str, value: bytes, **flags: bool) -> int:
    result = _call(
        hsm,
        session,
        "key.import",
        key_class="secret-key",
        key_type=key_type,
        value=value,
        attributes=flags,
    )
    return int(result["key"]["key-reference"])


def cases() -> list[Case]:
    hsm, s = _hsm_with_crypto_user()
    rsa_key = rsa.generate_private_key(65537, 2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    aes_value, mac_value = os.urandom(32), os.urandom(32)
    rsa_ref = _import_private(hsm, s, rsa_key)
    ec_ref = _import_private(hsm, s, ec_key)
    aes_ref = _import_secret(hsm, s, "aes", aes_value, encrypt=True)
    mac_ref = _import_secret(hsm, s, "generic-secret", mac_value, sign=True)
    message = b"benchmark message"

    def rsa_direct() -> object:
        return rsa_key.sign(message, padding.PKCS1v15(), hashes.SHA256())

    def ec_direct() -> object:
        return ec_key.sign(message, ec.ECDSA(hashes.SHA256()))

    def gcm_direct() -> object:
        return AESGCM(aes_value).encrypt(os.urandom(12), KIB, None)

    def hmac_direct() -> object:
        h = crypto_hmac.HMAC(mac_value, hashes.SHA256())
        h.update(KIB)
        return h.finalize()

    def op(name: str, **args: Any) -> Callable[[], object]:
        _call(hsm, s, name, **args)  # fail loudly now rather than time refusals

        def run() -> object:
            return hsm.handle(s, name, args)

        return run

    return [
        Case(
            "RSA-2048 sign",
            1.30,
            op(
                "crypto.sign",
                key_reference=rsa_ref,
                mechanism="rsa-pkcs",
                hash="sha256",
                data=message,
            ),
            rsa_direct,
        ),
        Case(
            "ECDSA P-256 sign",
            3.0,
            op("crypto.sign", key_reference=ec_ref, mechanism="ecdsa", hash="sha256", data=message),
            ec_direct,
        ),
        Case(
            "AES-256-GCM 1 KiB",
            3.0,
            op("crypto.encrypt", key_reference=aes_ref, mechanism="aes-gcm", data=KIB),
            gcm_direct,
        ),
        Case(
            "HMAC-SHA256 1 KiB",
            3.0,
            op("crypto.mac", key_reference=mac_ref, mechanism="hmac", hash="sha256", data=KIB),
            hmac_direct,
        ),
    ]


def main() -> None:
    rows = []
    for case in cases():
        core, direct = _rates(case.core, case.direct)
        ratio = direct / core
        rows.append((case.name, core, direct, ratio, case.target))
    print(f"{'operation':<20} {'core ops/s':>12} {'direct ops/s':>13} {'ratio':>7} {'target':>7}  ")
    for name, core, direct, ratio, target in rows:
        verdict = "ok" if ratio <= target else "MISSED"
        print(f"{name:<20} {core:>12.0f} {direct:>13.0f} {ratio:>6.2f}x {target:>6.2f}x  {verdict}")


if __name__ == "__main__":
    main()
