"""Artifact URIs, lineage tags and the configuration surface (Variables with laptop defaults)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_mlops.core.config import DEFAULT_IMAGE, SETTINGS, MlopsConfig, mlops_home
from airflow_mlops.core.errors import SpecError
from airflow_mlops.core.lineage import (
    check_artifact_root,
    checkpoint_uri,
    join_uri,
    lineage_tags,
    output_uri,
    params_hash,
    result_uri,
    run_prefix,
)

RUN = "manual__2026-11-23T00:00:00+00:00"
ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9.-]{0,40}\Z", fullmatch=True)
roots = st.sampled_from(["/srv/artifacts", "/srv/artifacts/", "file:///tmp/a", "s3://acme-ml", "s3://acme-ml/mlops/"])


# --- URIs ---------------------------------------------------------------------------------------------------

def test_s3_uris() -> None:
    import hashlib

    root = "s3://acme-ml/mlops/"
    # A squashed run id keeps a short hash of the original, so distinct ids never share a prefix.
    run = f"manual__2026-11-23T00_00_00_00_00-{hashlib.sha256(RUN.encode()).hexdigest()[:6]}"
    assert checkpoint_uri(root, "train_fraud", "train", RUN) == (
        f"s3://acme-ml/mlops/runs/train_fraud/{run}/train/checkpoints")
    assert result_uri(root, "train_fraud", "train", RUN, 3) == (
        f"s3://acme-ml/mlops/runs/train_fraud/{run}/train/try-3/result.json")
    assert output_uri(root, "train_fraud", "train", RUN) == (
        f"s3://acme-ml/mlops/runs/train_fraud/{run}/train/outputs")


def test_run_ids_that_squash_alike_stay_apart() -> None:
    assert checkpoint_uri("/a", "d", "t", "x:y") != checkpoint_uri("/a", "d", "t", "x+y")
    assert checkpoint_uri("/a", "d", "t", "x_y") == "/a/runs/d/x_y/t/checkpoints"


def test_local_uris() -> None:
    assert checkpoint_uri("/srv/artifacts", "d", "t", "r") == "/srv/artifacts/runs/d/r/t/checkpoints"
    assert result_uri("file:///srv/artifacts/", "d", "t", "r", 1) == (
        "/srv/artifacts/runs/d/r/t/try-1/result.json")
    assert checkpoint_uri("/", "d", "t", "r") == "/runs/d/r/t/checkpoints"


def test_task_group_ids_keep_their_dots() -> None:
    assert run_prefix("/a", "dag.v2", "group.train", "r") == "/a/runs/dag.v2/r/group.train"


@given(root=roots, dag=ids, task=ids, run=ids, tries=st.lists(st.integers(1, 1000), min_size=2, max_size=5,
                                                             unique=True))
def test_checkpoint_shared_by_tries_result_per_try(root: str, dag: str, task: str, run: str,
                                                   tries: list[int]) -> None:
    prefix = run_prefix(root, dag, task, run)
    ckpt = checkpoint_uri(root, dag, task, run)
    results = [result_uri(root, dag, task, run, n) for n in tries]
    assert len(set(results)) == len(tries)
    assert ckpt.startswith(prefix + "/")
    for uri in results:
        assert uri.startswith(prefix + "/")
        assert uri.endswith("/result.json")
        assert not uri.startswith(ckpt)  # a try's result never lands among checkpoints
    assert "//" not in ckpt.removeprefix("s3://")


@given(root=roots, dag=ids, task=ids, run=ids, other=ids)
def test_checkpoint_differs_per_run_and_task(root: str, dag: str, task: str, run: str, other: str) -> None:
    if other == run:
        return
    assert checkpoint_uri(root, dag, task, run) != checkpoint_uri(root, dag, task, other)
    if other != task:
        assert checkpoint_uri(root, dag, task, run) != checkpoint_uri(root, dag, other, run)
    if other != dag:
        assert checkpoint_uri(root, dag, task, run) != checkpoint_uri(root, other, task, run)


def test_scheduled_runs_get_distinct_checkpoints() -> None:
    a = checkpoint_uri("/a", "d", "t", "scheduled__2026-11-23T00:00:00+00:00")
    b = checkpoint_uri("/a", "d", "t", "scheduled__2026-11-24T00:00:00+00:00")
    assert a != b


@pytest.mark.parametrize("run_id", [RUN, "a/b", "x y", "../escape", "::"])
def test_run_id_is_one_safe_path_segment(run_id: str) -> None:
    prefix = run_prefix("/a", "d", "t", run_id)
    segment = prefix.split("/")[4]
    assert prefix == f"/a/runs/d/{segment}/t"
    assert segment and all(c.isalnum() or c in "._=-" for c in segment)


@pytest.mark.parametrize("run_id", ["..", ".", "...", "/..", "../.."])
def test_dot_run_ids_cannot_escape_the_run_prefix(run_id: str) -> None:
    """Regression: Airflow accepts a manual run id of '..' ([A-Za-z0-9_.~:+-]); as a path segment it made the
    local checkpoint dir /a/runs/d/../t/checkpoints, outside the DAG's prefix and shared with a DAG named 't'."""
    prefix = run_prefix("/a", "d", "t", run_id)
    segment = prefix.split("/")[4]
    assert segment.strip(".")  # never ".", ".." or any all-dots name
    assert os.path.normpath(checkpoint_uri("/a", "d", "t", run_id)).startswith("/a/runs/d/")
    assert checkpoint_uri("/a", "d", "t", run_id) != checkpoint_uri("/a", "d", "t", "r")


