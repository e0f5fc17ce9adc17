"""HSM core: initialization, activation, login, lockout and user management."""

from __future__ import annotations

import pytest
from faker import Faker
from hsm_support import (
    ADMIN_PASSWORD,
    activated_hsm,
    admin_session,
    call,
    crypto_user,
    login,
    open_hsm,
    refused,
)

from protocol.status import Status
from simulator.hsm import Hsm
from simulator.hsm.users import hash_password, verify_password


@pytest.fixture
def hsm() -> Hsm:
    return activated_hsm()


def test_hsm_info_needs_no_login() -> None:
    hsm = open_hsm()
    s = hsm.open_session(peer="p", client_cert_der=None)
    info = call(hsm, s, "hsm.info")
    assert info["vendor"] == "Marvell Semiconductors, Inc."
    assert info["serial-number"] == "5.3G1941-ICM000590"
    assert info["hsm-id"] == "hsm-abcdefghijk"
    assert info["cluster-id"] == "cluster-abcdefghijk"
    assert info["hsm-type"] == "hsm2m.medium"
    assert info["fips-state"].startswith("2 [FIPS mode")


def test_hsm1_info_matches_published_hardware() -> None:
    hsm = open_hsm(hsm_type="hsm1.medium")
    s = hsm.open_session(peer="p", client_cert_der=None)
    info = call(hsm, s, "hsm.info")
    assert info["model"] == "NITROX-III CNN35XX-NFBE"
    assert info["firmware-id"] == "CNN35XX-NFBE-FW-2.06-16"


def test_initialize_creates_unactivated_admin_and_app_user() -> None:
    hsm = open_hsm()
    hsm.initialize()
    s = hsm.open_session(peer="p", client_cert_der=None)
    listed = call(hsm, s, "user.list")["users"]
    assert [(u["username"], u["role"]) for u in listed] == [
        ("admin", "unactivated-admin"),
        ("app_user", "appliance"),
    ]
    assert not hsm.activated
    opcodes = [r["opcode"] for r in hsm.audit_records()]
    assert opcodes == [
        "CN_INIT_TOKEN (0x1)",
        "CN_GEN_PSWD_ENC_KEY (0x1d)",
        "CN_CREATE_APPLIANCE_USER (0xfc)",
        "CN_INIT_DONE (0x95)",
    ]


def test_activation_without_login_sets_admin_password() -> None:
    hsm = open_hsm()
    hsm.initialize()
    s = hsm.open_session(peer="p", client_cert_der=None)
    assert refused(hsm, s, "cluster.activate", password="short") == (
        Status.INVALID_ARGUMENT,
        "password must be 8 to 32 characters",
    )
    call(hsm, s, "cluster.activate", password=ADMIN_PASSWORD)
    assert hsm.activated
    assert call(hsm, s, "session.whoami") is None  # the implicit login is not kept
    assert refused(hsm, s, "cluster.activate", password=ADMIN_PASSWORD) == (
        Status.ALREADY_ACTIVATED,
        "Cluster has already been activated",
    )
    status, _ = refused(hsm, s, "login", username="admin", role="admin", password="password")
    assert status is Status.LOGIN_FAILURE
    call(hsm, s, "login", username="admin", role="admin", password=ADMIN_PASSWORD)
    record = next(r for r in hsm.audit_records() if r["opcode"].startswith("CN_CHANGE_PSWD"))
    assert record["user_type"] == "CN_CRYPTO_PRE_OFFICER (6)"


def test_activation_by_logged_in_unactivated_admin_upgrades_session() -> None:
    hsm = open_hsm()
    hsm.initialize()
    s = login(hsm, "admin", "unactivated-admin", "password")
    assert refused(hsm, s, "user.create", username="x", role="admin", password="12345678")[0] is (
        Status.PERMISSION_DENIED
    )
    call(hsm, s, "cluster.activate", password=ADMIN_PASSWORD)
    assert call(hsm, s, "session.whoami") == {"username": "admin", "role": "admin"}
    call(hsm, s, "user.create", username="x", role="admin", password="12345678")


def test_before_activation_other_logins_fail(hsm: Hsm) -> None:
    fresh = open_hsm()
    fresh.initialize()
    s = fresh.open_session(peer="p", client_cert_der=None)
    status, message = refused(
        fresh, s, "login", username="app_user", role="crypto-user", password="x"
    )
    assert message == "Incorrect authentication credentials"
    assert status is Status.LOGIN_FAILURE


