"""The simulator's root exception and the error an HSM operation raises."""

from __future__ import annotations

from protocol.status import Status


class SimulatorError(Exception):
    """Root of every exception the simulator raises on purpose."""


class HsmError(SimulatorError):
    """An HSM operation failed with a wire status; ``message`` is safe to send.

    Messages never contain secrets (passwords, key material, PINs): they go to
    the client and into logs.
    """

    def __init__(self, status: Status, message: str | None = None) -> None:
        self.status = status
        self.message = message or status.info.cli_message
        super().__init__(f"{status.name}: {self.message}")
