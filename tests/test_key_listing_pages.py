"""Key listings come in pages: ``key.find`` never outgrows one message.

A crypto user at the key quota sees thousands of keys; their key objects together are
larger than an inner message may be (1 MiB). The HSM answers ``key.find`` with at most
``FIND_PAGE_BYTES`` of key objects, in reference order, and ``next_after`` when more
remain; the cluster view reads the pages to the end, so ``key list`` and the library see
every key. The HSM tests lower the page budget to see several pages from a few keys;
``conformance/test_keys.py`` lists a cluster at its real key quota through ``key list``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hsm_support import activated_hsm, admin_session, call, crypto_user, refused

from fixtures.clients import CloudHsmCli, with_library_session
from fixtures.cluster import ClusterUnderTest
from fixtures.users import UserNames, create_user
from protocol.messages import MAX_MESSAGE_SIZE, encode_cbor, encode_message
from protocol.messages import Response as Answer
from protocol.status import Status
from simulator.hsm import Hsm
from simulator.hsm import core as hsm_core

KEYS = 60
#: A page budget small enough that KEYS keys take several pages.
SMALL_PAGE = 4096


def _label(n: int) -> str:
    # Long labels (the 127-character maximum) make every key object large.
    return f"page-{n:04d}-".ljust(127, "x")


@pytest.fixture
def hsm_with_keys() -> tuple[Hsm, int]:
    hsm = activated_hsm()
    user = crypto_user(hsm, admin_session(hsm), "pager")
    for n in range(KEYS):
        call(hsm, user, "key.generate", key_type="aes", key_length_bytes=16, label=_label(n))
    return hsm, user


def _pages(hsm: Hsm, session: int, **args: Any) -> list[dict[str, Any]]:
    pages = [call(hsm, session, "key.find", **args)]
    while "next_after" in pages[-1]:
        pages.append(call(hsm, session, "key.find", **args, after=pages[-1]["next_after"]))
    return pages


def test_pages_cover_every_key_once_in_reference_order(
    hsm_with_keys: tuple[Hsm, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    hsm, user = hsm_with_keys
    whole = call(hsm, user, "key.find", verbose=True)
    assert "next_after" not in whole
    assert len(whole["keys"]) == KEYS

    monkeypatch.setattr(hsm_core, "FIND_PAGE_BYTES", SMALL_PAGE)
    pages = _pages(hsm, user, verbose=True)
    assert len(pages) > 3
    listed = [key for page in pages for key in page["keys"]]
    assert listed == whole["keys"]
    for page in pages[:-1]:
        # Full pages stay within the budget and say where the next one starts.
        assert sum(len(encode_cbor(key)) for key in page["keys"]) <= SMALL_PAGE
        assert page["next_after"] == page["keys"][-1]["key-reference"]


def test_filters_apply_before_paging(
    hsm_with_keys: tuple[Hsm, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    hsm, user = hsm_with_keys
    monkeypatch.setattr(hsm_core, "FIND_PAGE_BYTES", SMALL_PAGE)
    label = _label(KEYS // 2)
    pages = _pages(hsm, user, filter={"label": label}, verbose=True)
    assert [[key["attributes"]["label"] for key in page["keys"]] for page in pages] == [[label]]


def test_a_key_larger_than_the_budget_still_comes_alone(
    hsm_with_keys: tuple[Hsm, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    hsm, user = hsm_with_keys
    monkeypatch.setattr(hsm_core, "FIND_PAGE_BYTES", 1)
    pages = _pages(hsm, user, verbose=True)
    assert [len(page["keys"]) for page in pages] == [1] * KEYS


@pytest.mark.parametrize("after", [0, -1, 2**64, "12", True, 1.5])
def test_a_bad_after_is_refused(hsm_with_keys: tuple[Hsm, int], after: object) -> None:
    hsm, user = hsm_with_keys
    status, _ = refused(hsm, user, "key.find", after=after)
    assert status is Status.INVALID_ARGUMENT


def test_a_page_at_the_budget_fits_in_one_message() -> None:
    """The default budget leaves room under the message limit for one more key of the
    largest kind and the envelope."""
    assert hsm_core.FIND_PAGE_BYTES * 2 <= MAX_MESSAGE_SIZE
    big_key = {"key-reference": 2**63, "attributes": {"label": "x" * 127}, "pad": b"\0" * 4096}
    envelope = encode_message(Answer(1, 0, {"keys": [big_key], "next_after": 2**63}))
    assert hsm_core.FIND_PAGE_BYTES + len(envelope) < MAX_MESSAGE_SIZE


def test_key_list_and_the_library_read_every_page(
    cluster_factory: Callable[..., ClusterUnderTest],
    user_names: UserNames,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the client: the cluster view follows ``next_after`` on each HSM (the
    cluster runs in this process, so the lowered budget applies to its HSMs)."""
    monkeypatch.setattr(hsm_core, "FIND_PAGE_BYTES", SMALL_PAGE)
    cluster = cluster_factory(hsms=2)
    user = create_user(cluster, user_names, "crypto-user", "pager_")

    async def fill(session: Any) -> int:
        for n in range(KEYS):
            await session.generate_aes_key(_label(n), length=16)
        return len(await session.find_keys())  # the library, through the same pages

    assert with_library_session(cluster, user, fill) == KEYS
    listed = CloudHsmCli(cluster, user).ok("key", "list", "--max-items", "1000")
    assert listed["total_key_count"] == KEYS
    labels = [key["attributes"]["label"] for key in listed["matched_keys"]]
    assert sorted(labels) == [_label(n) for n in range(KEYS)]
