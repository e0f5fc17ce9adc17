"""TLS contexts of the client and the reading of its trust material.

Two layers, two trusts (CloudHSM end-to-end encryption):

* the *outer* TLS to the server host trusts ``server_ca_pem`` (the simulated
  AWS CloudHSM root), checks the host name, and accepts TLS 1.2 or newer;
* the *inner* TLS 1.3 to the HSM trusts exactly the certificates of
  ``customerCA.crt`` — no system roots, strict X.509 — and instead of a host
  name checks that the cluster certificate names the cluster it should.

This module also turns OpenSSL's failures into the precise
:mod:`client.errors` exceptions, so a user reads "cluster certificate expired"
and not ``[SSL: CERTIFICATE_VERIFY_FAILED]``.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import NameOID

from client import errors

_PEM_CERT_MARKER = b"-----BEGIN CERTIFICATE-----"

#: CloudHSM cluster certificates keep the CSR's subject:
#: ``CN=HSM:<serial>:PARTN:<partition>, for FIPS mode``; the simulator puts the
#: cluster id in the partition field.
_CLUSTER_CN = re.compile(r"^HSM:(?P<serial>[^:]+):PARTN:(?P<partition>[^,\s]+)")

# OpenSSL X509_V_ERR_* codes (x509_vfy.h) that decide which exception a user sees.
_X509_UNABLE_TO_GET_ISSUER_CERT = 2
_X509_CERT_SIGNATURE_FAILURE = 7
_X509_CERT_NOT_YET_VALID = 9
_X509_CERT_HAS_EXPIRED = 10
_X509_DEPTH_ZERO_SELF_SIGNED_CERT = 18
_X509_SELF_SIGNED_CERT_IN_CHAIN = 19
_X509_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
_X509_UNABLE_TO_VERIFY_LEAF_SIGNATURE = 21
_X509_HOSTNAME_MISMATCH = 62
_X509_IP_ADDRESS_MISMATCH = 64

_UNTRUSTED_CODES = frozenset(
    {
        _X509_UNABLE_TO_GET_ISSUER_CERT,
        _X509_CERT_SIGNATURE_FAILURE,
        _X509_SELF_SIGNED_CERT_IN_CHAIN,
        _X509_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
        _X509_UNABLE_TO_VERIFY_LEAF_SIGNATURE,
    }
)

# OpenSSL reasons (ssl.SSLError.reason) for the failures a peer reports by alert.
_TOO_OLD_REASONS = frozenset(
    {
        "UNSUPPORTED_PROTOCOL",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "NO_PROTOCOLS_AVAILABLE",
        "WRONG_SSL_VERSION",
        "VERSION_TOO_LOW",
    }
)
_CERT_REQUIRED_REASONS = frozenset(
    {"TLSV13_ALERT_CERTIFICATE_REQUIRED", "PEER_DID_NOT_RETURN_A_CERTIFICATE"}
)
_CERT_REJECTED_REASONS = frozenset(
    {
        "TLSV1_ALERT_UNKNOWN_CA",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "TLSV1_ALERT_DECRYPT_ERROR",
    }
)


@dataclass(frozen=True, slots=True)
class CustomerCa:
    """The validated contents of customerCA.crt."""

    pem: bytes
    certificates: tuple[x509.Certificate, ...]
    source: str

    @property
    def subject(self) -> str:
        return self.certificates[0].subject.rfc4514_string()


def load_customer_ca(path: Path) -> CustomerCa:
    """Read and validate customerCA.crt (missing, empty, garbage, not a CA)."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise errors.CustomerCaMissing(
            f"customerCA.crt not found at {path}: copy the certificate of the CA that "
            "signed the cluster certificate there (hsm_ca_file in the configuration)"
        ) from None
    except IsADirectoryError:
        raise errors.CustomerCaInvalid(f"customerCA.crt at {path} is a directory") from None
    except OSError as exc:
        raise errors.CustomerCaMissing(
            f"customerCA.crt at {path} cannot be read: {exc.strerror}"
        ) from None
    return check_customer_ca(pem, source=str(path))


