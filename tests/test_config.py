"""Client configuration: loading, strict validation with precise messages, cluster choice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    load_config,
    parse_config,
    resolve_config_path,
)
from client.errors import ConfigurationError

PATH = Path("/etc/cloudhsm/cloudhsm-cli.cfg")


def _document(**cluster: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "hsm_ca_file": "/opt/cloudhsm/etc/customerCA.crt",
        "servers": [{"hostname": "10.0.1.12", "port": 2223, "enable": True}],
    }
    section.update(cluster)
    return {"clusters": [{"type": "hsm2m", "cluster": section}]}


def test_a_published_example_config_loads() -> None:
    config = parse_config(_document(), PATH)
    cluster = config.select(None)
    assert cluster.hsm_ca_file == Path("/opt/cloudhsm/etc/customerCA.crt")
    assert cluster.server_ca_file == Path("/opt/cloudhsm/etc/AWS_CloudHSM_Root-G1.crt")
    assert [(s.hostname, s.port, s.enable) for s in cluster.servers] == [("10.0.1.12", 2223, True)]
    assert config.disable_key_availability_check is False
    assert config.default_retry_mode == "standard"


def test_relative_paths_are_taken_from_the_config_directory() -> None:
    config = parse_config(_document(hsm_ca_file="customerCA.crt"), PATH)
    assert config.clusters[0].hsm_ca_file == PATH.parent / "customerCA.crt"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "clusters is missing"),
        ({"clusters": []}, "clusters must list at least one cluster"),
        ({"clusters": {}}, "clusters must be a list"),
        (
            {"clusters": [{"type": "hsm3", "cluster": {}}]},
            "clusters[0].type must be one of hsm1, hsm2m",
        ),
        (_document(servers=[]), "clusters[0].cluster.servers must list at least one server"),
        (
            _document(servers=[{"hostname": "h", "port": "2223"}]),
            "clusters[0].cluster.servers[0].port must be an integer",
        ),
        (
            _document(servers=[{"hostname": "h", "port": 70000}]),
            "clusters[0].cluster.servers[0].port must be between 1 and 65535",
        ),
        (
            _document(servers=[{"hostname": "h", "port": True}]),
            "clusters[0].cluster.servers[0].port must be an integer",
        ),
        (
            _document(servers=[{"hostname": "h", "port": 1, "enable": False}]),
            "clusters[0].cluster.servers has no enabled server",
        ),
        (
            _document(servers=[{"hostname": "h", "port": 1, "weight": 2}]),
            "clusters[0].cluster.servers[0].weight is not a known server setting",
        ),
        (
            _document(hsm_ca_fle="x"),
            "clusters[0].cluster.hsm_ca_fle is not a known cluster setting",
        ),
        (_document(hsm_ca_file=""), "clusters[0].cluster.hsm_ca_file must not be empty"),
        (
            _document(cluster_id="abc"),
            "clusters[0].cluster.cluster_id must look like cluster-xxxxxxxxxxx",
        ),
        (
            _document(server_client_cert_file="c.pem"),
            "clusters[0].cluster.server_client_key_file is missing but server_client_cert_file is set",
        ),
        (
            _document(client_key_hsm_tls_file="k.pem"),
            "clusters[0].cluster.client_cert_hsm_tls_file is missing but client_key_hsm_tls_file is set",
        ),
        (
            {**_document(), "default_retry_mode": "aggressive"},
            "default_retry_mode must be one of standard, off",
        ),
        (
            {**_document(), "disable_key_availability_check": "yes"},
            "disable_key_availability_check must be true or false",
        ),
    ],
)
def test_invalid_documents_name_the_key(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_config(document, PATH)
    assert str(caught.value) == f"Invalid configuration in {PATH}: {message}"


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.cfg"
    with pytest.raises(ConfigurationError, match=f"Configuration file {missing} does not exist"):
        load_config(missing)
    garbage = tmp_path / "garbage.cfg"
    garbage.write_text("{not json")
    with pytest.raises(ConfigurationError, match=r"is not valid JSON: .* at line 1 column 2"):
        load_config(garbage)
    listed = tmp_path / "list.cfg"
    listed.write_text("[]")
    with pytest.raises(ConfigurationError, match="must hold a JSON object"):
        load_config(listed)
    with pytest.raises(ConfigurationError, match="is a directory"):
        load_config(tmp_path)


def test_path_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert resolve_config_path() == DEFAULT_CONFIG_PATH
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "env.cfg"))
    assert resolve_config_path() == tmp_path / "env.cfg"
    assert resolve_config_path(tmp_path / "flag.cfg") == tmp_path / "flag.cfg"


def _two_clusters() -> dict[str, Any]:
    first = _document(cluster_id="cluster-aaaaaaaaaaa")["clusters"][0]
    second = _document(cluster_id="cluster-bbbbbbbbbbb")["clusters"][0]
    return {"clusters": [first, second]}


def test_several_clusters_need_a_cluster_id() -> None:
    config = parse_config(_two_clusters(), PATH)
    assert config.select("cluster-bbbbbbbbbbb").cluster_id == "cluster-bbbbbbbbbbb"
    with pytest.raises(ConfigurationError, match="choose one with --cluster-id"):
        config.select(None)
    with pytest.raises(ConfigurationError, match="No cluster with id cluster-ccccccccccc"):
        config.select("cluster-ccccccccccc")


def test_duplicate_and_missing_ids_are_refused() -> None:
    document = _two_clusters()
    document["clusters"][1]["cluster"]["cluster_id"] = "cluster-aaaaaaaaaaa"
    with pytest.raises(ConfigurationError, match="repeats cluster-aaaaaaaaaaa"):
        parse_config(document, PATH)
    del document["clusters"][1]["cluster"]["cluster_id"]
    with pytest.raises(ConfigurationError, match="every cluster needs a cluster_id"):
        parse_config(document, PATH)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=10,
    )
)
def test_arbitrary_json_is_accepted_or_refused_precisely(value: Any) -> None:
    document = value if isinstance(value, dict) else {"clusters": value}
    problems: list[str] = []
    try:
        parse_config(document, PATH)
    except ConfigurationError as exc:
        problems.append(str(exc))
    assert all(p.startswith(f"Invalid configuration in {PATH}: ") for p in problems)


def test_unknown_top_level_keys_are_kept_out_of_the_way(tmp_path: Path) -> None:
    path = tmp_path / "c.cfg"
    path.write_text(json.dumps({**_document(), "logging": {"log_type": "term"}, "future": 1}))
    assert load_config(path).clusters[0].servers[0].hostname == "10.0.1.12"
