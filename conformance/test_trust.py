"""Conformance family ``trust``: every way the trust path can fail, refused precisely.

Each scenario builds a one-HSM target from real parts (HSM, endpoint, server
host on loopback) with one thing wrong, connects with the real client, and
asserts three things: the exact exception type, a message that names what
failed (and the file or subject involved), and that nothing reached the HSM —
no session opened, no request sent — so no credential could have left the
client.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from client import errors
from client.cluster import channel_settings
from client.config import load_config
from client.connection import ChannelSettings, HsmConnection
from fixtures.cluster import ClusterUnderTest
from fixtures.trust import (
    BadCertificates,
    CertificateAuthority,
    Credential,
    SingleHsmTarget,
    TargetFactory,
)

pytestmark = pytest.mark.conformance("trust")

#: Scenarios that build their own broken target; the external target cannot.
local_target = pytest.mark.local_target

OTHER_CLUSTER = "cluster-othr2345abc"


async def _connect_and_ask(host: str, port: int, settings: ChannelSettings) -> Any:
    async with await HsmConnection.open(host, port, settings) as connection:
        return await connection.call("hsm.info", {})


def _refused(
    target: SingleHsmTarget,
    expected: type[errors.ClientError],
    settings: ChannelSettings | None = None,
    address: tuple[str, int] | None = None,
) -> errors.ClientError:
    host, port = address or (target.host, target.port)
    with pytest.raises(expected) as caught:
        asyncio.run(_connect_and_ask(host, port, settings or target.settings))
    assert type(caught.value) is expected, f"{type(caught.value).__name__}: {caught.value}"
    assert not target.hsm.reached, f"the HSM saw {target.hsm.ops} after a trust failure"
    return caught.value


# -- the cluster certificate (inner TLS) ----------------------------------------------------


@local_target
def test_cluster_certificate_from_another_ca(
    make_single_hsm_target: TargetFactory, bad_certificates: BadCertificates
) -> None:
    target = make_single_hsm_target(cluster_credential=bad_certificates.cluster_from_other_ca())
    error = _refused(target, errors.ClusterCertificateUntrusted)
    message = str(error)
    assert "was not issued by the CA in" in message
    assert target.settings.hsm_ca_source in message
    assert target.customer_ca.subject in message
    assert target.hello.hsm_id in message


@local_target
def test_uninitialized_hsm_presents_its_hsm_certificate(
    make_single_hsm_target: TargetFactory, bad_certificates: BadCertificates
) -> None:
    """Before InitializeCluster the HSM can only show the vendor-issued HsmCertificate."""
    target = make_single_hsm_target(
        cluster_credential=bad_certificates.hsm_certificate_before_initialization()
    )
    error = _refused(target, errors.ClusterCertificateUntrusted)
    assert "was not issued by the CA in" in str(error)


@local_target
def test_cluster_certificate_expired(
    make_single_hsm_target: TargetFactory, bad_certificates: BadCertificates
) -> None:
    target = make_single_hsm_target(cluster_credential=bad_certificates.expired_cluster())
    error = _refused(target, errors.ClusterCertificateExpired)
    assert "cluster certificate presented by the HSM" in str(error)
    assert "has expired" in str(error)


@local_target
def test_cluster_certificate_not_yet_valid(
    make_single_hsm_target: TargetFactory, bad_certificates: BadCertificates
) -> None:
    target = make_single_hsm_target(cluster_credential=bad_certificates.not_yet_valid_cluster())
    error = _refused(target, errors.ClusterCertificateNotYetValid)
    assert "is not yet valid" in str(error)


@local_target
def test_hsm_presents_a_self_signed_certificate(
    make_single_hsm_target: TargetFactory, bad_certificates: BadCertificates
) -> None:
    target = make_single_hsm_target(cluster_credential=bad_certificates.self_signed_hsm())
    error = _refused(target, errors.HsmCertificateSelfSigned)
    assert "presented a self-signed certificate" in str(error)
    assert target.customer_ca.subject in str(error)


@local_target
def test_cluster_certificate_for_another_cluster(
    make_single_hsm_target: TargetFactory, bad_certificates: BadCertificates
) -> None:
    target = make_single_hsm_target(cluster_credential=bad_certificates.cluster_for(OTHER_CLUSTER))
    error = _refused(target, errors.ClusterMismatch)
    assert f"issued for cluster {OTHER_CLUSTER}" in str(error)
    assert f"expects cluster {target.hello.cluster_id}" in str(error)


@local_target
def test_host_announces_another_cluster_than_configured(
    single_hsm_target: SingleHsmTarget,
) -> None:
    settings = single_hsm_target.settings_with(expected_cluster_id=OTHER_CLUSTER)
    error = _refused(single_hsm_target, errors.ClusterMismatch, settings)
    assert f"of cluster {single_hsm_target.hello.cluster_id}" in str(error)
    assert f"expects cluster {OTHER_CLUSTER}" in str(error)


# -- customerCA.crt ---------------------------------------------------------------------------


def _server_ca_file(target: SingleHsmTarget) -> Path:
    path = target.files / "AWS_CloudHSM_Root-G1.crt"
    path.write_bytes(target.aws_root.cert_pem)
    return path


@local_target
def test_customer_ca_missing(single_hsm_target: SingleHsmTarget, tmp_path: Path) -> None:
    missing = tmp_path / "etc" / "customerCA.crt"
    with pytest.raises(errors.CustomerCaMissing) as caught:
        ChannelSettings.from_files(missing, _server_ca_file(single_hsm_target))
    assert type(caught.value) is errors.CustomerCaMissing
    assert f"customerCA.crt not found at {missing}" in str(caught.value)
    assert not single_hsm_target.hsm.reached


@local_target
@pytest.mark.parametrize(
    ("contents", "expected", "says"),
    [
        (b"", errors.CustomerCaEmpty, "is empty"),
        (b"  \n\n", errors.CustomerCaEmpty, "is empty"),
        (BadCertificates.garbage(), errors.CustomerCaInvalid, "holds no PEM certificate"),
    ],
    ids=["empty", "whitespace", "garbage"],
)
@local_target
def test_customer_ca_unusable(
    single_hsm_target: SingleHsmTarget,
    tmp_path: Path,
    contents: bytes,
    expected: type[errors.TrustError],
    says: str,
) -> None:
    path = tmp_path / "customerCA.crt"
    path.write_bytes(contents)
    with pytest.raises(expected) as caught:
        ChannelSettings.from_files(path, _server_ca_file(single_hsm_target))
    assert type(caught.value) is expected
    assert f"customerCA.crt at {path} {says}" in str(caught.value)
    # The same contents handed over as bytes are refused before any connection.
    settings = single_hsm_target.settings_with(hsm_ca_pem=contents, hsm_ca_source=str(path))
    _refused(single_hsm_target, expected, settings)
    assert single_hsm_target.server.connection_count == 0


@local_target
def test_customer_ca_truncated(single_hsm_target: SingleHsmTarget, tmp_path: Path) -> None:
    path = tmp_path / "customerCA.crt"
    path.write_bytes(BadCertificates.truncated(single_hsm_target.customer_ca.cert_pem))
    with pytest.raises(errors.CustomerCaInvalid) as caught:
        ChannelSettings.from_files(path, _server_ca_file(single_hsm_target))
    assert f"customerCA.crt at {path} is not a valid PEM certificate" in str(caught.value)


@local_target
def test_customer_ca_is_not_a_ca(
    single_hsm_target: SingleHsmTarget, bad_certificates: BadCertificates, tmp_path: Path
) -> None:
    path = tmp_path / "customerCA.crt"
    path.write_bytes(bad_certificates.not_a_ca())
    with pytest.raises(errors.CustomerCaNotCa) as caught:
        ChannelSettings.from_files(path, _server_ca_file(single_hsm_target))
    assert type(caught.value) is errors.CustomerCaNotCa
    assert "CN=not a CA" in str(caught.value)
    assert "is not a certificate authority" in str(caught.value)
    assert not single_hsm_target.hsm.reached


# -- the server host (outer TLS) ---------------------------------------------------------------


@local_target
def test_host_certificate_untrusted(
    make_single_hsm_target: TargetFactory, bad_certificates: BadCertificates
) -> None:
    target = make_single_hsm_target(host_credential=bad_certificates.host_from_other_root())
    error = _refused(target, errors.HostCertificateUntrusted)
    assert f"server host {target.host}:{target.port} is not trusted by" in str(error)
    assert target.settings.server_ca_source in str(error)


@local_target
def test_host_certificate_expired(
    make_single_hsm_target: TargetFactory, bad_certificates: BadCertificates
) -> None:
    target = make_single_hsm_target(host_credential=bad_certificates.expired_host())
    error = _refused(target, errors.HostCertificateExpired)
    assert f"server host {target.host}:{target.port} has expired" in str(error)


@local_target
def test_host_certificate_names_another_host(
    make_single_hsm_target: TargetFactory, aws_root: CertificateAuthority
) -> None:
    target = make_single_hsm_target(host_credential=aws_root.issue_host("192.0.2.10"))
    error = _refused(target, errors.HostNameMismatch)
    assert "is for another host" in str(error)


@local_target
def test_host_offering_tls_below_1_2(
    single_hsm_target: SingleHsmTarget, legacy_tls_host: tuple[str, int]
) -> None:
    error = _refused(single_hsm_target, errors.HostTlsTooOld, address=legacy_tls_host)
    assert "offered only TLS below 1.2" in str(error)
    assert f"{legacy_tls_host[0]}:{legacy_tls_host[1]}" in str(error)


@local_target
def test_client_address_outside_the_security_group(make_single_hsm_target: TargetFactory) -> None:
    target = make_single_hsm_target(allow_list=[ipaddress.ip_network("10.0.0.0/8")])
    error = _refused(target, errors.HostRefused)
    assert isinstance(error, errors.TrustError)
    assert "connection from 127.0.0.1 refused" in str(error)
    assert f"security group of {target.hello.hsm_id}" in str(error)


# -- client certificates ------------------------------------------------------------------------


def _client_credential(ca: CertificateAuthority, directory: Path, name: str) -> tuple[Path, Path]:
    credential: Credential = ca.issue_client(name)
    return credential.write(directory, name)


@local_target
def test_host_requires_a_client_certificate(
    make_single_hsm_target: TargetFactory, tmp_path: Path
) -> None:
    client_ca = CertificateAuthority.generate("host-layer client CA")
    target = make_single_hsm_target(client_ca_pem=client_ca.cert_pem)
    error = _refused(target, errors.ClientCertificateRequired)
    assert "server host" in str(error)
    assert "requires a client certificate and none was configured" in str(error)
    # A certificate from another CA is rejected, one from the right CA admitted.
    stranger = CertificateAuthority.generate("stranger CA")
    settings = target.settings_with(
        server_client_cert=_client_credential(stranger, tmp_path, "stranger")
    )
    _refused(target, errors.ClientCertificateRejected, settings)
    settings = target.settings_with(
        server_client_cert=_client_credential(client_ca, tmp_path, "client")
    )
    info = asyncio.run(_connect_and_ask(target.host, target.port, settings))
    assert info["hsm-id"] == target.hello.hsm_id


@local_target
def test_hsm_mtls_enforcement_requires_a_client_certificate(
    single_hsm_target: SingleHsmTarget, tmp_path: Path
) -> None:
    """The cluster's mTLS policy (spec §2.9), set up through the protocol as an admin would."""
    target = single_hsm_target
    mtls_ca = CertificateAuthority.generate("mTLS trust anchor")
    with_cert = target.settings_with(
        hsm_client_cert=_client_credential(mtls_ca, tmp_path, "ssl-client")
    )

    async def enforce() -> None:
        async with await HsmConnection.open(target.host, target.port, target.settings) as plain:
            await plain.call("cluster.activate", {"password": "admin-password-1"})
            await plain.call(
                "login", {"username": "admin", "role": "admin", "password": "admin-password-1"}
            )
            await plain.call("mtls.register_trust_anchor", {"certificate": mtls_ca.cert_pem})
        async with await HsmConnection.open(target.host, target.port, with_cert) as mtls:
            await mtls.call(
                "login", {"username": "admin", "role": "admin", "password": "admin-password-1"}
            )
            await mtls.call("mtls.set_enforcement", {"level": "cluster"})

    asyncio.run(enforce())
    sessions_before = target.hsm.sessions_opened
    ops_before = list(target.hsm.ops)

    with pytest.raises(errors.ClientCertificateRequired) as caught:
        asyncio.run(_connect_and_ask(target.host, target.port, target.settings))
    assert type(caught.value) is errors.ClientCertificateRequired
    assert f"the HSM at {target.host}:{target.port} ({target.hello.hsm_id})" in str(caught.value)
    assert "requires a client certificate" in str(caught.value)

    stranger = CertificateAuthority.generate("not a registered anchor")
    wrong = target.settings_with(hsm_client_cert=_client_credential(stranger, tmp_path, "wrong"))
    with pytest.raises(errors.ClientCertificateRejected):
        asyncio.run(_connect_and_ask(target.host, target.port, wrong))
    assert target.hsm.sessions_opened == sessions_before
    assert target.hsm.ops == ops_before

    # The registered client certificate still gets through.
    info = asyncio.run(_connect_and_ask(target.host, target.port, with_cert))
    assert info["hsm-id"] == target.hello.hsm_id