def check_customer_ca(pem: bytes, *, source: str = "customerCA.crt") -> CustomerCa:
    """Validate customerCA.crt contents: one or more PEM certificates, each a CA."""
    if not pem.strip():
        raise errors.CustomerCaEmpty(f"customerCA.crt at {source} is empty")
    if _PEM_CERT_MARKER not in pem:
        raise errors.CustomerCaInvalid(
            f"customerCA.crt at {source} holds no PEM certificate "
            "(expected '-----BEGIN CERTIFICATE-----')"
        )
    try:
        certificates = tuple(x509.load_pem_x509_certificates(pem))
    except ValueError as exc:
        raise errors.CustomerCaInvalid(
            f"customerCA.crt at {source} is not a valid PEM certificate: {exc}"
        ) from None
    for certificate in certificates:
        subject = certificate.subject.rfc4514_string()
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            raise errors.CustomerCaNotCa(
                f"customerCA.crt at {source} holds {subject!r}, which has no basic "
                "constraints and so is not a certificate authority"
            ) from None
        if not constraints.value.ca:
            raise errors.CustomerCaNotCa(
                f"customerCA.crt at {source} holds {subject!r}, which is not a "
                "certificate authority (basicConstraints CA:FALSE)"
            )
    return CustomerCa(pem=pem, certificates=certificates, source=source)


def check_client_certificate(cert_path: Path, key_path: Path, *, layer: str) -> None:
    """Validate a client certificate chain and key before any connection uses them.

    ``layer`` names the option in messages ("server (host layer)" for
    ``--server-client-cert-file``, "HSM (mTLS layer)" for
    ``--client-cert-hsm-tls-file``).
    """
    try:
        chain_pem = cert_path.read_bytes()
    except FileNotFoundError:
        raise errors.ConfigurationError(
            f"{layer} client certificate file not found: {cert_path}"
        ) from None
    except OSError as exc:
        raise errors.ConfigurationError(
            f"{layer} client certificate {cert_path} cannot be read: {exc.strerror}"
        ) from None
    try:
        key_pem = key_path.read_bytes()
    except FileNotFoundError:
        raise errors.ConfigurationError(f"{layer} client key file not found: {key_path}") from None
    except OSError as exc:
        raise errors.ConfigurationError(
            f"{layer} client key {key_path} cannot be read: {exc.strerror}"
        ) from None
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise errors.ConfigurationError(
            f"{layer} client certificate {cert_path} is not a PEM certificate chain"
        ) from None
    try:
        key = load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise errors.ConfigurationError(
            f"{layer} client key {key_path} is encrypted; a key without a passphrase is required"
        ) from None
    except ValueError:
        raise errors.ConfigurationError(
            f"{layer} client key {key_path} is not a PEM private key"
        ) from None
    if key.public_key() != chain[0].public_key():
        raise errors.ConfigurationError(
            f"{layer} client key {key_path} does not match the certificate "
            f"{chain[0].subject.rfc4514_string()!r} in {cert_path}"
        )


def _load_client_certificate(
    context: ssl.SSLContext, pair: tuple[Path, Path] | None, layer: str
) -> None:
    if pair is None:
        return
    cert_path, key_path = pair
    check_client_certificate(cert_path, key_path, layer=layer)
    try:
        context.load_cert_chain(str(cert_path), str(key_path))
    except (ssl.SSLError, OSError) as exc:
        raise errors.ConfigurationError(
            f"{layer} client certificate {cert_path} and key {key_path} cannot be used: {exc}"
        ) from None


def host_context(
    server_ca_pem: bytes, client_cert: tuple[Path, Path] | None = None
) -> ssl.SSLContext:
    """Outer TLS: verify the server host against the AWS CloudHSM root, TLS ≥ 1.2."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    try:
        context.load_verify_locations(cadata=server_ca_pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
        raise errors.ConfigurationError(f"server CA certificate is not usable PEM: {exc}") from None
    _load_client_certificate(context, client_cert, "server (host layer)")
    return context


def hsm_context(
    customer_ca: CustomerCa, client_cert: tuple[Path, Path] | None = None
) -> ssl.SSLContext:
    """Inner TLS 1.3: trust customerCA.crt and nothing else.

    Host names are not checked: a cluster certificate carries the CSR subject
    ``CN=HSM:<serial>:PARTN:<partition>``, not a DNS name. The cluster id in it
    is checked after the handshake by :func:`check_cluster_certificate`.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    # Not VERIFY_X509_STRICT: the AWS guide makes customerCA.crt with a bare
    # `openssl req -new -x509`, which has no keyUsage extension, and strict mode
    # refuses such an issuer ("CA cert does not include key usage extension").
    # The real client accepts it, so we must; the chain, validity, signatures and
    # basicConstraints CA:TRUE are still checked, and customerCA.crt itself is
    # validated when it is loaded. PARTIAL_CHAIN lets an intermediate be the anchor.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.load_verify_locations(cadata=customer_ca.pem.decode("ascii"))
    _load_client_certificate(context, client_cert, "HSM (mTLS layer)")
    return context


