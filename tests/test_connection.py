"""The client's end-to-end channel against a real host, endpoint and HSM."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client import errors
from client.connection import ChannelSettings, HsmConnection
from client.errors import HsmStatusError, UnknownOp
from fixtures.trust import (
    CertificateAuthority,
    SingleHsmTarget,
    TargetFactory,
    issue_cluster_credential,
)
from protocol.status import Status


def test_hsm_info_round_trip(single_hsm_target: SingleHsmTarget) -> None:
    target = single_hsm_target

    async def scenario() -> dict[str, object]:
        connection = await HsmConnection.open(target.host, target.port, target.settings)
        async with connection:
            assert connection.hello == target.hello
            info = await connection.call("hsm.info", {})
        assert isinstance(info, dict)
        return info

    info = asyncio.run(scenario())
    assert info["cluster-id"] == target.hello.cluster_id
    assert info["hsm-id"] == target.hello.hsm_id


def test_unknown_op_is_a_status_error(single_hsm_target: SingleHsmTarget) -> None:
    target = single_hsm_target

    async def scenario() -> None:
        async with await HsmConnection.open(target.host, target.port, target.settings) as conn:
            with pytest.raises(UnknownOp) as caught:
                await conn.call("no.such.op", {})
            assert isinstance(caught.value, HsmStatusError)
            assert caught.value.status is Status.UNKNOWN_OP
            # The channel survives a refused request.
            assert (await conn.call("hsm.info"))["hsm-id"] == target.hello.hsm_id

    asyncio.run(scenario())


def test_wrong_password_is_a_login_failure(single_hsm_target: SingleHsmTarget) -> None:
    target = single_hsm_target

    async def scenario() -> None:
        async with await HsmConnection.open(target.host, target.port, target.settings) as conn:
            with pytest.raises(errors.LoginFailure) as caught:
                await conn.call("login", {"username": "admin", "role": "admin", "password": "nope"})
            assert caught.value.status is Status.LOGIN_FAILURE
            assert caught.value.message == "Incorrect authentication credentials"
            assert "nope" not in str(caught.value)

    asyncio.run(scenario())


def test_request_timeout_leaves_the_channel_usable(single_hsm_target: SingleHsmTarget) -> None:
    target = single_hsm_target
    release = threading.Event()
    settings = target.settings_with(request_timeout=0.2)

    async def scenario() -> None:
        async with await HsmConnection.open(target.host, target.port, settings) as conn:
            # Occupy the HSM's single worker so the request cannot run in time.
            blocker = target.endpoint.executor.submit(release.wait, 10)
            with pytest.raises(errors.RequestTimeout, match=r"did not answer 'hsm\.info'"):
                await conn.call("hsm.info")
            release.set()
            await asyncio.wrap_future(blocker)
            # The late answer is dropped; the next request gets its own.
            assert (await conn.call("hsm.info"))["hsm-id"] == target.hello.hsm_id

    asyncio.run(scenario())


def test_nothing_listening_is_host_unreachable(single_hsm_target: SingleHsmTarget) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(errors.HostUnreachable, match=f"127.0.0.1:{port}"):
        asyncio.run(HsmConnection.open("127.0.0.1", port, single_hsm_target.settings))


def test_settings_from_files(single_hsm_target: SingleHsmTarget, tmp_path: Path) -> None:
    target = single_hsm_target
    ca_file, _ = target.customer_ca.write(tmp_path)
    root_file = tmp_path / "AWS_CloudHSM_Root-G1.crt"
    root_file.write_bytes(target.aws_root.cert_pem)
    settings = ChannelSettings.from_files(ca_file, root_file)
    assert settings.hsm_ca_source == str(ca_file)

    async def scenario() -> None:
        async with await HsmConnection.open(target.host, target.port, settings) as conn:
            await conn.call("hsm.info")

    asyncio.run(scenario())
    with pytest.raises(errors.ConfigurationError, match="cannot be read"):
        ChannelSettings.from_files(ca_file, tmp_path / "missing-root.crt")


def test_missing_client_certificate_files_are_a_configuration_error(
    single_hsm_target: SingleHsmTarget, tmp_path: Path
) -> None:
    settings = single_hsm_target.settings_with(
        hsm_client_cert=(tmp_path / "client.crt", tmp_path / "client.key")
    )
    with pytest.raises(errors.ConfigurationError, match="client certificate file not found"):
        asyncio.run(HsmConnection.open(single_hsm_target.host, single_hsm_target.port, settings))


def test_mtls_enforcement_drops_existing_plain_channels(
    single_hsm_target: SingleHsmTarget, tmp_path: Path
) -> None:
    """Spec §2.9: after `set-enforcement --level cluster` non-mTLS connections are dropped."""
    target = single_hsm_target
    anchor = CertificateAuthority.generate("mTLS anchor")
    client_files = anchor.issue_client("ssl-client").write(tmp_path, "ssl-client")
    with_cert = target.settings_with(hsm_client_cert=client_files)
    login = {"username": "admin", "role": "admin", "password": "admin-password-1"}

    async def scenario() -> None:
        plain = await HsmConnection.open(target.host, target.port, target.settings)
        await plain.call("cluster.activate", {"password": "admin-password-1"})
        await plain.call("login", login)
        await plain.call("mtls.register_trust_anchor", {"certificate": anchor.cert_pem})
        async with await HsmConnection.open(target.host, target.port, with_cert) as mtls:
            await mtls.call("login", login)
            await mtls.call("mtls.set_enforcement", {"level": "cluster"})
            for _ in range(200):
                if plain.closed:
                    break
                await asyncio.sleep(0.01)
            with pytest.raises(errors.HostHsmUnavailable, match="mTLS enforcement requires"):
                await plain.call("hsm.info")
            # The mTLS channel itself carries on.
            assert (await mtls.call("mtls.get_enforcement"))["level"] == "cluster"
        await plain.close()

    asyncio.run(scenario())


def test_status_errors_cover_every_status() -> None:
    for status in Status:
        if status is Status.SUCCESS:
            continue
        error = errors.status_error(status, "why")
        assert type(error) is not errors.HsmStatusError, status
        assert error.status is status
        assert error.message == "why"
    unknown = errors.status_error(0x7777, None)
    assert type(unknown) is errors.HsmStatusError
    assert "0x7777" in str(unknown)


def test_large_requests_span_frames(single_hsm_target: SingleHsmTarget) -> None:
    target = single_hsm_target
    padding = bytes(range(256)) * 2000  # 512,000 bytes: several TLS records and frames

    async def scenario() -> None:
        async with await HsmConnection.open(target.host, target.port, target.settings) as conn:
            # Unknown argument keys are ignored: the big request still gets its answer.
            results = await asyncio.gather(
                *(conn.call("hsm.info", {"padding": padding}) for _ in range(3))
            )
            assert all(r["hsm-id"] == target.hello.hsm_id for r in results)

    asyncio.run(scenario())


def test_oversized_request_is_refused_locally(single_hsm_target: SingleHsmTarget) -> None:
    target = single_hsm_target

    async def scenario() -> None:
        async with await HsmConnection.open(target.host, target.port, target.settings) as conn:
            with pytest.raises(errors.ClientError, match="cannot be encoded"):
                await conn.call("hsm.info", {"padding": b"\x00" * (2 * 1024 * 1024)})
            assert (await conn.call("hsm.info"))["hsm-id"] == target.hello.hsm_id

    asyncio.run(scenario())
    assert target.hsm.ops == ["hsm.info"]


@pytest.mark.parametrize(
    ("problem", "says"),
    [
        ("missing-cert", "client certificate file not found"),
        ("missing-key", "client key file not found"),
        ("garbage-cert", "is not a PEM certificate chain"),
        ("garbage-key", "is not a PEM private key"),
        ("other-key", "does not match the certificate 'CN=ssl-client"),
    ],
)
def test_client_certificate_files_are_checked(
    single_hsm_target: SingleHsmTarget, tmp_path: Path, problem: str, says: str
) -> None:
    issuer = CertificateAuthority.generate("client issuer")
    cert, key = issuer.issue_client("ssl-client").write(tmp_path, "ssl-client")
    if problem == "missing-cert":
        cert.unlink()
    elif problem == "missing-key":
        key.unlink()
    elif problem == "garbage-cert":
        cert.write_bytes(b"not a certificate")
    elif problem == "garbage-key":
        key.write_bytes(b"not a key")
    else:
        key.write_bytes(issuer.issue_client("someone else").key_pem)
    for layer, field in (("HSM (mTLS layer)", "hsm_client_cert"), ("server", "server_client_cert")):
        settings = single_hsm_target.settings_with(**{field: (cert, key)})
        with pytest.raises(errors.ConfigurationError) as caught:
            asyncio.run(
                HsmConnection.open(single_hsm_target.host, single_hsm_target.port, settings)
            )
        assert says in str(caught.value)
        assert layer in str(caught.value)
    assert not single_hsm_target.hsm.reached


@pytest.mark.parametrize("trust", ["intermediate only", "intermediate and root"])
def test_cluster_certificate_from_an_intermediate_ca(
    make_single_hsm_target: TargetFactory, trust: str
) -> None:
    """customerCA.crt may hold the issuing intermediate alone or with its root."""
    root = CertificateAuthority.generate("customer root")
    intermediate = root.issue_intermediate("customer issuing CA")
    credential = issue_cluster_credential(intermediate)
    target = make_single_hsm_target(cluster_credential=credential)
    anchors = intermediate.cert_pem + (root.cert_pem if trust == "intermediate and root" else b"")
    settings = target.settings_with(hsm_ca_pem=anchors)

    async def scenario() -> None:
        async with await HsmConnection.open(target.host, target.port, settings) as conn:
            await conn.call("hsm.info")

    asyncio.run(scenario())
    # The root alone does not vouch for a leaf whose issuer the HSM does not send.
    with pytest.raises(errors.ClusterCertificateUntrusted):
        asyncio.run(
            HsmConnection.open(
                target.host, target.port, target.settings_with(hsm_ca_pem=root.cert_pem)
            )
        )


_OPS = ["hsm.info", "quorum.values", "session.whoami", "no.such.op"]


def _answers(op: str, result: Any, hsm_id: str) -> bool:
    """Whether ``result`` is an answer to ``op`` (and not to another request)."""
    if op == "hsm.info":
        return isinstance(result, dict) and result.get("hsm-id") == hsm_id
    if op == "quorum.values":
        return isinstance(result, dict) and set(result) == {"user", "quorum", "cluster"}
    return result is None  # session.whoami before any login


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=st.lists(st.tuples(st.sampled_from(_OPS), st.booleans()), min_size=1, max_size=40))
def test_pipelined_calls_with_cancellations_get_their_own_answers(
    single_hsm_target: SingleHsmTarget, plan: list[tuple[str, bool]]
) -> None:
    """Whatever is in flight or cancelled, every surviving call gets the answer to its op."""
    target = single_hsm_target

    async def scenario() -> None:
        async with await HsmConnection.open(target.host, target.port, target.settings) as conn:
            tasks = [asyncio.ensure_future(conn.call(op, {})) for op, _ in plan]
            for task, (_, cancel) in zip(tasks, plan, strict=True):
                if cancel:
                    task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            for (op, cancel), outcome in zip(plan, outcomes, strict=True):
                if cancel:
                    assert isinstance(outcome, asyncio.CancelledError)
                elif op == "no.such.op":
                    assert isinstance(outcome, errors.UnknownOp)
                else:
                    assert not isinstance(outcome, BaseException), outcome
                    assert _answers(op, outcome, target.hello.hsm_id), (op, outcome)
            assert (await conn.call("session.whoami")) is None

    asyncio.run(scenario())