# -- against any target (local or external) --------------------------------------------------


def _target_settings(cluster: ClusterUnderTest) -> tuple[tuple[str, int], ChannelSettings]:
    config = load_config(cluster.config_path).select(None)
    server = config.enabled_servers[0]
    return (server.hostname, server.port), channel_settings(config)


def test_any_target_is_reached_with_its_own_trust(cloudhsm_cluster: ClusterUnderTest) -> None:
    address, settings = _target_settings(cloudhsm_cluster)
    info = asyncio.run(_connect_and_ask(*address, settings))
    if cloudhsm_cluster.cluster_id:
        assert info["cluster-id"] == cloudhsm_cluster.cluster_id


def test_any_target_is_refused_under_a_foreign_customer_ca(
    cloudhsm_cluster: ClusterUnderTest,
) -> None:
    address, settings = _target_settings(cloudhsm_cluster)
    foreign = CertificateAuthority.generate("foreign customer CA")
    settings = replace(settings, hsm_ca_pem=foreign.cert_pem, hsm_ca_source="foreignCA.crt")
    with pytest.raises(errors.ClusterCertificateUntrusted) as caught:
        asyncio.run(_connect_and_ask(*address, settings))
    assert "was not issued by the CA in foreignCA.crt" in str(caught.value)


def test_any_target_is_refused_when_another_cluster_is_expected(
    cloudhsm_cluster: ClusterUnderTest,
) -> None:
    address, settings = _target_settings(cloudhsm_cluster)
    settings = replace(settings, expected_cluster_id=OTHER_CLUSTER)
    with pytest.raises(errors.ClusterMismatch) as caught:
        asyncio.run(_connect_and_ask(*address, settings))
    assert f"expects cluster {OTHER_CLUSTER}" in str(caught.value)
