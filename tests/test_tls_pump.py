"""The sans-IO TLS pump: both sides in memory, no sockets."""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures.trust import CertificateAuthority, Credential
from protocol.tls import TlsPump

CA = CertificateAuthority.generate("pump test CA")
SERVER = CA.issue_host("hsm.test")


def _server_context(credential: Credential, client_ca: bytes | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with tempfile.TemporaryDirectory() as directory:
        cert, key = credential.write(Path(directory), "server")
        context.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=client_ca.decode())
    return context


def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(cadata=CA.cert_pem.decode())
    return context


SERVER_CONTEXT = _server_context(SERVER)
CLIENT_CONTEXT = _client_context()


def _pair(server_context: ssl.SSLContext = SERVER_CONTEXT) -> tuple[TlsPump, TlsPump]:
    client = TlsPump(CLIENT_CONTEXT, server_side=False, server_hostname="hsm.test")
    server = TlsPump(server_context, server_side=True)
    return client, server


def _shuttle(client: TlsPump, server: TlsPump) -> None:
    """Run the handshake to completion, moving bytes both ways."""
    for _ in range(10):
        client_done = client.do_handshake()
        server.receive_tls(client.take_outgoing())
        server_done = server.do_handshake()
        client.receive_tls(server.take_outgoing())
        if client_done and server_done:
            return
    raise AssertionError("handshake did not finish in 10 flights")


def test_handshake_and_data_both_ways() -> None:
    client, server = _pair()
    assert client.peer_certificate_der() is None
    _shuttle(client, server)
    assert client.handshake_done
    assert server.handshake_done
    assert client.ssl_object.version() == "TLSv1.3"
    assert client.peer_certificate_der() == SERVER.certificate.public_bytes(Encoding.DER)
    client.write(b"request")
    server.receive_tls(client.take_outgoing())
    assert server.read() == b"request"
    server.write(b"response")
    client.receive_tls(server.take_outgoing())
    assert client.read() == b"response"
    assert client.read() == b""


def test_close_notify_is_seen_by_the_peer() -> None:
    client, server = _pair()
    _shuttle(client, server)
    client.close()
    server.receive_tls(client.take_outgoing())
    assert server.read() == b""
    assert server.peer_closed


def test_eof_without_close_notify_is_truncation() -> None:
    client, server = _pair()
    _shuttle(client, server)
    server.receive_eof()
    with pytest.raises(ssl.SSLEOFError):
        server.read()


def test_large_plaintext_spans_records() -> None:
    client, server = _pair()
    _shuttle(client, server)
    payload = bytes(range(256)) * 4096  # 1 MiB
    client.write(payload)
    wire = client.take_outgoing()
    assert len(wire) > len(payload)
    server.receive_tls(wire)
    assert server.read() == payload


def test_missing_client_certificate_reaches_the_client_as_an_alert() -> None:
    client, server = _pair(_server_context(SERVER, client_ca=CA.cert_pem))
    client.do_handshake()
    server.receive_tls(client.take_outgoing())
    assert not server.do_handshake()
    client.receive_tls(server.take_outgoing())
    assert client.do_handshake()  # TLS 1.3: the client finishes first
    server.receive_tls(client.take_outgoing())
    with pytest.raises(ssl.SSLError, match="PEER_DID_NOT_RETURN_A_CERTIFICATE"):
        server.do_handshake()
    client.receive_tls(server.take_outgoing())
    with pytest.raises(ssl.SSLError) as caught:
        client.read()
    assert caught.value.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED"


@settings(max_examples=25, deadline=None)
@given(
    messages=st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=20),
)
def test_any_chunking_of_the_record_stream_yields_the_same_plaintext(
    messages: list[bytes], cuts: list[int]
) -> None:
    client, server = _pair()
    _shuttle(client, server)
    for message in messages:
        client.write(message)
    wire = client.take_outgoing()
    received = bytearray()
    position = 0
    index = 0
    while position < len(wire):
        size = cuts[index % len(cuts)]
        server.receive_tls(wire[position : position + size])
        received += server.read()
        position += size
        index += 1
    assert bytes(received) == b"".join(messages)