def test_login_errors_and_second_login(hsm: Hsm) -> None:
    s = hsm.open_session(peer="p", client_cert_der=None)
    assert refused(hsm, s, "login", username="nobody", role="admin", password="12345678") == (
        Status.USER_NOT_FOUND,
        "Incorrect authentication credentials",
    )
    # The right name with the wrong role is a user that does not exist.
    assert refused(hsm, s, "login", username="admin", role="crypto-user", password=ADMIN_PASSWORD)[
        0
    ] is (Status.USER_NOT_FOUND)
    assert refused(hsm, s, "login", username="Bad-Name", role="admin", password="x")[0] is (
        Status.INVALID_ARGUMENT
    )
    call(hsm, s, "login", username="ADMIN", role="admin", password=ADMIN_PASSWORD)
    assert refused(hsm, s, "login", username="admin", role="admin", password=ADMIN_PASSWORD)[0] is (
        Status.ALREADY_LOGGED_IN
    )
    call(hsm, s, "logout")
    assert refused(hsm, s, "logout")[0] is Status.NOT_LOGGED_IN


def test_permission_table(hsm: Hsm) -> None:
    anonymous = hsm.open_session(peer="p", client_cert_der=None)
    for op in ("user.list", "hsm.info", "quorum.values", "quorum.timeouts"):
        call(hsm, anonymous, op)
    assert refused(hsm, anonymous, "user.create", username="a", role="admin", password="x" * 8)[
        0
    ] is (Status.NOT_LOGGED_IN)
    admin = admin_session(hsm)
    cu = crypto_user(hsm, admin, "alice")
    assert refused(hsm, cu, "user.create", username="b", role="admin", password="x" * 8)[0] is (
        Status.PERMISSION_DENIED
    )
    assert refused(hsm, admin, "key.generate", key_type="aes", key_length_bytes=16)[0] is (
        Status.PERMISSION_DENIED
    )
    assert refused(hsm, cu, "audit.read")[0] is Status.PERMISSION_DENIED
    assert refused(hsm, admin, "no.such.op")[0] is Status.UNKNOWN_OP


def test_lockout_after_five_failures_and_admin_unlock(hsm: Hsm) -> None:
    admin = admin_session(hsm)
    call(hsm, admin, "user.create", username="bob", role="crypto-user", password="bob-pass-1")
    s = hsm.open_session(peer="p", client_cert_der=None)
    for _ in range(5):
        assert refused(hsm, s, "login", username="bob", role="crypto-user", password="wrong-pw")[
            0
        ] is (Status.LOGIN_FAILURE)
    assert refused(hsm, s, "login", username="bob", role="crypto-user", password="bob-pass-1")[
        0
    ] is (Status.USER_LOCKED)
    bob = next(u for u in call(hsm, s, "user.list")["users"] if u["username"] == "bob")
    assert bob["locked"] is True
    call(
        hsm,
        admin,
        "user.change_password",
        username="bob",
        role="crypto-user",
        password="bob-pass-2",
    )
    call(hsm, s, "login", username="bob", role="crypto-user", password="bob-pass-2")
    responses = [r["response"] for r in hsm.audit_records() if r["opcode"] == "CN_LOGIN (0xd)"]
    assert responses.count("163:HSM Error: RET_USER_LOGIN_FAILURE") == 5


def test_failure_count_resets_on_success(hsm: Hsm) -> None:
    s = hsm.open_session(peer="p", client_cert_der=None)
    for _ in range(4):
        refused(hsm, s, "login", username="admin", role="admin", password="wrong-pw")
    call(hsm, s, "login", username="admin", role="admin", password=ADMIN_PASSWORD)
    call(hsm, s, "logout")
    for _ in range(4):
        refused(hsm, s, "login", username="admin", role="admin", password="wrong-pw")
    call(hsm, s, "login", username="admin", role="admin", password=ADMIN_PASSWORD)


