"""Shared helpers for tests that run ``cloudhsm-local up`` as a real process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

#: Seconds ``up`` may take to become ready on a loaded 2-core CI machine.
READY_TIMEOUT = 60.0


@contextmanager
def running_up(tmp_path: Path, *extra: str, hsms: int = 2) -> Iterator[dict[str, Any]]:
    """``cloudhsm-local up`` as a subprocess; yields the ready document, then SIGTERMs it."""
    ready = tmp_path / f"ready-{time.monotonic_ns()}.json"
    data_dir = tmp_path / "data"
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "up", "--hsms", str(hsms),
         "--data-dir", str(data_dir), "--ready-file", str(ready), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.exists():
            if process.poll() is not None:
                out, err = process.communicate()
                pytest.fail(f"up exited with {process.returncode}: {err}")
            if time.monotonic() > deadline:
                pytest.fail("up did not become ready")
            time.sleep(0.05)
        document = json.loads(ready.read_text())
        document["_process"] = process
        yield document
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        document_out = {"stdout": out, "stderr": err, "returncode": process.returncode}
        (tmp_path / "last-run.json").write_text(json.dumps(document_out))


def last_run(tmp_path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((tmp_path / "last-run.json").read_text())
    return result