def test_join_uri_skips_empty_parts_and_slashes() -> None:
    assert join_uri("s3://b/p/", "/x/", "", "y") == "s3://b/p/x/y"


@pytest.mark.parametrize(("root", "expected"), [
    ("/data/artifacts/", "/data/artifacts"),
    ("file:///data/artifacts", "/data/artifacts"),
    ("s3://bucket", "s3://bucket"),
    ("s3://bucket/prefix/", "s3://bucket/prefix"),
    ("/", "/"),
])
def test_check_artifact_root_accepts(root: str, expected: str) -> None:
    assert check_artifact_root(root) == expected


@pytest.mark.parametrize(("root", "fragment"), [
    ("artifacts", "an absolute local path"),
    ("./artifacts", "an absolute local path"),
    ("~/artifacts", "an absolute local path"),
    ("file://relative/dir", "an absolute local path"),
    ("", "an absolute local path"),
    ("s3://", "s3://<bucket>"),
    ("s3:///prefix", "s3://<bucket>"),
])
def test_check_artifact_root_rejects(root: str, fragment: str) -> None:
    with pytest.raises(SpecError) as exc:
        check_artifact_root(root)
    assert exc.value.field == "artifact_root"
    assert str(exc.value).startswith("artifact_root: ")
    assert fragment in str(exc.value)
    assert root.endswith(exc.value.got)  # file:// is stripped before the message is built


def test_uri_builders_validate_the_root() -> None:
    with pytest.raises(SpecError):
        checkpoint_uri("relative", "d", "t", "r")
    with pytest.raises(SpecError):
        result_uri("s3://", "d", "t", "r", 1)


# --- params hash and lineage tags ---------------------------------------------------------------------------

params_dicts = st.dictionaries(
    st.text(min_size=1, max_size=10),
    st.integers() | st.floats(allow_nan=False) | st.text(max_size=10) | st.booleans() | st.none()
    | st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    max_size=8,
)


@given(params_dicts)
def test_params_hash_ignores_key_order(params: dict[str, Any]) -> None:
    reordered = dict(reversed(list(params.items())))
    nested_reordered = {k: dict(reversed(list(v.items()))) if isinstance(v, dict) else v
                        for k, v in reordered.items()}
    digest = params_hash(params)
    assert params_hash(reordered) == params_hash(nested_reordered) == digest
    assert len(digest) == 16 and all(c in "0123456789abcdef" for c in digest)


def test_params_hash_changes_with_values() -> None:
    base = {"lr": 0.001, "epochs": 10, "optimizer": {"name": "adamw", "betas": [0.9, 0.999]}}
    assert params_hash(base) == params_hash({"optimizer": {"betas": [0.9, 0.999], "name": "adamw"},
                                             "epochs": 10, "lr": 0.001})
    assert params_hash(base) != params_hash({**base, "lr": 0.01})
    assert params_hash(base) != params_hash({**base, "epochs": "10"})
    assert params_hash({}) != params_hash({"": None})


def test_lineage_tags() -> None:
    tags = lineage_tags(dag_id="d", run_id=RUN, task_id="t", try_number=2)
    assert tags == {"mlops.airflow.dag_id": "d", "mlops.airflow.run_id": RUN, "mlops.airflow.task_id": "t",
                    "mlops.airflow.try_number": "2"}
    full = lineage_tags(dag_id="d", run_id=RUN, task_id="t", try_number=1, data_version="v7",
                        git_sha="abc123", image_digest="sha256:" + "0" * 64, params={"b": 1, "a": 2})
    assert full["mlops.data_version"] == "v7"
    assert full["mlops.git_sha"] == "abc123"
    assert full["mlops.image_digest"] == "sha256:" + "0" * 64
    assert full["mlops.params_hash"] == params_hash({"a": 2, "b": 1})
    assert "mlops.params_hash" in lineage_tags(dag_id="d", run_id=RUN, task_id="t", try_number=1, params={})