def test_user_create_rules(hsm: Hsm, faker: Faker) -> None:
    admin = admin_session(hsm)
    name = faker.user_name().replace(".", "_")[:31]
    created = call(
        hsm, admin, "user.create", username=name.upper(), role="crypto-user", password="pw123456"
    )
    assert created == {"username": name.lower(), "role": "crypto-user"}
    assert refused(hsm, admin, "user.create", username=name, role="admin", password="pw123456") == (
        Status.USER_EXISTS,
        "User already exists",
    )
    for bad in ("", "a" * 32, "has space", "dash-name", 7):
        assert refused(hsm, admin, "user.create", username=bad, role="admin", password="x" * 8)[
            0
        ] is (Status.INVALID_ARGUMENT)
    for bad_pw in ("x" * 7, "x" * 33, None):
        status, message = refused(
            hsm, admin, "user.create", username="ok_name", role="admin", password=bad_pw
        )
        assert status is Status.INVALID_ARGUMENT
        assert "password" in message
    assert refused(hsm, admin, "user.create", username="ok", role="appliance", password="x" * 8)[
        0
    ] is (Status.INVALID_ARGUMENT)
    assert "ok_name" not in {u["username"] for u in call(hsm, admin, "user.list")["users"]}


def test_user_quota_hsm1() -> None:
    hsm = activated_hsm(hsm_type="hsm1.medium")
    admin = admin_session(hsm)
    for i in range(249):  # the admin is user 1 of 250
        call(hsm, admin, "user.create", username=f"u{i}", role="crypto-user", password="pw123456")
    assert refused(hsm, admin, "user.create", username="last", role="admin", password="pw123456")[
        0
    ] is (Status.USER_QUOTA_EXCEEDED)


def test_delete_user_rules(hsm: Hsm) -> None:
    admin = admin_session(hsm)
    cu = crypto_user(hsm, admin, "carol")
    assert refused(hsm, admin, "user.delete", username="carol", role="crypto-user")[0] is (
        Status.USER_LOGGED_IN
    )
    assert refused(hsm, admin, "user.delete", username="nobody", role="crypto-user") == (
        Status.USER_NOT_FOUND,
        "Specified user does not exist",
    )
    assert refused(hsm, admin, "user.delete", username="carol", role="admin")[0] is (
        Status.USER_NOT_FOUND
    )
    hsm.close_session(cu)
    assert call(hsm, admin, "user.delete", username="carol", role="crypto-user") == {
        "username": "carol",
        "role": "crypto-user",
    }
    assert "carol" not in {u["username"] for u in call(hsm, admin, "user.list")["users"]}


def test_crypto_user_changes_only_own_password(hsm: Hsm) -> None:
    admin = admin_session(hsm)
    dave = crypto_user(hsm, admin, "dave", "dave-pass")
    call(hsm, admin, "user.create", username="erin", role="crypto-user", password="erin-pass")
    assert refused(
        hsm, dave, "user.change_password", username="erin", role="crypto-user", password="x" * 8
    )[0] is (Status.PERMISSION_DENIED)
    call(
        hsm, dave, "user.change_password", username="dave", role="crypto-user", password="new-pass"
    )
    hsm.close_session(dave)
    login(hsm, "dave", "crypto-user", "new-pass")
    # The admin cannot change the password of someone logged in elsewhere.
    assert refused(
        hsm, admin, "user.change_password", username="dave", role="crypto-user", password="y" * 8
    )[0] is (Status.USER_LOGGED_IN)


def test_password_hash_is_salted_and_verifies() -> None:
    first, second = hash_password("same-password", n=16), hash_password("same-password", n=16)
    assert first != second
    assert verify_password("same-password", first)
    assert not verify_password("other-password", first)
    assert not verify_password("same-password", "garbage")
    assert "same-password" not in first


def test_wrong_argument_types_change_nothing(hsm: Hsm) -> None:
    admin = admin_session(hsm)
    before = call(hsm, admin, "user.list")
    sequence = len(hsm.audit_records())
    status, result = hsm.handle(admin, "user.create", [])  # type: ignore[arg-type]
    assert status is Status.INVALID_ARGUMENT
    assert result == {"message": "args must be a map"}
    assert call(hsm, admin, "user.list") == before
    assert len(hsm.audit_records()) == sequence


def test_unknown_session_is_refused(hsm: Hsm) -> None:
    assert hsm.handle(12345, "hsm.info", {})[0] is Status.INVALID_ARGUMENT
