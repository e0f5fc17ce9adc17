"""Discovery: a client bootstrapped from one HSM address learns the others from the
cluster (``cluster.members``), connects to HSMs added later and drops removed ones
(spec §2.6), on real clusters over loopback."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from client.cli.users import merge_user_lists
from client.cluster import ClusterView, _announced_members
from client.config import load_config
from fixtures.clients import run_cli
from fixtures.cluster import ClusterUnderTest
from protocol.ops import Op
from protocol.status import Status
from simulator.hsm.core import Hsm
from simulator.hsm.identity import HsmIdentity
from simulator.hsm.membership import MemberAddress, Membership

#: A refresh interval short enough for tests to watch membership change.
REFRESH = 0.2


def _bootstrap_config(cluster: ClusterUnderTest, tmp_path: Path, index: int = 0) -> Path:
    """What ``cloudhsm-configure -a <one address>`` writes: one server, no cluster id."""
    document = json.loads(cluster.config_path.read_text())
    section = document["clusters"][0]["cluster"]
    section.pop("cluster_id", None)
    section["servers"] = [section["servers"][index]]
    path = tmp_path / f"bootstrap-{index}.cfg"
    path.write_text(json.dumps(document))
    return path


def _admin_pin(cluster: ClusterUnderTest) -> str:
    return f"{cluster.admin_username}:{cluster.admin_password}"


def _create_crypto_user(cluster: ClusterUnderTest, config: Path, name: str) -> str:
    password = f"{name}-password"
    made = run_cli(
        config,
        ["user", "create", "--username", name, "--role", "crypto-user", "--password", password],
        role="admin",
        pin=_admin_pin(cluster),
    )
    assert made["error_code"] == 0, made
    return password


async def _wait_for(condition: Callable[[], bool], within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


# -- the op ---------------------------------------------------------------------------


def test_every_hsm_answers_the_members_of_its_cluster(cloudhsm_cluster: ClusterUnderTest) -> None:
    controls = cloudhsm_cluster.require_local()
    expected = {(hsm_id, port) for hsm_id, _host, port in controls.cluster.addresses()}

    async def scenario() -> None:
        async with await ClusterView.open(load_config(cloudhsm_cluster.config_path)) as view:
            outcomes = await view.fan_out(Op.CLUSTER_MEMBERS)
        assert outcomes
        assert all(o.ok for o in outcomes)
        for outcome in outcomes:
            result = outcome.result
            assert result["cluster_id"] == cloudhsm_cluster.cluster_id
            assert {(h["hsm_id"], h["port"]) for h in result["hsms"]} == expected
            assert {h["state"] for h in result["hsms"]} == {"ACTIVE"}

    asyncio.run(scenario())


def test_a_standalone_hsm_knows_no_members_until_told() -> None:
    identity = HsmIdentity(
        "hsm-abcdefghijk", "cluster-abcdefghijk", "5.3G1941-ICM000590", "hsm2m.medium"
    )
    hsm = Hsm.open(identity, None, os.urandom(32))
    try:
        session = hsm.open_session(peer="test", client_cert_der=None)
        assert hsm.handle(session, Op.CLUSTER_MEMBERS, {}) == (
            Status.SUCCESS,
            {"cluster_id": "cluster-abcdefghijk", "hsms": []},
        )
        told = Membership.of(
            "cluster-abcdefghijk",
            [MemberAddress("hsm-abcdefghijk", "127.0.0.1", 2223, "ACTIVE")],
        )
        hsm.set_membership(told)
        status, result = hsm.handle(session, Op.CLUSTER_MEMBERS, {})
        assert status == Status.SUCCESS
        assert result["hsms"] == [
            {"hsm_id": "hsm-abcdefghijk", "hostname": "127.0.0.1", "port": 2223, "state": "ACTIVE"}
        ]
    finally:
        hsm.close()


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**20), 2**20) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_entry = st.fixed_dictionaries(
    {"hsm_id": _json | st.text(), "hostname": _json | st.text(), "port": _json | st.integers()}
)


@given(st.one_of(_json, st.fixed_dictionaries({"hsms": st.lists(_entry | _json, max_size=5)})))
def test_a_malformed_members_answer_yields_only_well_formed_members(answer: Any) -> None:
    for hsm_id, server in _announced_members(answer):
        assert isinstance(hsm_id, str)
        assert isinstance(server.hostname, str)
        assert server.hostname
        assert type(server.port) is int
        assert 0 < server.port < 65536


# -- the client --------------------------------------------------------------------------


def test_one_address_reaches_every_hsm(
    cluster_factory: Callable[..., ClusterUnderTest], tmp_path: Path
) -> None:
    cluster = cluster_factory(hsms=3)
    controls = cluster.require_local()
    bootstrap = _bootstrap_config(cluster, tmp_path)
    hsm_ids = [hsm_id for hsm_id, _host, _port in controls.cluster.addresses()]

    async def members() -> set[str]:
        async with await ClusterView.open(load_config(bootstrap)) as view:
            assert view.discover
            assert all(m.healthy for m in view.members)
            return {m.hsm_id for m in view.members if m.hsm_id is not None}

    assert asyncio.run(members()) == set(hsm_ids)

    # A user the third HSM missed: `user list` through one address must count that HSM
    # (with only the first HSM counted, coverage would read full).
    controls.run(controls.cluster.faults.stop_hsm(hsm_ids[2]))
    try:
        _create_crypto_user(cluster, cluster.config_path, "missed_by_third")
    finally:
        controls.run(controls.cluster.faults.start_hsm(hsm_ids[2]))
    listed = run_cli(bootstrap, ["user", "list"], role="admin", pin=_admin_pin(cluster))
    assert listed["error_code"] == 0, listed
    coverage = {u["username"]: u["cluster-coverage"] for u in listed["data"]["users"]}
    assert coverage["admin"] == "full"
    assert coverage["missed_by_third"] == "inconsistent"


def test_added_hsm_is_connected_and_removed_one_dropped(
    cluster_factory: Callable[..., ClusterUnderTest], tmp_path: Path
) -> None:
    cluster = cluster_factory(hsms=2)
    controls = cluster.require_local()
    local = controls.cluster
    password = _create_crypto_user(cluster, cluster.config_path, "follower")
    bootstrap = _bootstrap_config(cluster, tmp_path)
    first = local.addresses()[0][0]

    async def scenario() -> None:
        view = await ClusterView.open(load_config(bootstrap), membership_refresh=REFRESH)
        async with view:
            await view.login("follower", "crypto-user", password)
            assert len(view.members) == 2

            added = await asyncio.to_thread(controls.run, local.add_hsm())
            await _wait_for(
                lambda: any(m.hsm_id == added.hsm_id and m.logged_in for m in view.members)
            )
            outcomes = await view.fan_out(Op.USER_LIST)
            assert {o.member.hsm_id for o in outcomes if o.ok} == {
                hsm_id for hsm_id, _h, _p in local.addresses()
            }
            users = {u["username"]: u for u in merge_user_lists(outcomes)}
            assert users["follower"]["cluster-coverage"] == "full"

            # The HSM the configuration names is removed: the view keeps working.
            dropped = next(m for m in view.members if m.hsm_id == first)
            await asyncio.to_thread(controls.run, local.remove_hsm(first))
            await _wait_for(lambda: all(m.hsm_id != first for m in view.members))
            assert dropped.removed
            assert dropped.connection is None
            assert len(view.members) == 2
            outcomes = await view.fan_out(Op.USER_LIST)
            assert len(outcomes) == 2
            assert all(o.ok for o in outcomes)
            made = await view.use_key(
                Op.KEY_GENERATE,
                {"key_type": "aes", "key_length_bytes": 32, "label": "after-removal"},
            )
            assert isinstance(made["key"]["key-reference"], int)

    asyncio.run(scenario())


def test_a_lost_channel_prompts_a_membership_refresh(
    cluster_factory: Callable[..., ClusterUnderTest], tmp_path: Path
) -> None:
    cluster = cluster_factory(hsms=3)
    controls = cluster.require_local()
    local = controls.cluster
    password = _create_crypto_user(cluster, cluster.config_path, "noticer")
    bootstrap = _bootstrap_config(cluster, tmp_path)
    last = local.addresses()[2][0]

    async def scenario() -> None:
        # A refresh interval far longer than the test: only the lost channel can prompt it.
        view = await ClusterView.open(load_config(bootstrap), membership_refresh=600.0)
        async with view:
            await view.login("noticer", "crypto-user", password)
            assert len(view.members) == 3
            await asyncio.to_thread(controls.run, local.remove_hsm(last))
            # Idempotent requests fail over; one of them meets the closed channel.
            for _ in range(6):
                result = await view.call(Op.CRYPTO_RANDOM, {"length": 8})
                assert len(result["data"]) == 8
            await _wait_for(lambda: all(m.hsm_id != last for m in view.members), within=5.0)
            assert len(view.members) == 2

    asyncio.run(scenario())


def test_a_named_cluster_configuration_keeps_its_explicit_servers(
    cloudhsm_cluster: ClusterUnderTest, tmp_path: Path
) -> None:
    document = json.loads(cloudhsm_cluster.config_path.read_text())
    section = document["clusters"][0]["cluster"]
    section["servers"] = section["servers"][:1]
    path = tmp_path / "pinned.cfg"
    path.write_text(json.dumps(document))

    async def scenario() -> None:
        async with await ClusterView.open(load_config(path)) as view:
            assert not view.discover
            assert len(view.members) == 1
        async with await ClusterView.open(load_config(path), discover=True) as view:
            assert len(view.members) == cloudhsm_cluster.hsm_count

    asyncio.run(scenario())


def test_a_stopped_hsm_stays_a_member_and_comes_back(
    cluster_factory: Callable[..., ClusterUnderTest], tmp_path: Path
) -> None:
    cluster = cluster_factory(hsms=2)
    controls = cluster.require_local()
    local = controls.cluster
    password = _create_crypto_user(cluster, cluster.config_path, "patient")
    bootstrap = _bootstrap_config(cluster, tmp_path)
    second = local.addresses()[1][0]

    async def scenario() -> None:
        view = await ClusterView.open(load_config(bootstrap), membership_refresh=REFRESH)
        async with view:
            await view.login("patient", "crypto-user", password)
            member = next(m for m in view.members if m.hsm_id == second)
            await asyncio.to_thread(controls.run, local.faults.stop_hsm(second))
            # The others announce it DEGRADED: unavailable, still a member of the cluster.
            answer = await view.call(Op.CLUSTER_MEMBERS, member=view.members[0])
            states = {h["hsm_id"]: h["state"] for h in answer["hsms"]}
            assert states[second] == "DEGRADED"
            for _ in range(4):
                await view.call(Op.CRYPTO_RANDOM, {"length": 8})
            await asyncio.sleep(REFRESH * 3)
            assert member in view.members
            await asyncio.to_thread(controls.run, local.faults.start_hsm(second))
            await _wait_for(lambda: member.healthy and member.logged_in)
            assert len(view.members) == 2

    asyncio.run(scenario())
