"""The one status vocabulary of the HSM, mapped once to every surface.

Codes that CloudHSM documents keep CloudHSM's numbers (0xBB busy, 0xC6 key
access denied, 157 unknown user, 163 bad password...). Conditions CloudHSM
reports without a published number get simulator codes from 0x1000 up, so they
can never collide with a vendor code. Each status carries the HSM's own text
(as in audit logs and KMU output), the PKCS#11 return value an application
would see, and the message the CloudHSM CLI prints in ``{"error_code": 1}``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StatusInfo:
    hsm_text: str
    ckr: int
    cli_message: str


class Status(enum.IntEnum):
    SUCCESS = 0x00
    USER_NOT_FOUND = 157  # 0x9D
    LOGIN_FAILURE = 163  # 0xA3
    INVALID_HANDLE = 0xA8
    POLICY_VIOLATION = 0xB3
    BUSY = 0xBB
    KEY_ACCESS_DENIED = 0xC6
    INVALID_USER_TYPE = 0xDB

    UNKNOWN_OP = 0x1001
    INVALID_ARGUMENT = 0x1002
    NOT_LOGGED_IN = 0x1003
    PERMISSION_DENIED = 0x1004
    ALREADY_LOGGED_IN = 0x1005
    USER_LOCKED = 0x1006
    USER_EXISTS = 0x1007
    USER_OWNS_KEYS = 0x1008
    USER_LOGGED_IN = 0x1009
    USER_QUOTA_EXCEEDED = 0x100A
    KEY_QUOTA_EXCEEDED = 0x100B
    QUORUM_REQUIRED = 0x100C
    INVALID_QUORUM_VALUE = 0x100D
    ATTRIBUTE_READ_ONLY = 0x100E
    ATTRIBUTE_INVALID = 0x100F
    TEMPLATE_INCONSISTENT = 0x1010
    MECHANISM_INVALID = 0x1011
    KEY_FUNCTION_NOT_PERMITTED = 0x1012
    KEY_UNEXTRACTABLE = 0x1013
    DATA_LEN_RANGE = 0x1014
    SIGNATURE_INVALID = 0x1015
    ALREADY_ACTIVATED = 0x1016
    NOT_ACTIVATED = 0x1017
    ENCRYPTED_DATA_INVALID = 0x1018
    TRUST_ANCHOR_EXISTS = 0x1019
    TRUST_ANCHOR_LIMIT = 0x101A
    CERTIFICATE_INVALID = 0x101B
    INTERNAL_ERROR = 0x101C
    KEY_UNAVAILABLE = 0x101D
    HSM_UNAVAILABLE = 0x101E
    TOKEN_NOT_FOUND = 0x101F
    MTLS_REQUIRED = 0x1020
    WRAPPING_KEY_NOT_TRUSTED = 0x1021
    TOKEN_LIMIT = 0x1022

    @property
    def info(self) -> StatusInfo:
        return _INFO[self]

    @property
    def ok(self) -> bool:
        return self is Status.SUCCESS


# PKCS#11 return values (pkcs11t.h, v2.40).
CKR_OK = 0x000
CKR_ARGUMENTS_BAD = 0x007
CKR_FUNCTION_FAILED = 0x006
CKR_GENERAL_ERROR = 0x005
CKR_ATTRIBUTE_READ_ONLY = 0x010
CKR_ATTRIBUTE_TYPE_INVALID = 0x012
CKR_ATTRIBUTE_VALUE_INVALID = 0x013
CKR_DATA_LEN_RANGE = 0x021
CKR_DEVICE_ERROR = 0x030
CKR_ENCRYPTED_DATA_INVALID = 0x040
CKR_KEY_FUNCTION_NOT_PERMITTED = 0x068
CKR_KEY_UNEXTRACTABLE = 0x06A
CKR_MECHANISM_INVALID = 0x070
CKR_OBJECT_HANDLE_INVALID = 0x082
CKR_OPERATION_ACTIVE = 0x090
CKR_PIN_INCORRECT = 0x0A0
CKR_PIN_LOCKED = 0x0A4
CKR_SIGNATURE_INVALID = 0x0C0
CKR_TEMPLATE_INCONSISTENT = 0x0D1
CKR_USER_ALREADY_LOGGED_IN = 0x100
CKR_USER_NOT_LOGGED_IN = 0x101
CKR_USER_TYPE_INVALID = 0x103
CKR_WRAPPING_KEY_HANDLE_INVALID = 0x113
CKR_DEVICE_MEMORY = 0x031
CKR_CRYPTOKI_NOT_INITIALIZED = 0x190

_S = StatusInfo
_INFO: dict[Status, StatusInfo] = {
    Status.SUCCESS: _S("HSM Return: SUCCESS", CKR_OK, ""),
    Status.USER_NOT_FOUND: _S(
        "HSM Error: user isn't initialized or user with this name doesn't exist",
        CKR_PIN_INCORRECT,
        "Incorrect authentication credentials",
    ),
    Status.LOGIN_FAILURE: _S(
        "HSM Error: RET_USER_LOGIN_FAILURE",
        CKR_PIN_INCORRECT,
        "Incorrect authentication credentials",
    ),
    Status.INVALID_HANDLE: _S(
        "HSM Error: Invalid object handle is passed to this operation",
        CKR_OBJECT_HANDLE_INVALID,
        "Key not found",
    ),
    Status.POLICY_VIOLATION: _S(
        "HSM Error: This operation violates the current configured/FIPS policies",
        CKR_FUNCTION_FAILED,
        "This operation violates the current configured/FIPS policies",
    ),
    Status.BUSY: _S(
        "HSM Error: This operation is already in progress",
        CKR_FUNCTION_FAILED,
        "HSM Error: HSM is already busy generating the keys(or random bytes) for another request.",
    ),
    Status.KEY_ACCESS_DENIED: _S(
        "HSM Error: Key Access is denied", CKR_OBJECT_HANDLE_INVALID, "Key Access is denied"
    ),
    Status.INVALID_USER_TYPE: _S(
        "HSM Error: Invalid User Type.", CKR_USER_TYPE_INVALID, "Invalid User Type."
    ),
    Status.UNKNOWN_OP: _S("HSM Error: Unknown operation", CKR_FUNCTION_FAILED, "Unknown operation"),
    Status.INVALID_ARGUMENT: _S(
        "HSM Error: Invalid input data/params", CKR_ARGUMENTS_BAD, "Invalid argument"
    ),
    Status.NOT_LOGGED_IN: _S(
        "HSM Error: User not logged in", CKR_USER_NOT_LOGGED_IN, "User is not logged in"
    ),
    Status.PERMISSION_DENIED: _S(
        "HSM Error: Operation not permitted for this user type",
        CKR_FUNCTION_FAILED,
        "The logged in user does not have permission to perform this operation",
    ),
    Status.ALREADY_LOGGED_IN: _S(
        "HSM Error: User already logged in", CKR_USER_ALREADY_LOGGED_IN, "User is already logged in"
    ),
    Status.USER_LOCKED: _S("HSM Error: RET_USER_LOCKED", CKR_PIN_LOCKED, "User is locked out"),
    Status.USER_EXISTS: _S(
        "HSM Error: User already exists", CKR_FUNCTION_FAILED, "User already exists"
    ),
    Status.USER_OWNS_KEYS: _S(
        "HSM Error: User owns keys and cannot be deleted",
        CKR_FUNCTION_FAILED,
        "Cannot delete a user that owns keys",
    ),
    Status.USER_LOGGED_IN: _S(
        "HSM Error: User is currently logged in", CKR_FUNCTION_FAILED, "User is currently logged in"
    ),
    Status.USER_QUOTA_EXCEEDED: _S(
        "HSM Error: Maximum number of users reached",
        CKR_DEVICE_MEMORY,
        "Maximum number of users reached",
    ),
    Status.KEY_QUOTA_EXCEEDED: _S(
        "HSM Error: Maximum number of keys reached",
        CKR_DEVICE_MEMORY,
        "Maximum number of keys reached",
    ),
    Status.QUORUM_REQUIRED: _S(
        "HSM Error: RET_MXN_AUTH_FAILED",
        CKR_FUNCTION_FAILED,
        "Quorum approval is required for this operation",
    ),
    Status.INVALID_QUORUM_VALUE: _S(
        "HSM Error: Invalid M value", CKR_ARGUMENTS_BAD, "Invalid quorum value provided."
    ),
    Status.ATTRIBUTE_READ_ONLY: _S(
        "HSM Error: Attribute is read-only", CKR_ATTRIBUTE_READ_ONLY, "Attribute is read-only"
    ),
    Status.ATTRIBUTE_INVALID: _S(
        "HSM Error: Invalid attribute value", CKR_ATTRIBUTE_VALUE_INVALID, "Invalid attribute value"
    ),
    Status.TEMPLATE_INCONSISTENT: _S(
        "HSM Error: Template inconsistent", CKR_TEMPLATE_INCONSISTENT, "Template inconsistent"
    ),
    Status.MECHANISM_INVALID: _S(
        "HSM Error: Invalid mechanism", CKR_MECHANISM_INVALID, "Invalid mechanism"
    ),
    Status.KEY_FUNCTION_NOT_PERMITTED: _S(
        "HSM Error: Key function not permitted",
        CKR_KEY_FUNCTION_NOT_PERMITTED,
        "The key does not permit this operation",
    ),
    Status.KEY_UNEXTRACTABLE: _S(
        "HSM Error: Key is not extractable", CKR_KEY_UNEXTRACTABLE, "The key is not extractable"
    ),
    Status.DATA_LEN_RANGE: _S(
        "HSM Error: Data length out of range", CKR_DATA_LEN_RANGE, "Data length out of range"
    ),
    Status.SIGNATURE_INVALID: _S(
        "HSM Error: Signature verification failed",
        CKR_SIGNATURE_INVALID,
        "Signature verification failed",
    ),
    Status.ALREADY_ACTIVATED: _S(
        "HSM Error: Cluster already activated",
        CKR_FUNCTION_FAILED,
        "Cluster has already been activated",
    ),
    Status.NOT_ACTIVATED: _S(
        "HSM Error: Cluster not activated",
        CKR_CRYPTOKI_NOT_INITIALIZED,
        "Incorrect authentication credentials",
    ),
    Status.ENCRYPTED_DATA_INVALID: _S(
        "HSM Error: Encrypted data invalid", CKR_ENCRYPTED_DATA_INVALID, "Encrypted data is invalid"
    ),
    Status.TRUST_ANCHOR_EXISTS: _S(
        "HSM Error: Trust anchor already exists",
        CKR_FUNCTION_FAILED,
        "Invalid Certificate: Trust anchor already exists.",
    ),
    Status.TRUST_ANCHOR_LIMIT: _S(
        "HSM Error: Maximum number of trust anchors reached",
        CKR_FUNCTION_FAILED,
        "Maximum number of trust anchors reached",
    ),
    Status.CERTIFICATE_INVALID: _S(
        "HSM Error: Invalid certificate", CKR_ARGUMENTS_BAD, "Invalid Certificate"
    ),
    Status.INTERNAL_ERROR: _S("HSM Error: Internal error", CKR_GENERAL_ERROR, "Internal error"),
    Status.KEY_UNAVAILABLE: _S(
        "Key does not meet the availability requirements",
        CKR_FUNCTION_FAILED,
        "Cannot perform the requested key operation as the key must be available on at least "
        "2 HSMs. Add another HSM to the cluster or disable the key availability check.",
    ),
    Status.HSM_UNAVAILABLE: _S(
        "HSM unavailable",
        CKR_DEVICE_ERROR,
        "Communication with the device was lost during the execution of the function.",
    ),
    Status.TOKEN_NOT_FOUND: _S(
        "HSM Error: Quorum token not found", CKR_FUNCTION_FAILED, "Quorum token not found"
    ),
    Status.MTLS_REQUIRED: _S(
        "HSM Error: mTLS connection required",
        CKR_FUNCTION_FAILED,
        "This operation requires an mTLS connection",
    ),
    Status.WRAPPING_KEY_NOT_TRUSTED: _S(
        "HSM Error: Key Access is denied",
        CKR_WRAPPING_KEY_HANDLE_INVALID,
        "The key can only be wrapped by a trusted key",
    ),
    Status.TOKEN_LIMIT: _S(
        "HSM Error: Maximum number of quorum tokens reached",
        CKR_FUNCTION_FAILED,
        "Maximum number of quorum tokens reached",
    ),
}


def status_from_wire(code: int) -> Status:
    """Map a wire status to the enum; unknown codes become INTERNAL_ERROR."""
    try:
        return Status(code)
    except ValueError:
        return Status.INTERNAL_ERROR
