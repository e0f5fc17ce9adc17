"""The per-HSM audit log: management operations only, gapless from sequence 0.

Records follow CloudHSM's audit events (spec §10.4): a sequence number that
starts at 0 per HSM and never skips, the reboot counter, the command type, the
opcode by its firmware name, the session handle, the response
(``<code>:HSM Return|Error: ...``), the log type and, for user and key events,
the user name and type or the key handles. Cryptographic operations (sign,
encrypt, MAC...) are not recorded, as on a real HSM.

Records are appended inside the same store transaction as the change they
describe, so the log never claims an operation the store lacks, or the reverse.
:func:`render_text` prints the CloudWatch text layout, :func:`render_json_lines`
one JSON object per line.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from protocol.status import Status

#: Firmware opcode names and numbers (numbers where CloudHSM publishes them;
#: the others are simulator-assigned and marked in docs/hsm.md).
OPCODES: dict[str, int] = {
    "CN_INIT_TOKEN": 0x1,
    "CN_CREATE_USER": 0x3,
    "CN_CREATE_CO": 0x4,
    "CN_CHANGE_PSWD": 0x9,
    "CN_LOGIN": 0xD,
    "CN_LOGOUT": 0xE,
    "CN_DESTROY_OBJECT": 0x11,
    "CN_GENERATE_KEY": 0x17,
    "CN_GENERATE_KEY_PAIR": 0x19,
    "CN_WRAP_KEY": 0x1A,
    "CN_UNWRAP_KEY": 0x1B,
    "CN_GEN_PSWD_ENC_KEY": 0x1D,
    "CN_DERIVE_KEY": 0x1E,
    "CN_CREATE_OBJECT": 0x20,
    "CN_MODIFY_OBJECT": 0x21,
    "CN_SHARE_OBJECT": 0x22,
    "CN_TOMBSTONE_OBJECT": 0x23,
    "CN_CLOSE_SESSION": 0x24,
    "CN_APP_FINALIZE": 0x25,
    "CN_SET_M_VALUE": 0x26,
    "CN_GET_TOKEN": 0x27,
    "CN_APPROVE_TOKEN": 0x28,
    "CN_DELETE_TOKEN": 0x29,
    "CN_REGISTER_QUORUM_PUBKEY": 0x2A,
    "CN_SET_MFA": 0x2B,
    "CN_SET_TOKEN_TIMEOUT": 0x2C,
    "CN_INIT_DONE": 0x95,
    "CN_DELETE_USER": 0xA1,
    "CN_EXTRACT_MASKED_OBJECT_USER": 0xF0,
    "CN_INSERT_MASKED_OBJECT_USER": 0xF1,
    "CN_CREATE_APPLIANCE_USER": 0xFC,
    "CN_CERT_AUTH_STORE_CERT": 0x101,
    "CN_CERT_AUTH_DELETE_CERT": 0x102,
    "CN_CERT_AUTH_SET_ENFORCEMENT": 0x103,
}

COMMAND_TYPES = {"CN_MGMT_CMD": 0x0, "CN_CERT_AUTH_CMD": 0x9}

MINIMAL_LOG_ENTRY = "MINIMAL_LOG_ENTRY (0)"
MGMT_KEY_DETAILS_LOG = "MGMT_KEY_DETAILS_LOG (1)"
MGMT_USER_DETAILS_LOG = "MGMT_USER_DETAILS_LOG (2)"


def opcode_text(name: str) -> str:
    return f"{name} (0x{OPCODES[name]:x})"


def response_text(status: Status) -> str:
    return f"{int(status)}:{status.info.hsm_text}"


def make_record(
    *,
    sequence: int,
    reboot_counter: int,
    opcode: str,
    session_handle: int,
    status: Status,
    user_name: str | None = None,
    user_type: str | None = None,
    key_handle: int | None = None,
    public_key_handle: int | None = None,
    time_us: int | None = None,
) -> dict[str, Any]:
    command_type = "CN_CERT_AUTH_CMD" if opcode.startswith("CN_CERT_AUTH") else "CN_MGMT_CMD"
    if key_handle is not None or public_key_handle is not None:
        log_type = MGMT_KEY_DETAILS_LOG
    elif user_name is not None:
        log_type = MGMT_USER_DETAILS_LOG
    else:
        log_type = MINIMAL_LOG_ENTRY
    record: dict[str, Any] = {
        "sequence": sequence,
        "time_us": time_us if time_us is not None else time.time_ns() // 1000,
        "reboot_counter": reboot_counter,
        "command_type": f"{command_type} (0x{COMMAND_TYPES[command_type]:x})",
        "opcode": opcode_text(opcode),
        "session_handle": session_handle,
        "response": response_text(status),
        "log_type": log_type,
    }
    if user_name is not None:
        record["user_name"] = user_name
    if user_type is not None:
        record["user_type"] = user_type
    if key_handle is not None:
        record["key_handle"] = key_handle
    if public_key_handle is not None:
        record["public_key_handle"] = public_key_handle
    return record


def render_text(records: Iterable[Mapping[str, Any]]) -> str:
    """The CloudHSM audit event layout (one blank line between events)."""
    events = []
    for r in records:
        when = datetime.fromtimestamp(r["time_us"] / 1_000_000, tz=UTC)
        lines = [
            f"Time: {when:%m/%d/%y %H:%M:%S}.{r['time_us'] % 1_000_000:06d}, usecs:{r['time_us']}",
            f"Sequence No : 0x{r['sequence']:x}",
            f"Reboot counter : 0x{r['reboot_counter']:x}",
            f"Command Type(hex) : {r['command_type']}",
            f"Opcode : {r['opcode']}",
            f"Session Handle : 0x{r['session_handle']:x}",
            f"Response : {r['response']}",
            f"Log type : {r['log_type']}",
        ]
        if "user_name" in r:
            lines.append(f"User Name : {r['user_name']}")
        if "user_type" in r:
            lines.append(f"User Type : {r['user_type']}")
        if "key_handle" in r:
            lines.append(f"Priv/Secret Key Handle : {r['key_handle']}")
        if "public_key_handle" in r:
            lines.append(f"Public Key Handle : {r['public_key_handle']}")
        events.append("\n".join(lines))
    return "\n\n".join(events) + ("\n" if events else "")


def render_json_lines(records: Iterable[Mapping[str, Any]]) -> str:
    """One JSON object per record; bytes (never present today) would be base64."""

    def default(value: object) -> str:
        if isinstance(value, bytes):
            return base64.b64encode(value).decode()
        raise TypeError(type(value).__name__)

    return "".join(json.dumps(dict(r), sort_keys=True, default=default) + "\n" for r in records)
