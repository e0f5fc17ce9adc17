"""Family ``users``: HSM users as CloudHSM CLI scripts see them.

Every scenario drives ``cloudhsm-cli`` (single-command mode, credentials in
``CLOUDHSM_ROLE``/``CLOUDHSM_PIN``) against the session's cluster and checks
only what the CLI prints: roles, username and password rules, the lockout
after five failed logins, the unlock by password change, the rule that a user
who owns keys cannot be deleted, and the permission table (spec §3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fixtures.clients import CloudHsmCli, Credentials, admin_credentials
from fixtures.cluster import ClusterFactory
from fixtures.users import UserFactory, UserNames

pytestmark = pytest.mark.conformance("users")

#: hsm1.medium's quota of users per cluster is 250 (spec §3.7, §7; the admin is one of
#: them); the quota scenario lowers it to this (see its description).
LOWERED_USER_QUOTA = 8
#: The refusal past the quota: the wording of the quotas page. The real CLI's JSON text
#: for it is among the strings spec §13 lists as unverified.
USER_QUOTA_REACHED = "Maximum number of users reached"


def listed(cli: CloudHsmCli, username: str) -> dict[str, Any] | None:
    """The ``user list`` entry of ``username``, or None."""
    users = cli.ok("user", "list")["users"]
    matches = [u for u in users if u["username"] == username]
    assert len(matches) <= 1, f"{username} listed twice: {matches}"
    return matches[0] if matches else None


def login(cli: CloudHsmCli, user: Credentials, password: str | None = None) -> dict[str, Any]:
    return cli(
        "login",
        "--username",
        user.username,
        "--role",
        user.role,
        "--password",
        user.password if password is None else password,
    )


def test_user_list_needs_no_login_and_shows_the_admin(cli: CloudHsmCli) -> None:
    """`user list` works without logging in and shows the activated admin with the documented
    fields: role admin, not locked, no MFA or quorum registration, full cluster coverage."""
    admin = listed(cli, "admin")
    assert admin == {
        "username": "admin",
        "role": "admin",
        "locked": "false",
        "mfa": [],
        "quorum": [],
        "cluster-coverage": "full",
    }


def test_admin_creates_lists_and_deletes_a_crypto_user(
    admin_cli: CloudHsmCli, cli: CloudHsmCli, user_names: UserNames
) -> None:
    """An admin creates a crypto user (the CLI answers with its name and role), the user
    appears in `user list` on every HSM, and after `user delete` it is gone."""
    username, password = user_names.username(), user_names.password()
    created = admin_cli.ok(
        "user", "create", "--username", username, "--role", "crypto-user", "--password", password
    )
    assert created == {"username": username, "role": "crypto-user"}
    entry = listed(cli, username)
    assert entry is not None
    assert (entry["role"], entry["locked"], entry["cluster-coverage"]) == (
        "crypto-user",
        "false",
        "full",
    )
    deleted = admin_cli.ok("user", "delete", "--username", username, "--role", "crypto-user")
    assert deleted == {"username": username, "role": "crypto-user"}
    assert listed(cli, username) is None


def test_admin_creates_another_admin_who_can_log_in(
    admin_user: UserFactory, cli: CloudHsmCli
) -> None:
    """A second admin created by the first can log in with the admin role."""
    officer = admin_user("officer_")
    assert login(cli, officer)["data"] == {"username": officer.username, "role": "admin"}


def test_usernames_are_case_insensitive_and_shown_lowercase(
    admin_cli: CloudHsmCli, cli: CloudHsmCli, user_names: UserNames
) -> None:
    """A username given in mixed case is stored and shown in lower case, and the same name
    in another case is the same user: creating it again says `User already exists`."""
    username = user_names.username()
    mixed = username.upper()
    password = user_names.password()
    created = admin_cli.ok(
        "user", "create", "--username", mixed, "--role", "crypto-user", "--password", password
    )
    assert created["username"] == username
    assert listed(cli, username) is not None
    message = admin_cli.error(
        "user", "create", "--username", username, "--role", "crypto-user", "--password", password
    )
    assert "User already exists" in message


def test_deleting_a_missing_user_is_refused(admin_cli: CloudHsmCli, user_names: UserNames) -> None:
    """Deleting a user that does not exist fails with `Specified user does not exist`."""
    message = admin_cli.error(
        "user", "delete", "--username", user_names.username(), "--role", "crypto-user"
    )
    assert message == "Specified user does not exist"


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("u" * 32, "password-ok-1"),  # 32 characters: one too many
        ("dash-name", "password-ok-1"),  # only letters, digits and _
        ("", "password-ok-1"),
        ("short_pw_user", "7chars!"),  # passwords are 8 to 32 characters
        ("long_pw_user", "p" * 33),
    ],
    ids=["username-32-chars", "username-dash", "username-empty", "password-7", "password-33"],
)
def test_bad_username_or_password_is_refused_and_changes_nothing(
    admin_cli: CloudHsmCli, cli: CloudHsmCli, username: str, password: str
) -> None:
    """A username over 31 characters or outside [A-Za-z0-9_], or a password outside 8..32
    characters, is refused with error_code 1 and the user does not appear in `user list`."""
    admin_cli.error(
        "user", "create", "--username", username, "--role", "crypto-user", "--password", password
    )
    # Checked by name, not by comparing whole listings: on a shared external target other
    # workers create users meanwhile.
    if username:
        assert listed(cli, username.lower()) is None


def test_a_31_character_username_is_accepted(admin_cli: CloudHsmCli, user_names: UserNames) -> None:
    """31 characters is the longest username CloudHSM accepts."""
    username = (user_names.username() + "x" * 31)[:31]
    created = admin_cli.ok(
        "user",
        "create",
        "--username",
        username,
        "--role",
        "crypto-user",
        "--password",
        user_names.password(),
    )
    assert created["username"] == username


def test_role_must_be_admin_or_crypto_user(admin_cli: CloudHsmCli, user_names: UserNames) -> None:
    """`--role` accepts only admin and crypto-user; the internal roles cannot be created."""
    for role in ("unactivated-admin", "appliance", "CU"):
        admin_cli.error(
            "user",
            "create",
            "--username",
            user_names.username(),
            "--role",
            role,
            "--password",
            user_names.password(),
        )


def test_lockout_after_five_failed_logins_and_password_change_unlocks(
    crypto_user: UserFactory, cli: CloudHsmCli, admin_cli: CloudHsmCli, user_names: UserNames
) -> None:
    """Five logins with a wrong password lock the user: the right password is then refused
    and `user list` shows locked true. An admin's `user change-password` unlocks it and the
    new password logs in."""
    alice = crypto_user()
    for _ in range(5):
        assert login(cli, alice, password="not-" + alice.password)["error_code"] == 1
    assert login(cli, alice)["error_code"] == 1
    entry = listed(cli, alice.username)
    assert entry is not None
    assert entry["locked"] == "true"

    new_password = user_names.password()
    admin_cli.ok(
        "user",
        "change-password",
        "--username",
        alice.username,
        "--role",
        "crypto-user",
        "--password",
        new_password,
    )
    entry = listed(cli, alice.username)
    assert entry is not None
    assert entry["locked"] == "false"
    assert login(cli, alice, password=new_password)["error_code"] == 0


def test_four_failed_logins_do_not_lock(crypto_user: UserFactory, cli: CloudHsmCli) -> None:
    """Below the threshold the counter does not lock: after four wrong passwords the right
    one still logs in."""
    bob = crypto_user()
    for _ in range(4):
        assert login(cli, bob, password="wrong-" + bob.password)["error_code"] == 1
    assert login(cli, bob)["data"] == {"username": bob.username, "role": "crypto-user"}


def test_crypto_user_changes_own_password_not_others(
    crypto_user: UserFactory, cli: CloudHsmCli, user_names: UserNames
) -> None:
    """A crypto user may change its own password, not another user's."""
    carol, dave = crypto_user(), crypto_user()
    as_carol = cli.as_user(carol)
    new_password = user_names.password()
    as_carol.ok(
        "user",
        "change-password",
        "--username",
        carol.username,
        "--role",
        "crypto-user",
        "--password",
        new_password,
    )
    assert login(cli, carol, password=new_password)["error_code"] == 0
    cli.as_user(Credentials(carol.username, new_password, "crypto-user")).error(
        "user",
        "change-password",
        "--username",
        dave.username,
        "--role",
        "crypto-user",
        "--password",
        user_names.password(),
    )
    assert login(cli, dave)["error_code"] == 0


