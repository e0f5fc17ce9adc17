"""What a CLI run holds between commands: the configuration, the cluster views, the login.

In single-command mode one context serves one command and credentials come from
``CLOUDHSM_ROLE`` and ``CLOUDHSM_PIN`` (``username:password``). In interactive mode the
same context lives for the whole session, so a ``login`` on one line holds for the next.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from client.cli.output import CliError
from client.cli.results import login_refusal
from client.cluster import ClusterView
from client.config import ClientConfig, load_config, resolve_config_path
from client.errors import HsmStatusError

ROLE_ENV = "CLOUDHSM_ROLE"
PIN_ENV = "CLOUDHSM_PIN"
ROLES = ("admin", "crypto-user")


class CliContext:
    """The configuration, open cluster views and I/O of one CLI run."""

    def __init__(
        self,
        *,
        stdout: TextIO,
        stdin: TextIO,
        env: Mapping[str, str] | None = None,
        config_path: str | None = None,
        interactive: bool = False,
        default_cluster_id: str | None = None,
    ) -> None:
        self.stdout = stdout
        self.stdin = stdin
        self.env = dict(os.environ if env is None else env)
        self.config_path = config_path
        self.interactive = interactive
        self.default_cluster_id = default_cluster_id
        self._config: ClientConfig | None = None
        self._views: dict[str | None, ClusterView] = {}
        #: Registration tokens this run generated: SHA-256 of approval_data -> the address
        #: of the HSM that issued it, so each signed entry goes back to its own HSM.
        self.registration_homes: dict[bytes, str] = {}

    @property
    def prompt_stream(self) -> TextIO:
        """Where prompts go: the session's output in interactive mode; stderr in
        single-command mode, so stdout stays exactly one JSON document for scripts."""
        return self.stdout if self.interactive else sys.stderr

    def config(self) -> ClientConfig:
        if self._config is None:
            explicit = self.config_path or self.env.get("CLOUDHSM_CONFIG")
            self._config = load_config(resolve_config_path(explicit))
        return self._config

    def use_config(self, path: str) -> None:
        """``--config PATH`` given with a command: that file configures this command on."""
        if path != self.config_path:
            self.config_path = path
            self._config = None

    def cluster_id(self, requested: str | None) -> str | None:
        return requested or self.default_cluster_id

    async def view(self, requested_cluster: str | None) -> ClusterView:
        """The open view of the addressed cluster (connected on first use)."""
        cluster_id = self.cluster_id(requested_cluster)
        config = self.config()
        key = config.select(cluster_id).cluster_id or cluster_id
        view = self._views.get(key)
        if view is None:
            view = await ClusterView.open(config, cluster_id)
            self._views[key] = view
        return view

    async def session_view(self, requested_cluster: str | None) -> ClusterView:
        """The view, logged in from the environment in single-command mode if not yet."""
        view = await self.view(requested_cluster)
        if view.credentials is None and not self.interactive:
            credentials = self.env_credentials()
            if credentials is not None:
                await log_in(view, credentials)
        return view

    def env_credentials(self) -> tuple[str, str, str] | None:
        return credentials_from_env(self.env, ROLE_ENV, PIN_ENV)

    def read_secret(self, prompt: str) -> str:
        """A password from the terminal (no echo), or the next line of piped input."""
        if self.stdin.isatty():
            return getpass.getpass(prompt)
        self.prompt_stream.write(prompt)
        self.prompt_stream.flush()
        line = self.stdin.readline()
        # A terminal would echo the Enter key; piped input does not, so end the line here.
        self.prompt_stream.write("\n")
        if not line:
            raise CliError("No password was provided")
        return line.rstrip("\r\n")

    def read_line(self, prompt: str) -> str:
        """One answer to a prompt (a path, a confirmation), from the terminal or a pipe."""
        self.prompt_stream.write(prompt)
        self.prompt_stream.flush()
        line = self.stdin.readline()
        if not self.stdin.isatty():
            self.prompt_stream.write("\n")
        if not line:
            raise CliError(f"No answer to: {prompt}")
        return line.strip()

    def new_password(self, given: str | None) -> str:
        """``--password`` or the CLI's two prompts, which must agree."""
        if given is not None:
            return given
        first = self.read_secret("Enter password:")
        second = self.read_secret("Confirm password:")
        if first != second:
            raise CliError("Passwords do not match")
        return first

    async def close(self) -> None:
        views, self._views = list(self._views.values()), {}
        for view in views:
            await view.close()


def read_input_file(path: str, what: str) -> bytes:
    """A file named on the command line, with a precise error when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CliError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise CliError(f"{what} {path} is a directory") from None
    except OSError as exc:
        raise CliError(f"{what} {path} cannot be read: {exc.strerror}") from None


def write_output_file(path: str, data: bytes, *, mode: int = 0o600) -> None:
    """Write a file the CLI produces (token files, key files), private by default."""
    target = Path(path)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except OSError as exc:
        raise CliError(f"Cannot write {path}: {exc.strerror}") from None


async def log_in(view: ClusterView, credentials: tuple[str, str, str]) -> None:
    """Log ``view`` in as (username, role, password) from the environment; a refused
    login raises the CLI's refusal (the AWS texts), anything else as it came."""
    username, role, password = credentials
    try:
        await view.login(username, role, password)
    except HsmStatusError as exc:
        refusal = login_refusal(exc)
        if refusal is not None:
            raise refusal from None
        raise


def credentials_from_env(
    env: Mapping[str, str], role_env: str, pin_env: str
) -> tuple[str, str, str] | None:
    """(username, role, password) from a role variable and a ``<username>:<password>``
    PIN variable (``CLOUDHSM_ROLE``/``CLOUDHSM_PIN``, or the replicate destination's);
    None when neither is set, a precise error when one is missing or malformed."""
    role = env.get(role_env)
    pin = env.get(pin_env)
    if not role and not pin:
        return None
    if not role or not pin:
        given, missing = (role_env, pin_env) if role else (pin_env, role_env)
        raise CliError(f"{missing} must be set together with {given}")
    if role not in ROLES:
        raise CliError(f"{role_env} must be one of {', '.join(ROLES)}, not {role!r}")
    username, sep, password = pin.partition(":")
    if not sep or not username or not password:
        raise CliError(f"{pin_env} must have the form <username>:<password>")
    return username, role, password
