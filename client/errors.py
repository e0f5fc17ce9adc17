"""Every failure a client user can meet, as one exception tree.

``ClientError`` is the root. Below it:

* ``ConfigurationError`` — the client's own files or settings are unusable.
* ``TrustError`` — the trust path failed; one subclass per failure, each message
  naming what failed and the file or certificate subject involved. Every trust
  failure is raised before any request (let alone a credential) is sent.
* ``HostError`` — the server host refused or dropped us (security group, HSM
  unavailable, connection cap, unsupported protocol version).
* ``ConnectionLost`` / ``RequestTimeout`` / ``ProtocolViolation`` — the channel broke.
* ``HsmStatusError`` — the HSM answered with a non-zero status; one subclass per
  :class:`protocol.status.Status` (``HsmBusy`` for 0xBB, ``KeyAccessDenied`` for
  0xC6...). :func:`status_error` builds the right one.
"""

from __future__ import annotations

from typing import ClassVar

from protocol.framing import HostErrorCode
from protocol.status import Status


class ClientError(Exception):
    """Root of every exception the client raises on purpose."""


class ConfigurationError(ClientError):
    """The client configuration (files, paths, options) cannot be used."""


# -- trust ------------------------------------------------------------------


class TrustError(ClientError):
    """The trust path to the server host or the HSM failed; nothing was sent."""


class CustomerCaMissing(TrustError):
    """customerCA.crt does not exist."""


class CustomerCaEmpty(TrustError):
    """customerCA.crt is empty."""


class CustomerCaInvalid(TrustError):
    """customerCA.crt is not a PEM certificate (garbage, truncated, DER...)."""


class CustomerCaNotCa(TrustError):
    """customerCA.crt holds a certificate that is not a certificate authority."""


class ClusterCertificateUntrusted(TrustError):
    """The HSM's certificate was not issued by the CA in customerCA.crt."""


class HsmCertificateSelfSigned(ClusterCertificateUntrusted):
    """The HSM presented a self-signed certificate instead of the cluster certificate."""


class ClusterCertificateExpired(TrustError):
    """The cluster certificate's validity ended."""


class ClusterCertificateNotYetValid(TrustError):
    """The cluster certificate's validity has not started."""


class ClusterCertificateInvalid(TrustError):
    """The cluster certificate failed verification for another reason."""


class ClusterMismatch(TrustError):
    """The cluster certificate was issued for another cluster."""


class HostCertificateUntrusted(TrustError):
    """The server host's certificate does not chain to the trusted AWS CloudHSM root."""


class HostCertificateExpired(TrustError):
    """The server host's certificate expired."""


class HostCertificateNotYetValid(TrustError):
    """The server host's certificate is not yet valid."""


class HostNameMismatch(TrustError):
    """The server host's certificate names another host."""


class HostTlsTooOld(TrustError):
    """The server host offered only TLS versions below 1.2."""


class ClientCertificateRequired(TrustError):
    """The host or the HSM demanded a client certificate the client did not present."""


class ClientCertificateRejected(TrustError):
    """The host or the HSM refused the client certificate presented."""


# -- host ---------------------------------------------------------------------


class HostError(ClientError):
    """The server host refused or ended the connection with a HOST_ERROR frame."""

    code: ClassVar[HostErrorCode | None] = None

    def __init__(self, message: str, *, host: str = "") -> None:
        self.message = message
        self.host = host
        super().__init__(
            f"server host {host} refused the connection: {message}" if host else message
        )


class HostRefused(HostError, TrustError):
    """The host's security group does not allow the client's address."""

    code = HostErrorCode.SECURITY_GROUP_REFUSED


class HostHsmUnavailable(HostError):
    """The host is up but its HSM is not serving."""

    code = HostErrorCode.HSM_UNAVAILABLE


class ProtocolVersionUnsupported(HostError):
    """The host speaks none of the protocol versions the client offered."""

    code = HostErrorCode.VERSION_UNSUPPORTED


class HostProtocolError(HostError):
    """The host (or the HSM behind it) judged our bytes malformed and closed the channel."""

    code = HostErrorCode.PROTOCOL_ERROR


class HostConnectionLimit(HostError):
    """The HSM already serves its maximum number of connections."""

    code = HostErrorCode.CONNECTION_LIMIT


class HostShuttingDown(HostError):
    """The host is stopping."""

    code = HostErrorCode.SHUTTING_DOWN


_HOST_ERRORS: dict[HostErrorCode, type[HostError]] = {
    cls.code: cls
    for cls in (
        HostRefused,
        HostHsmUnavailable,
        ProtocolVersionUnsupported,
        HostProtocolError,
        HostConnectionLimit,
        HostShuttingDown,
    )
    if cls.code is not None
}


