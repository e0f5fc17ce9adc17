"""The drop-answers fault: the HSM runs a request, its connection is reset instead of answered.

End to end through the client library on a real cluster: a key generation loses its
answer, is not retried on another HSM (it is not idempotent), and the key exists
afterwards; an idempotent read that loses its answer is answered by another HSM.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from client.errors import ConnectionLost, RequestTimeout
from fixtures.clients import CloudHsmCli
from fixtures.cluster import ClusterFactory
from fixtures.faults import ClusterFaults, FaultsFactory
from fixtures.users import SessionFactory, UserNames, create_user
from protocol.status import Status
from simulator.cli import main
from simulator.cluster import ClusterThread
from simulator.faults import FaultError, FaultyHsm, HsmFaults


class _Recorder:
    """An HSM core that remembers what it ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def handle_batch(self, requests: list[tuple[int, str, dict[str, Any]]]) -> list[Any]:
        self.ran += [op for _, op, _ in requests]
        return [(Status.SUCCESS, {"op": op}) for _, op, _ in requests]


def test_only_requests_the_hsm_runs_lose_their_answers() -> None:
    import random

    core = _Recorder()
    faults = HsmFaults(busy_until=time.monotonic() + 60, busy_probability=0.5)
    faulty = FaultyHsm(core, faults, random.Random("drop"))  # type: ignore[arg-type]
    faults.set_drop(3)
    requests: list[tuple[int, str, dict[str, Any]]] = [(1, f"op-{n}", {}) for n in range(12)]
    answers = faulty.handle_batch(requests)
    dropped = faulty.take_dropped_answers()
    busy = [status == Status.BUSY for status, _ in answers]
    assert 0 < sum(busy) < 12
    # The first three requests that ran lose their answers; busy ones never ran.
    ran = [n for n in range(12) if not busy[n]]
    assert [n for n in range(12) if dropped[n]] == ran[:3]
    assert core.ran == [f"op-{n}" for n in ran]
    assert faults.drop_answers == 0
    assert faulty.take_dropped_answers() == []


def _eventually(probe: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout} s waiting for {what}")
        time.sleep(0.05)


def test_drop_answers_is_shown_cleared_and_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with ClusterThread(None, hsms=2) as running:
        cluster = running.cluster
        first = cluster.addresses()[0][0]
        endpoint = cluster.control_plane_url
        assert endpoint is not None
        assert main(["fault", "drop-answers", first, "--count", "2", "--endpoint", endpoint]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["hsms"] == {first: {"drop_answers": {"count_left": 2}}}
        assert main(["fault", "drop-answers", first, "--count", "-1", "--endpoint", endpoint]) == 1
        assert "count must be a whole number from 0 to" in capsys.readouterr().err
        assert cluster.faults.describe()["hsms"][first] == {"drop_answers": {"count_left": 2}}
        with pytest.raises(FaultError, match="is not in cluster"):
            cluster.faults.drop_answers("hsm-zzzzzzzzzzz", 1)
        assert main(["fault", "clear", "--endpoint", endpoint]) == 0
        assert json.loads(capsys.readouterr().out)["hsms"] == {}


def _all_connected(faults: ClusterFaults, hsm: Any) -> bool:
    members = hsm._inner.view.members
    return len(members) == len(faults.hsm_ids()) and all(
        member.healthy and member.logged_in for member in members
    )


def test_a_lost_creation_is_not_retried_yet_the_key_exists(
    cluster_factory: ClusterFactory,
    cluster_faults: FaultsFactory,
    user_names: UserNames,
    hsm_session: SessionFactory,
) -> None:
    cluster = cluster_factory(hsms=2, sync_lag=0.2)
    faults = cluster_faults(cluster)
    user = create_user(cluster, user_names, "crypto-user", "payments_")
    hsm = hsm_session(user, cluster=cluster)
    both = faults.hsm_ids()
    label = user_names.username("ledger-key-")
    drop_one_each = {
        "steps": [
            {"at": 0, "fault": "drop-answers", "hsm": 1, "count": 1},
            {"at": 0, "fault": "drop-answers", "hsm": 2, "count": 1},
        ]
    }
    faults.run_script(drop_one_each)

    # The client sees its connection fail, as when an HSM is replaced mid-request.
    with pytest.raises((ConnectionLost, RequestTimeout)):
        hsm.generate_aes_key(label, length=16)
    left = faults.describe()["hsms"]
    ran_on = [h for h in both if "drop_answers" not in left.get(h, {})]
    # The creation ran on one HSM and was not sent again to the other one.
    assert len(ran_on) == 1
    (other,) = set(both) - set(ran_on)
    assert left[other]["drop_answers"] == {"count_left": 1}
    faults.clear()

    # The client reconnects the reset channel in the background, logging in again.
    _eventually(lambda: _all_connected(faults, hsm), "the client to reconnect")
    # The key exists though the client was never told: it reaches the other HSM by sync.
    cli = CloudHsmCli(cluster, user)
    listed = _eventually(
        lambda: cli.ok("key", "list", "--filter", f"attr.label={label}")["matched_keys"],
        "key list to show the key",
    )
    assert len(listed) == 1

    for hsm_id in both:
        alone = hsm_session(user, cluster=faults.view_of([hsm_id], key_availability_check=False))
        _eventually(partial(alone.find_keys, label=label), f"the key to be on {hsm_id}")

    # An idempotent read whose answer is lost is answered by the other HSM: read until
    # one of the reads went to the dropping HSM (the client spreads the load), every
    # read answered.
    faults.drop_answers(both[0], 1)
    for _ in range(20):
        keys = hsm.find_keys(label=label)
        assert [key.label for key in keys] == [label]
        if faults.describe()["hsms"] == {}:
            break
    assert faults.describe()["hsms"] == {}, "no read reached the dropping HSM"


def test_a_search_that_could_not_ask_every_hsm_never_says_nothing(
    cluster_factory: ClusterFactory,
    cluster_faults: FaultsFactory,
    user_names: UserNames,
    hsm_session: SessionFactory,
) -> None:
    """A key on one HSM only (sync paused): when that HSM's answer to a search is lost,
    the search fails or finds the key on a retry, but never reports that no key exists."""
    cluster = cluster_factory(hsms=2)
    faults = cluster_faults(cluster)
    faults.pause_sync()
    user = create_user(cluster, user_names, "crypto-user", "finder_")
    holder, _ = faults.hsm_ids()
    pinned = faults.view_of([holder], key_availability_check=False)
    label = user_names.username("lonely-key-")
    hsm_session(user, cluster=pinned).generate_aes_key(label, length=16)
    hsm = hsm_session(user, cluster=faults.view_of(key_availability_check=False))
    outcomes: set[str] = set()
    for _ in range(30):
        faults.drop_answers(holder, 1)
        try:
            keys = hsm.find_keys(label=label)
        except (ConnectionLost, RequestTimeout):
            outcomes.add("failed")
        else:
            assert [key.label for key in keys] == [label], "a search said no key exists"
            outcomes.add("found")
        faults.clear()
        _eventually(lambda: _all_connected(faults, hsm), "the client to reconnect")
        if outcomes == {"failed", "found"}:
            break
    assert outcomes, "no search ran"