# --- config -------------------------------------------------------------------------------------------------

def resolve(values: dict[str, Any], env: dict[str, str]) -> MlopsConfig:
    asked: list[str] = []

    def lookup(name: str) -> Any:
        asked.append(name)
        return values.get(name)

    config = MlopsConfig.resolve(lookup, env)
    assert set(asked) <= set(SETTINGS)
    return config


def test_config_defaults(tmp_path: Any) -> None:
    home = str(tmp_path / "home")
    config = resolve({}, {"MLOPS_HOME": home})
    assert config == MlopsConfig(
        runtime="local", artifact_root=f"{home}/artifacts", mlflow_conn_id="mlflow_default",
        kubernetes_conn_id="kubernetes_default", namespace=None, image=DEFAULT_IMAGE, mlflow_secret=None,
        deferrable=True, git_sha=None,
    )


def test_config_default_home_without_mlops_home() -> None:
    config = resolve({}, {})
    assert config.artifact_root == os.path.expanduser("~/.airflow-mlops") + "/artifacts"
    assert os.path.isabs(config.artifact_root)


def test_mlops_home_is_made_absolute(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert mlops_home({"MLOPS_HOME": "rel/home"}) == os.path.join(os.getcwd(), "rel", "home")
    assert mlops_home({"MLOPS_HOME": ""}) == os.path.expanduser("~/.airflow-mlops")


def test_config_overrides() -> None:
    config = resolve({
        "mlops_runtime": " kubernetes ",
        "mlops_artifact_root": "s3://acme-ml/mlops/",
        "mlops_mlflow_conn_id": "mlflow_prod",
        "mlops_kubernetes_conn_id": "eks",
        "mlops_namespace": "ml",
        "mlops_image": "ghcr.io/acme/trainer@sha256:" + "a" * 64,
        "mlops_mlflow_secret": "mlflow-credentials",
        "mlops_deferrable": "False",
        "mlops_git_sha": "deadbeef",
    }, {"MLOPS_HOME": "/unused"})
    assert config == MlopsConfig(
        runtime="kubernetes", artifact_root="s3://acme-ml/mlops", mlflow_conn_id="mlflow_prod",
        kubernetes_conn_id="eks", namespace="ml", image="ghcr.io/acme/trainer@sha256:" + "a" * 64,
        mlflow_secret="mlflow-credentials", deferrable=False, git_sha="deadbeef",
    )


def test_blank_values_fall_back_to_defaults() -> None:
    values = {"mlops_runtime": "  ", "mlops_image": "", "mlops_deferrable": None}
    config = resolve(values, {"MLOPS_HOME": "/h"})
    assert (config.runtime, config.image, config.deferrable) == ("local", DEFAULT_IMAGE, True)
    assert config.artifact_root == "/h/artifacts"


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("TRUE", True), ("1", True), ("yes", True),
                                               ("false", False), ("0", False), ("No", False)])
def test_config_deferrable_values(raw: str, expected: bool) -> None:
    assert resolve({"mlops_deferrable": raw}, {"MLOPS_HOME": "/h"}).deferrable is expected


@pytest.mark.parametrize("runtime", ["k8s", "Kubernetes", "docker", "LOCAL"])
def test_config_invalid_runtime(runtime: str) -> None:
    with pytest.raises(SpecError) as exc:
        resolve({"mlops_runtime": runtime}, {"MLOPS_HOME": "/h"})
    assert exc.value.field == "Variable mlops_runtime"
    assert str(exc.value).startswith("Variable mlops_runtime: ")
    assert "'local'" in str(exc.value) and "'kubernetes'" in str(exc.value)
    assert repr(runtime) in str(exc.value)


@pytest.mark.parametrize("raw", ["maybe", "2", "on", "t"])
def test_config_invalid_deferrable(raw: str) -> None:
    with pytest.raises(SpecError) as exc:
        resolve({"mlops_deferrable": raw}, {"MLOPS_HOME": "/h"})
    assert exc.value.field == "Variable mlops_deferrable"
    assert "true or false" in str(exc.value)


def test_config_invalid_artifact_root() -> None:
    with pytest.raises(SpecError) as exc:
        resolve({"mlops_artifact_root": "artifacts"}, {"MLOPS_HOME": "/h"})
    assert exc.value.field == "artifact_root"


def test_settings_table_defaults_are_valid() -> None:
    """Every documented default resolves (the README table is generated from SETTINGS)."""
    assert all(name.startswith("mlops_") for name in SETTINGS)
    assert SETTINGS["mlops_runtime"][0] == "local"
    literal = {name: default for name, (default, _) in SETTINGS.items() if "$" not in default}
    assert resolve(literal, {"MLOPS_HOME": "/h"}) == resolve({}, {"MLOPS_HOME": "/h"})