def host_error(code: HostErrorCode, message: str, *, host: str = "") -> HostError:
    """The exception for a HOST_ERROR frame."""
    return _HOST_ERRORS[code](message, host=host)


# -- the channel ----------------------------------------------------------------


class HostUnreachable(ClientError):
    """No TCP connection could be made to the server host."""


class ConnectionLost(ClientError):
    """The channel to the HSM broke; requests in flight have unknown outcomes."""


class RequestTimeout(ClientError):
    """The HSM did not answer within the timeout; the outcome is unknown."""


class ProtocolViolation(ClientError):
    """The host or HSM sent bytes that break the wire contract."""


# -- HSM statuses ------------------------------------------------------------------


class HsmStatusError(ClientError):
    """The HSM refused a request; ``status`` and ``message`` say why.

    ``result`` is the whole result the HSM sent with the refusal (``None`` when it sent
    none): some refusals carry data the caller needs, such as the MFA challenge a login
    of an MFA user answers with (``result["mfa_token"]["unsigned"]``).
    """

    status_code: ClassVar[Status | None] = None

    def __init__(
        self, status: Status | int, message: str | None = None, result: object = None
    ) -> None:
        self.result = result
        try:
            self.status: Status | int = Status(status)
        except ValueError:
            self.status = status
        default = self.status.info.cli_message if isinstance(self.status, Status) else ""
        self.message = message or default or f"HSM status 0x{int(status):X}"
        name = self.status.name if isinstance(self.status, Status) else "UNKNOWN_STATUS"
        super().__init__(f"{self.message} ({name}, 0x{int(status):X})")


class UserNotFound(HsmStatusError):
    """HSM Error: user isn't initialized or user with this name doesn't exist (0x9D)."""

    status_code = Status.USER_NOT_FOUND


class LoginFailure(HsmStatusError):
    """HSM Error: RET_USER_LOGIN_FAILURE (0xA3)."""

    status_code = Status.LOGIN_FAILURE


class InvalidHandle(HsmStatusError):
    """HSM Error: Invalid object handle is passed to this operation (0xA8)."""

    status_code = Status.INVALID_HANDLE


class PolicyViolation(HsmStatusError):
    """HSM Error: This operation violates the current configured/FIPS policies (0xB3)."""

    status_code = Status.POLICY_VIOLATION


class HsmBusy(HsmStatusError):
    """HSM Error: This operation is already in progress (0xBB)."""

    status_code = Status.BUSY


class KeyAccessDenied(HsmStatusError):
    """HSM Error: Key Access is denied (0xC6)."""

    status_code = Status.KEY_ACCESS_DENIED


class InvalidUserType(HsmStatusError):
    """HSM Error: Invalid User Type. (0xDB)."""

    status_code = Status.INVALID_USER_TYPE


class UnknownOp(HsmStatusError):
    """HSM Error: Unknown operation (0x1001)."""

    status_code = Status.UNKNOWN_OP


class InvalidArgument(HsmStatusError):
    """HSM Error: Invalid input data/params (0x1002)."""

    status_code = Status.INVALID_ARGUMENT


class NotLoggedIn(HsmStatusError):
    """HSM Error: User not logged in (0x1003)."""

    status_code = Status.NOT_LOGGED_IN


class PermissionDenied(HsmStatusError):
    """HSM Error: Operation not permitted for this user type (0x1004)."""

    status_code = Status.PERMISSION_DENIED


class AlreadyLoggedIn(HsmStatusError):
    """HSM Error: User already logged in (0x1005)."""

    status_code = Status.ALREADY_LOGGED_IN


class UserLocked(HsmStatusError):
    """HSM Error: RET_USER_LOCKED (0x1006)."""

    status_code = Status.USER_LOCKED


class UserExists(HsmStatusError):
    """HSM Error: User already exists (0x1007)."""

    status_code = Status.USER_EXISTS


class UserOwnsKeys(HsmStatusError):
    """HSM Error: User owns keys and cannot be deleted (0x1008)."""

    status_code = Status.USER_OWNS_KEYS


class UserLoggedIn(HsmStatusError):
    """HSM Error: User is currently logged in (0x1009)."""

    status_code = Status.USER_LOGGED_IN


class UserQuotaExceeded(HsmStatusError):
    """HSM Error: Maximum number of users reached (0x100A)."""

    status_code = Status.USER_QUOTA_EXCEEDED