def test_user_owning_a_key_cannot_be_deleted(
    crypto_user: UserFactory, cli: CloudHsmCli, admin_cli: CloudHsmCli
) -> None:
    """An admin cannot delete a crypto user who owns a key; once the key is deleted, the
    user can be."""
    erin = crypto_user()
    as_erin = cli.as_user(erin)
    key = as_erin.ok(
        "key", "generate-symmetric", "aes", "--label", "erin-key", "--key-length-bytes", "16"
    )["key"]
    admin_cli.error("user", "delete", "--username", erin.username, "--role", "crypto-user")
    assert listed(cli, erin.username) is not None
    as_erin.ok("key", "delete", "--filter", f"key-reference={key['key-reference']}")
    admin_cli.ok("user", "delete", "--username", erin.username, "--role", "crypto-user")
    assert listed(cli, erin.username) is None


def test_crypto_user_cannot_manage_users(
    crypto_user: UserFactory, cli: CloudHsmCli, user_names: UserNames
) -> None:
    """Permission table: a crypto user cannot create or delete users."""
    frank, grace = crypto_user(), crypto_user()
    as_frank = cli.as_user(frank)
    newcomer = user_names.username()
    as_frank.error(
        "user",
        "create",
        "--username",
        newcomer,
        "--role",
        "crypto-user",
        "--password",
        user_names.password(),
    )
    assert listed(cli, newcomer) is None
    as_frank.error("user", "delete", "--username", grace.username, "--role", "crypto-user")
    assert listed(cli, grace.username) is not None


