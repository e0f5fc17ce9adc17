"""HSM core: the audit log (gapless, management ops only, CloudHSM layouts)."""

from __future__ import annotations

import json

from hsm_support import activated_hsm, admin_session, call, crypto_user, refused

from protocol.status import Status
from simulator.hsm.audit import make_record, render_json_lines, render_text


def test_login_failures_use_cloudhsm_response_codes() -> None:
    hsm = activated_hsm()
    s = hsm.open_session(peer="p", client_cert_der=None)
    refused(hsm, s, "login", username="ghost", role="crypto-user", password="whatever1")
    refused(hsm, s, "login", username="admin", role="admin", password="wrong-pass")
    call(hsm, s, "login", username="admin", role="admin", password="admin-password-1")
    logins = [r for r in hsm.audit_records() if r["opcode"] == "CN_LOGIN (0xd)"]
    assert [r["response"] for r in logins] == [
        "157:HSM Error: user isn't initialized or user with this name doesn't exist",
        "163:HSM Error: RET_USER_LOGIN_FAILURE",
        "0:HSM Return: SUCCESS",
    ]
    assert logins[0]["user_name"] == "ghost"
    assert logins[0]["user_type"] == "CN_CRYPTO_USER (1)"
    assert logins[2]["user_type"] == "CN_CRYPTO_OFFICER (2)"
    assert logins[2]["session_handle"] == s
    assert logins[2]["log_type"] == "MGMT_USER_DETAILS_LOG (2)"
    assert logins[2]["command_type"] == "CN_MGMT_CMD (0x0)"


def test_sequence_is_gapless_and_crypto_is_not_logged() -> None:
    hsm = activated_hsm()
    admin = admin_session(hsm)
    alice = crypto_user(hsm, admin, "alice")
    key = call(
        hsm,
        alice,
        "key.generate",
        key_type="generic-secret",
        key_length_bytes=32,
        attributes={"sign": True},
    )["key"]
    before = len(hsm.audit_records())
    for _ in range(5):
        call(
            hsm,
            alice,
            "crypto.mac",
            key_reference=key["key-reference"],
            mechanism="hmac",
            hash="sha256",
            data=b"x",
        )
    call(hsm, alice, "crypto.random", length=8)
    assert len(hsm.audit_records()) == before
    # A refused management op is logged with its status; a malformed one is not.
    refused(hsm, admin, "user.delete", username="nobody", role="crypto-user")
    refused(hsm, admin, "user.delete", username="bad name", role="crypto-user")
    records = hsm.audit_records()
    assert records[-1]["opcode"] == "CN_DELETE_USER (0xa1)"
    assert records[-1]["response"].startswith("157:")
    assert [r["sequence"] for r in records] == list(range(len(records)))
    call(hsm, alice, "key.delete", key_reference=key["key-reference"])
    deleted = hsm.audit_records()[-1]
    assert deleted["opcode"] == "CN_TOMBSTONE_OBJECT (0x23)"
    assert deleted["key_handle"] == key["key-reference"]


def test_audit_read_op_pages_and_needs_admin() -> None:
    hsm = activated_hsm()
    admin = admin_session(hsm)
    alice = crypto_user(hsm, admin, "alice")
    assert refused(hsm, alice, "audit.read")[0] is Status.PERMISSION_DENIED
    everything = call(hsm, admin, "audit.read")["records"]
    assert everything == hsm.audit_records()
    page = call(hsm, admin, "audit.read", after_sequence=2, limit=3)["records"]
    assert [r["sequence"] for r in page] == [3, 4, 5]
    assert refused(hsm, admin, "audit.read", limit=0)[0] is Status.INVALID_ARGUMENT


def test_activation_is_change_password_by_pre_officer() -> None:
    hsm = activated_hsm()
    opcodes = [(r["opcode"], r.get("user_name"), r.get("user_type")) for r in hsm.audit_records()]
    assert opcodes[:5] == [
        ("CN_INIT_TOKEN (0x1)", None, None),
        ("CN_GEN_PSWD_ENC_KEY (0x1d)", None, None),
        ("CN_CREATE_APPLIANCE_USER (0xfc)", "app_user", "CN_APPLIANCE_USER (5)"),
        ("CN_INIT_DONE (0x95)", None, None),
        ("CN_CHANGE_PSWD (0x9)", "admin", "CN_CRYPTO_PRE_OFFICER (6)"),
    ]


def test_text_layout_matches_cloudhsm() -> None:
    record = make_record(
        sequence=0,
        reboot_counter=0x107,
        opcode="CN_LOGIN",
        session_handle=0x7014006,
        status=Status.SUCCESS,
        user_name="admin",
        user_type="CN_CRYPTO_OFFICER (2)",
        time_us=1516067329824999,
    )
    assert render_text([record]) == (
        "Time: 01/16/18 01:48:49.824999, usecs:1516067329824999\n"
        "Sequence No : 0x0\n"
        "Reboot counter : 0x107\n"
        "Command Type(hex) : CN_MGMT_CMD (0x0)\n"
        "Opcode : CN_LOGIN (0xd)\n"
        "Session Handle : 0x7014006\n"
        "Response : 0:HSM Return: SUCCESS\n"
        "Log type : MGMT_USER_DETAILS_LOG (2)\n"
        "User Name : admin\n"
        "User Type : CN_CRYPTO_OFFICER (2)\n"
    )


def test_key_event_and_json_lines() -> None:
    record = make_record(
        sequence=7,
        reboot_counter=1,
        opcode="CN_GENERATE_KEY_PAIR",
        session_handle=1,
        status=Status.KEY_ACCESS_DENIED,
        key_handle=0x640007,
        public_key_handle=0x640006,
        time_us=0,
    )
    text = render_text([record])
    assert "Response : 198:HSM Error: Key Access is denied" in text
    assert "Log type : MGMT_KEY_DETAILS_LOG (1)" in text
    assert "Priv/Secret Key Handle : 6553607" in text
    assert "Public Key Handle : 6553606" in text
    (line,) = render_json_lines([record]).splitlines()
    assert json.loads(line) == record
    assert render_text([]) == ""