class KeyQuotaExceeded(HsmStatusError):
    """HSM Error: Maximum number of keys reached (0x100B)."""

    status_code = Status.KEY_QUOTA_EXCEEDED


class QuorumRequired(HsmStatusError):
    """HSM Error: RET_MXN_AUTH_FAILED (0x100C)."""

    status_code = Status.QUORUM_REQUIRED


class InvalidQuorumValue(HsmStatusError):
    """HSM Error: Invalid M value (0x100D)."""

    status_code = Status.INVALID_QUORUM_VALUE


class AttributeReadOnly(HsmStatusError):
    """HSM Error: Attribute is read-only (0x100E)."""

    status_code = Status.ATTRIBUTE_READ_ONLY


class AttributeInvalid(HsmStatusError):
    """HSM Error: Invalid attribute value (0x100F)."""

    status_code = Status.ATTRIBUTE_INVALID


class TemplateInconsistent(HsmStatusError):
    """HSM Error: Template inconsistent (0x1010)."""

    status_code = Status.TEMPLATE_INCONSISTENT


class MechanismInvalid(HsmStatusError):
    """HSM Error: Invalid mechanism (0x1011)."""

    status_code = Status.MECHANISM_INVALID


class KeyFunctionNotPermitted(HsmStatusError):
    """HSM Error: Key function not permitted (0x1012)."""

    status_code = Status.KEY_FUNCTION_NOT_PERMITTED


class KeyUnextractable(HsmStatusError):
    """HSM Error: Key is not extractable (0x1013)."""

    status_code = Status.KEY_UNEXTRACTABLE


class DataLenRange(HsmStatusError):
    """HSM Error: Data length out of range (0x1014)."""

    status_code = Status.DATA_LEN_RANGE


class SignatureInvalid(HsmStatusError):
    """HSM Error: Signature verification failed (0x1015)."""

    status_code = Status.SIGNATURE_INVALID


class AlreadyActivated(HsmStatusError):
    """HSM Error: Cluster already activated (0x1016)."""

    status_code = Status.ALREADY_ACTIVATED


class NotActivated(HsmStatusError):
    """HSM Error: Cluster not activated (0x1017)."""

    status_code = Status.NOT_ACTIVATED


class EncryptedDataInvalid(HsmStatusError):
    """HSM Error: Encrypted data invalid (0x1018)."""

    status_code = Status.ENCRYPTED_DATA_INVALID


class TrustAnchorExists(HsmStatusError):
    """HSM Error: Trust anchor already exists (0x1019)."""

    status_code = Status.TRUST_ANCHOR_EXISTS


class TrustAnchorLimit(HsmStatusError):
    """HSM Error: Maximum number of trust anchors reached (0x101A)."""

    status_code = Status.TRUST_ANCHOR_LIMIT


class CertificateInvalid(HsmStatusError):
    """HSM Error: Invalid certificate (0x101B)."""

    status_code = Status.CERTIFICATE_INVALID


class HsmInternalError(HsmStatusError):
    """HSM Error: Internal error (0x101C)."""

    status_code = Status.INTERNAL_ERROR


class KeyUnavailable(HsmStatusError):
    """Key does not meet the availability requirements (0x101D)."""

    status_code = Status.KEY_UNAVAILABLE


class HsmUnavailable(HsmStatusError):
    """HSM unavailable (0x101E)."""

    status_code = Status.HSM_UNAVAILABLE


class TokenNotFound(HsmStatusError):
    """HSM Error: Quorum token not found (0x101F)."""

    status_code = Status.TOKEN_NOT_FOUND


class MtlsRequired(HsmStatusError):
    """HSM Error: mTLS connection required (0x1020)."""

    status_code = Status.MTLS_REQUIRED


class WrappingKeyNotTrusted(HsmStatusError):
    """HSM Error: Key Access is denied (0x1021)."""

    status_code = Status.WRAPPING_KEY_NOT_TRUSTED


class TokenLimit(HsmStatusError):
    """HSM Error: Maximum number of quorum tokens reached (0x1022)."""

    status_code = Status.TOKEN_LIMIT


_STATUS_ERRORS: dict[Status, type[HsmStatusError]] = {
    cls.status_code: cls for cls in HsmStatusError.__subclasses__() if cls.status_code is not None
}


def status_error(
    status: Status | int, message: str | None = None, result: object = None
) -> HsmStatusError:
    """The exception for a non-zero HSM status (the base class for unknown codes)."""
    try:
        known = Status(status)
    except ValueError:
        return HsmStatusError(status, message, result)
    return _STATUS_ERRORS.get(known, HsmStatusError)(known, message, result)
