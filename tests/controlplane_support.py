"""Shared helpers for tests of the control plane through boto3."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from simulator.cluster import ClusterThread


def boto3_client(running: ClusterThread) -> Any:
    return boto3.client(
        "cloudhsmv2",
        endpoint_url=running.cluster.control_plane_url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


def api_error(call: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    error = caught.value.response["Error"]
    return error["Code"], error["Message"]
