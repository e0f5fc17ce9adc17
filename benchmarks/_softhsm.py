"""SoftHSMv2 through python-pkcs11: the in-process HSM baseline of the full-stack benchmark.

:func:`measure` signs with RSA-2048 (``CKM_SHA256_RSA_PKCS``) and ECDSA P-256 on a fresh
SoftHSMv2 token and returns single-thread ops/s, or the reason SoftHSM could not be used
(library, ``softhsm2-util`` or ``python-pkcs11`` missing) so the caller prints it and
carries on.

The measurement runs in a child process (``python -m benchmarks._softhsm``): SoftHSM reads
``SOFTHSM2_CONF`` once, at ``C_Initialize``, and python-pkcs11 loads one PKCS#11 library per
process, so a token in a fresh temporary directory needs a fresh process. The signing
itself is in process for SoftHSM (the library is loaded into the child), which is the rate
the targets compare against.

SoftHSM 2.6 has no ``CKM_ECDSA_SHA256``; its ECDSA path is ``CKM_ECDSA`` over a SHA-256
digest taken in Python, which is what a PKCS#11 application does with it (the digest of
64 bytes costs well under a microsecond, next to the signature's tens).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Where Debian's ``softhsm2`` package installs the PKCS#11 library.
LIBRARY_PATH = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN_LABEL = "bench"
PIN = "1234"
#: The message signed by every path of the benchmark.
MESSAGE = b"\x42" * 64
#: Seconds the child may take beyond the measurements (start-up, key generation).
CHILD_SLACK = 60.0


@dataclass(frozen=True)
class SoftHsmRates:
    """Single-thread signatures per second through SoftHSMv2."""

    rsa: float
    ecdsa: float
    version: str


def unavailable_reason(library: str = LIBRARY_PATH) -> str | None:
    """Why SoftHSMv2 cannot be measured here, or None when it can."""
    # The library first: it is the piece a machine most often lacks, and the answer
    # then does not depend on which Python packages happen to be installed.
    if not Path(library).exists():
        return f"{library} not found (apt-get install softhsm2)"
    if importlib.util.find_spec("pkcs11") is None:
        return "python-pkcs11 is not installed (pip install python-pkcs11)"
    if shutil.which("softhsm2-util") is None:
        return "softhsm2-util not found on PATH (apt-get install softhsm2)"
    return None


def measure(duration: float, library: str = LIBRARY_PATH, repeats: int = 1) -> SoftHsmRates | str:
    """RSA-2048 and ECDSA P-256 sign rates (best of ``repeats`` runs of ``duration``
    seconds), or the reason SoftHSMv2 was unavailable."""
    reason = unavailable_reason(library)
    if reason is not None:
        return reason
    command = [
        sys.executable,
        "-m",
        "benchmarks._softhsm",
        "--duration",
        str(duration),
        "--library",
        library,
        "--repeats",
        str(repeats),
    ]
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and module
            command,
            capture_output=True,
            text=True,
            timeout=CHILD_SLACK + 4 * duration * repeats,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "the SoftHSMv2 measurement did not finish in time"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"the SoftHSMv2 measurement failed: {last}"
    result = json.loads(done.stdout)
    return SoftHsmRates(float(result["rsa"]), float(result["ecdsa"]), str(result["version"]))


# -- the child process ------------------------------------------------------------------


def sync_rate(operation: Callable[[], object], duration: float, repeats: int) -> float:
    """Calls per second of ``operation``: the best of ``repeats`` runs of ``duration`` s."""
    warm_until = time.perf_counter() + min(0.1, duration)
    while time.perf_counter() < warm_until:
        operation()
    best = 0.0
    for _ in range(repeats):
        done = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < duration:
            operation()
            done += 1
        best = max(best, done / elapsed)
    return best


def _init_token(directory: Path) -> None:
    """A token in ``directory`` only; ``SOFTHSM2_CONF`` must point there before loading."""
    tokens = directory / "tokens"
    tokens.mkdir()
    config = directory / "softhsm2.conf"
    config.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n",
        encoding="utf-8",
    )
    os.environ["SOFTHSM2_CONF"] = str(config)
    util = shutil.which("softhsm2-util")
    assert util is not None  # checked by unavailable_reason() in the parent
    subprocess.run(  # noqa: S603 - fixed arguments
        [
            util,
            "--init-token",
            "--free",
            "--label",
            TOKEN_LABEL,
            "--pin",
            PIN,
            "--so-pin",
            PIN,
        ],
        check=True,
        capture_output=True,
    )


def _measure_here(duration: float, library: str, repeats: int) -> dict[str, Any]:
    # Imported by name: python-pkcs11 is an optional (bench-only) dependency without types.
    pkcs11: Any = importlib.import_module("pkcs11")
    ec_util: Any = importlib.import_module("pkcs11.util.ec")
    with tempfile.TemporaryDirectory(prefix="bench-softhsm-") as scratch:
        _init_token(Path(scratch))
        lib = pkcs11.lib(library)
        token = lib.get_token(token_label=TOKEN_LABEL)
        with token.open(user_pin=PIN, rw=True) as session:
            _, rsa_private = session.generate_keypair(pkcs11.KeyType.RSA, 2048, store=False)
            curve = ec_util.encode_named_curve_parameters("secp256r1")
            parameters = session.create_domain_parameters(
                pkcs11.KeyType.EC, {pkcs11.Attribute.EC_PARAMS: curve}, local=True
            )
            _, ec_private = parameters.generate_keypair(store=False)
            rsa_mechanism = pkcs11.Mechanism.SHA256_RSA_PKCS
            ec_mechanism = pkcs11.Mechanism.ECDSA
            rsa = sync_rate(
                lambda: rsa_private.sign(MESSAGE, mechanism=rsa_mechanism), duration, repeats
            )
            ecdsa = sync_rate(
                lambda: ec_private.sign(hashlib.sha256(MESSAGE).digest(), mechanism=ec_mechanism),
                duration,
                repeats,
            )
        version = ".".join(str(part) for part in lib.library_version)
    return {"rsa": rsa, "ecdsa": ecdsa, "version": f"SoftHSM {version}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--library", default=LIBRARY_PATH)
    parser.add_argument("--repeats", type=int, default=1)
    options = parser.parse_args(argv)
    print(json.dumps(_measure_here(options.duration, options.library, options.repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
