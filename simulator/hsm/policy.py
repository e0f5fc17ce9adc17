"""Client-to-HSM mutual TLS policy: trust anchors and enforcement (spec §2.9).

An admin registers at most two trust anchors (a PEM chain of at most 6,980
bytes, certificates in hierarchical order, keys EC P-256/P-384/P-521 or RSA
2048/3072/4096). With enforcement ``cluster`` the HSM accepts only channels
whose client certificate chains to a registered anchor. Like all policies the
anchors are per HSM and never synchronised by the service.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from protocol.status import Status
from simulator.errors import HsmError

MAX_TRUST_ANCHORS = 2
MAX_CHAIN_BYTES = 6980
ENFORCEMENT_LEVELS = ("cluster", "none")
_EC_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_RSA_SIZES = (2048, 3072, 4096)


@dataclass(frozen=True, slots=True)
class MtlsPolicy:
    """What the HSM endpoint needs to check client certificates."""

    enforcement: str  # "cluster" | "none"
    trust_anchors: tuple[bytes, ...]  # PEM chains as registered

    @property
    def enforced(self) -> bool:
        return self.enforcement == "cluster" and bool(self.trust_anchors)

    def trust_store_pem(self) -> bytes:
        """Every registered certificate, concatenated, for ``SSLContext.load_verify_locations``."""
        return b"".join(self.trust_anchors)


def _check_key(cert: x509.Certificate) -> None:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _EC_CURVES):
            raise HsmError(
                Status.CERTIFICATE_INVALID,
                "Invalid Certificate: EC trust anchors must use P-256, P-384 or P-521",
            )
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size not in _RSA_SIZES:
            raise HsmError(
                Status.CERTIFICATE_INVALID,
                "Invalid Certificate: RSA trust anchors must be 2048, 3072 or 4096 bits",
            )
    else:
        raise HsmError(
            Status.CERTIFICATE_INVALID, "Invalid Certificate: unsupported trust anchor key type"
        )


def validate_trust_anchor(pem: object) -> bytes:
    """Check a trust-anchor chain and return it re-encoded (canonical PEM)."""
    if not isinstance(pem, bytes):
        raise HsmError(Status.INVALID_ARGUMENT, "certificate must be PEM bytes")
    if len(pem) > MAX_CHAIN_BYTES:
        raise HsmError(
            Status.CERTIFICATE_INVALID,
            f"Invalid Certificate: the chain exceeds {MAX_CHAIN_BYTES} bytes",
        )
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise HsmError(
            Status.CERTIFICATE_INVALID, "Invalid Certificate: not a PEM certificate chain"
        ) from None
    for cert in certs:
        _check_key(cert)
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise HsmError(
                Status.CERTIFICATE_INVALID, "Invalid Certificate: a trust anchor must be a CA"
            )
    # Hierarchical order: each certificate issued by the next one, or by the
    # previous one (we accept either direction, root-first or leaf-first).
    if len(certs) > 1:
        down = all(certs[i].issuer == certs[i + 1].subject for i in range(len(certs) - 1))
        up = all(certs[i + 1].issuer == certs[i].subject for i in range(len(certs) - 1))
        if not (down or up):
            raise HsmError(
                Status.CERTIFICATE_INVALID,
                "Invalid Certificate: the chain is not in hierarchical order",
            )
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
