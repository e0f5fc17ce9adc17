"""AES-GCM as CloudHSM runs it: HSM-generated 12-byte IVs, tag truncation, output layout.

CloudHSM never takes a GCM IV from the application (AWS PKCS#11 mechanism notes,
spec 6.4): ``aes-gcm`` returns the IV it generated next to ``ciphertext || tag``,
``cloudhsm-aes-gcm`` prepends it (``IV || ciphertext || tag``). Used by both
encryption (:mod:`simulator.hsm.mechanisms`) and key wrap
(:mod:`simulator.hsm.wrapping`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from protocol.status import Status
from simulator.errors import HsmError
from simulator.hsm.params import optional_int

IV_BYTES = 12
#: Tag lengths accepted (bits); PKCS#11 allows 0..128, cryptography needs at least 32.
TAG_BITS = (32, 64, 96, 104, 112, 120, 128)


@functools.lru_cache(maxsize=256)
def _aead(key: bytes) -> AESGCM:
    # Building the cipher context costs as much as sealing 1 KiB; keys are reused a lot.
    return AESGCM(key)


def tag_bytes(params: Mapping[str, Any]) -> int:
    """``tag_length_bits`` (default 128) as a byte count."""
    bits = optional_int(params, "tag_length_bits", 128)
    if bits not in TAG_BITS:
        raise HsmError(
            Status.INVALID_ARGUMENT,
            f"tag_length_bits must be one of {', '.join(map(str, TAG_BITS))}",
        )
    return bits // 8


def seal(key: bytes, iv: bytes, data: bytes, aad: bytes | None, tag_len: int) -> bytes:
    """Ciphertext || tag (truncated to ``tag_len`` bytes)."""
    if tag_len == 16:
        return _aead(key).encrypt(iv, data, aad)
    enc = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
    if aad:
        enc.authenticate_additional_data(aad)
    body = enc.update(data) + enc.finalize()
    return body + enc.tag[:tag_len]


def open_sealed(key: bytes, iv: bytes, sealed: bytes, aad: bytes | None, tag_len: int) -> bytes:
    """The plaintext of ``ciphertext || tag``; ENCRYPTED_DATA_INVALID if not authentic."""
    if len(sealed) < tag_len:
        raise HsmError(Status.ENCRYPTED_DATA_INVALID, "The ciphertext is shorter than its tag")
    try:
        if tag_len == 16:
            return _aead(key).decrypt(iv, sealed, aad)
        body, tag = sealed[:-tag_len], sealed[-tag_len:]
        dec = Cipher(algorithms.AES(key), modes.GCM(iv, tag, min_tag_length=tag_len)).decryptor()
        if aad:
            dec.authenticate_additional_data(aad)
        return dec.update(body) + dec.finalize()
    except InvalidTag:
        raise HsmError(
            Status.ENCRYPTED_DATA_INVALID, "The ciphertext or its tag is not authentic"
        ) from None