def test_admin_cannot_create_or_use_keys(admin_cli: CloudHsmCli) -> None:
    """Permission table: an admin manages users, not keys; generating a key is refused."""
    admin_cli.error(
        "key", "generate-symmetric", "aes", "--label", "admin-key", "--key-length-bytes", "16"
    )


def test_key_commands_need_a_login(cli: CloudHsmCli) -> None:
    """Without credentials, key commands are refused while `cluster hsm-info` and the quorum
    listings stay open to anyone."""
    cli.error("key", "list")
    cli.error("key", "generate-symmetric", "aes", "--label", "anon", "--key-length-bytes", "16")
    hsms = cli.ok("cluster", "hsm-info")["hsms"]
    assert hsms
    assert all(h["vendor"] == "Marvell Semiconductors, Inc." for h in hsms)
    assert set(cli.ok("quorum", "token-sign", "list-quorum-values")) >= {"user", "quorum"}
    assert cli.ok("quorum", "token-sign", "list-timeouts") == {"generated": 600, "approved": 600}


def test_wrong_password_and_unknown_user_are_refused_alike(
    crypto_user: UserFactory, cli: CloudHsmCli, user_names: UserNames
) -> None:
    """A wrong password and an unknown username both fail to log in, with one message that
    does not tell an attacker which it was."""
    henry = crypto_user()
    wrong_password = login(cli, henry, password="x" + henry.password)
    ghost = Credentials(user_names.username(), user_names.password(), "crypto-user")
    unknown_user = login(cli, ghost)
    assert wrong_password["error_code"] == unknown_user["error_code"] == 1
    assert wrong_password["data"] == unknown_user["data"] == "Incorrect authentication credentials"
    assert henry.password not in wrong_password["data"]


