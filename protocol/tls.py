"""The sans-IO TLS pump that carries the inner HSM channel.

The inner channel is TLS 1.3 run over :class:`ssl.MemoryBIO` pairs: the pump
never touches a socket. Callers feed it the TLS bytes that arrived in ``TLS``
frames (:meth:`TlsPump.receive_tls`), take the TLS bytes it wants to send
(:meth:`TlsPump.take_outgoing`) and exchange plaintext with
:meth:`TlsPump.write` / :meth:`TlsPump.read`. Both the HSM endpoint (server
side) and the client connection (client side) drive the same object, so the
handshake and record logic is written once and tested without a network.

``ssl.SSLError`` escapes unchanged: only the caller knows what a failure means
(an untrusted cluster certificate for the client, a missing client certificate
for the HSM). Whatever alert OpenSSL wrote before failing is still in
:meth:`take_outgoing`, so the peer learns why.
"""

from __future__ import annotations

import contextlib
import ssl

#: Largest plaintext taken out of the SSLObject per read call; a TLS record holds
#: at most 16 KiB, so this drains several records per call.
_READ_CHUNK = 256 * 1024


class TlsPump:
    """One side of a TLS connection whose records travel as opaque bytes."""

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
        )
        self._handshake_done = False
        self._peer_closed = False

    @property
    def ssl_object(self) -> ssl.SSLObject:
        return self._ssl

    @property
    def handshake_done(self) -> bool:
        return self._handshake_done

    @property
    def peer_closed(self) -> bool:
        """True once the peer sent close_notify."""
        return self._peer_closed

    def receive_tls(self, data: bytes) -> None:
        """Hand the pump TLS bytes that arrived from the peer."""
        self._incoming.write(data)

    def receive_eof(self) -> None:
        """The transport ended; a later read without close_notify raises ``SSLEOFError``."""
        self._incoming.write_eof()

    def do_handshake(self) -> bool:
        """Advance the handshake; True once it is complete. Raises ``ssl.SSLError``."""
        if self._handshake_done:
            return True
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            return False
        self._handshake_done = True
        return True

    def read(self) -> bytes:
        """Return every byte of plaintext decryptable now (may be empty)."""
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._ssl.read(_READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self._peer_closed = True
                break
            if not chunk:
                # An empty read on a MemoryBIO means close_notify was received.
                self._peer_closed = True
                break
            chunks.append(chunk)
            if not self._incoming.pending and not self._ssl.pending():
                # Everything that arrived is decrypted: another read would only
                # raise SSLWantReadError (an exception per call on the hot path).
                break
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    def write(self, plaintext: bytes | bytearray) -> None:
        """Encrypt plaintext; the records wait in :meth:`take_outgoing`."""
        view = memoryview(plaintext)
        while view:
            written = self._ssl.write(view)
            view = view[written:]

    def take_outgoing(self) -> bytes:
        """TLS bytes to send to the peer (handshake, records, alerts)."""
        return self._outgoing.read()

    def close(self) -> None:
        """Start an orderly shutdown: queue close_notify for the peer."""
        # SSLWantReadError: the peer's close_notify has not arrived (or the channel
        # is already broken); ours is queued either way, which is all a sender owes.
        with contextlib.suppress(ssl.SSLError):
            self._ssl.unwrap()

    def peer_certificate_der(self) -> bytes | None:
        """The peer's certificate (DER) once the handshake is done, or None."""
        if not self._handshake_done:
            return None
        return self._ssl.getpeercert(binary_form=True)