def cluster_of(certificate_der: bytes) -> tuple[str, str | None]:
    """The subject and the cluster (PARTN) a cluster certificate names."""
    certificate = x509.load_der_x509_certificate(certificate_der)
    subject = certificate.subject.rfc4514_string()
    for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attribute.value if isinstance(attribute.value, str) else ""
        match = _CLUSTER_CN.match(value)
        if match:
            return subject, match.group("partition")
    return subject, None


def check_cluster_certificate(
    certificate_der: bytes, *, expected_cluster_id: str, peer: str
) -> None:
    """Refuse a (trusted) certificate that names another cluster, or none."""
    subject, cluster = cluster_of(certificate_der)
    if cluster != expected_cluster_id:
        named = f"cluster {cluster}" if cluster else "no cluster"
        raise errors.ClusterMismatch(
            f"the HSM at {peer} presented a certificate issued for {named} "
            f"(subject {subject!r}), but the client expects cluster {expected_cluster_id}"
        )


def classify_hsm_failure(
    exc: ssl.SSLError, *, customer_ca: CustomerCa, peer: str
) -> errors.TrustError:
    """The precise trust error for a failed inner (HSM) TLS handshake."""
    trust = f"the CA in {customer_ca.source} (subject {customer_ca.subject!r})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        detail = exc.verify_message
        if code == _X509_CERT_HAS_EXPIRED:
            return errors.ClusterCertificateExpired(
                f"the cluster certificate presented by the HSM at {peer} has expired ({detail})"
            )
        if code == _X509_CERT_NOT_YET_VALID:
            return errors.ClusterCertificateNotYetValid(
                f"the cluster certificate presented by the HSM at {peer} is not yet valid ({detail})"
            )
        if code == _X509_DEPTH_ZERO_SELF_SIGNED_CERT:
            return errors.HsmCertificateSelfSigned(
                f"the HSM at {peer} presented a self-signed certificate, not a cluster "
                f"certificate issued by {trust}"
            )
        if code in _UNTRUSTED_CODES:
            return errors.ClusterCertificateUntrusted(
                f"the certificate presented by the HSM at {peer} was not issued by {trust} "
                f"({detail})"
            )
        return errors.ClusterCertificateInvalid(
            f"the cluster certificate presented by the HSM at {peer} failed verification "
            f"against {trust}: {detail}"
        )
    client_side = _client_certificate_failure(exc, layer="HSM", peer=peer)
    if client_side is not None:
        return client_side
    return errors.ClusterCertificateInvalid(
        f"the TLS 1.3 handshake with the HSM at {peer} failed: {exc.reason or exc}"
    )


def classify_host_failure(
    exc: ssl.SSLError, *, peer: str, server_ca_source: str
) -> errors.TrustError | None:
    """The precise trust error for a failed outer (host) TLS handshake, if it is one."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        detail = exc.verify_message
        if code == _X509_CERT_HAS_EXPIRED:
            return errors.HostCertificateExpired(
                f"the certificate of the server host {peer} has expired ({detail})"
            )
        if code == _X509_CERT_NOT_YET_VALID:
            return errors.HostCertificateNotYetValid(
                f"the certificate of the server host {peer} is not yet valid ({detail})"
            )
        if code in (_X509_HOSTNAME_MISMATCH, _X509_IP_ADDRESS_MISMATCH):
            return errors.HostNameMismatch(
                f"the certificate of the server host {peer} is for another host ({detail})"
            )
        return errors.HostCertificateUntrusted(
            f"the certificate of the server host {peer} is not trusted by {server_ca_source} "
            f"({detail})"
        )
    if exc.reason in _TOO_OLD_REASONS:
        return errors.HostTlsTooOld(
            f"the server host {peer} offered only TLS below 1.2; the client requires "
            f"TLS 1.2 or newer ({exc.reason})"
        )
    return _client_certificate_failure(exc, layer="server host", peer=peer)


def _client_certificate_failure(
    exc: ssl.SSLError, *, layer: str, peer: str
) -> errors.TrustError | None:
    if exc.reason in _CERT_REQUIRED_REASONS:
        return errors.ClientCertificateRequired(
            f"the {layer} at {peer} requires a client certificate and none was configured"
        )
    if exc.reason in _CERT_REJECTED_REASONS:
        return errors.ClientCertificateRejected(
            f"the {layer} at {peer} rejected the client certificate ({exc.reason})"
        )
    return None