@pytest.mark.local_target
def test_activation_turns_the_unactivated_admin_into_the_admin(
    cluster_factory: ClusterFactory, user_names: UserNames
) -> None:
    """On a cluster never activated, `user list` shows `admin` as unactivated-admin and the
    default password cannot do admin work. `cluster activate --password` says `Cluster
    activation successful`, makes it an admin with the new password, and a second activation
    says `Cluster has already been activated`."""
    cluster = cluster_factory(hsms=2, activate=False)
    cli = CloudHsmCli(cluster)
    admin = listed(cli, "admin")
    assert admin is not None
    assert admin["role"] == "unactivated-admin"
    default = CloudHsmCli(cluster, Credentials("admin", "password", "admin"))
    default.error(
        "user",
        "create",
        "--username",
        user_names.username(),
        "--role",
        "crypto-user",
        "--password",
        user_names.password(),
    )

    new_password = user_names.password()
    assert default.ok("cluster", "activate", "--password", new_password) == (
        "Cluster activation successful"
    )
    admin = listed(cli, "admin")
    assert admin is not None
    assert (admin["role"], admin["cluster-coverage"]) == ("admin", "full")
    activated = Credentials("admin", new_password, "admin")
    assert login(cli, activated)["data"] == {"username": "admin", "role": "admin"}
    assert login(cli, activated, password="password")["error_code"] == 1
    assert default.error("cluster", "activate", "--password", user_names.password()) == (
        "Cluster has already been activated"
    )
    assert login(cli, activated)["error_code"] == 0


def usernames(cli: CloudHsmCli) -> set[str]:
    """Every user `user list` shows, but the appliance user (it is not a quota user)."""
    users = cli.ok("user", "list")["users"]
    return {u["username"] for u in users if u["role"] in ("admin", "crypto-user")}


@pytest.mark.local_target
def test_user_quota_refuses_the_user_past_the_last_and_changes_nothing(
    cluster_factory: ClusterFactory,
    hsm_quotas: Callable[..., None],
    user_names: UserNames,
) -> None:
    """Users are created up to the quota with `user create`, and the next is refused with
    `Maximum number of users reached`: it is not listed and cannot log in, and every user
    listed before is listed after. Deleting one user makes room: the same `user create`
    then succeeds. The quota of hsm1.medium is 250 users per cluster (spec §7, the admin
    counted); each user costs the HSM a password hashing, so reaching 250 takes about ten
    seconds, and this scenario lowers the quota of its own hsm1.medium cluster to 8 (fixture
    `hsm_quotas`): the check and the message are the HSM's own, only the number differs.
    The real 250 is reached in tests/test_hsm_users.py, on the HSM directly."""
    hsm_quotas("hsm1.medium", users=LOWERED_USER_QUOTA)
    cluster = cluster_factory(hsms=1, hsm_type="hsm1.medium")
    admin_cli = CloudHsmCli(cluster, admin_credentials(cluster))

    def create(user: Credentials) -> dict[str, Any]:
        return admin_cli(
            "user", "create", "--username", user.username, "--role", user.role,
            "--password", user.password,
        )  # fmt: skip

    made = [
        Credentials(user_names.username("quota_"), user_names.password(), "crypto-user")
        for _ in range(LOWERED_USER_QUOTA - 1)
    ]
    for user in made:
        assert create(user)["data"] == {"username": user.username, "role": "crypto-user"}
    before = usernames(admin_cli)
    assert before == {"admin", *(user.username for user in made)}
    assert len(before) == LOWERED_USER_QUOTA

    extra = Credentials(user_names.username("extra_"), user_names.password(), "crypto-user")
    refused = create(extra)
    assert (refused["error_code"], refused["data"]) == (1, USER_QUOTA_REACHED)
    assert usernames(admin_cli) == before
    cli = CloudHsmCli(cluster)
    assert login(cli, extra)["data"] == "Incorrect authentication credentials"

    admin_cli.ok("user", "delete", "--username", made[0].username, "--role", "crypto-user")
    assert create(extra)["data"] == {"username": extra.username, "role": "crypto-user"}
    assert login(cli, extra)["data"] == {"username": extra.username, "role": "crypto-user"}
