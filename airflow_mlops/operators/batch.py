"""Batch inference (ETML): score a batch with the champion, optionally blue-green against a candidate, publish."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops.core.batch import BatchSwitchPolicy, decide_switch
from airflow_mlops.core.errors import SpecError
from airflow_mlops.core.lineage import join_uri
from airflow_mlops.core.step import SecretEnvRef
from airflow_mlops.operators.step import MlopsStepOperator, StepPlan, _templated

if TYPE_CHECKING:
    from airflow.sdk import Context

SCORER_MODULE = "airflow_mlops.steps.batch_score"
_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,254}$")


def _check_alias(field_name: str, value: str | None, optional: bool = False) -> None:
    if value is None or (optional and value == "") or _templated(value):
        return
    if not isinstance(value, str) or not _ALIAS.match(value) or value.isdigit():
        raise SpecError(field_name, "an MLflow alias (letters, digits, '_' or '-', not a bare number)", value)


def _as_mapping(field_name: str, value: Any) -> Mapping[str, Any]:
    """A rendered ``{{ ti.xcom_pull(...) }}`` arrives as the repr of a dict: read it back safely."""
    import ast

    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise AirflowFailException(f"{field_name} must be a mapping (an upstream XCom); got {value!r}") from None
    if not isinstance(value, Mapping):
        raise AirflowFailException(f"{field_name} must be a mapping (an upstream XCom); got {value!r}")
    return value


class BatchScoreOperator(MlopsStepOperator):
    """Score a Parquet batch with ``models:/<model_name>@<alias>`` on the configured runtime.

    The alias is pinned to its version before scoring, so the output names exactly which version scored it.
    With ``candidate_alias`` the candidate scores the same rows too and the step reports how far the two
    outputs agree; :class:`PublishBatchScoresOperator` decides what consumers read.

    :param model_name: registered model (templated).
    :param alias: alias that serves production traffic (templated); default ``champion``.
    :param candidate_alias: alias of the candidate for a blue-green batch (templated); empty: none.
    :param input_uri: Parquet batch, local path or ``s3://`` (templated); empty with ``sample_dataset``: a
        bundled scikit-learn dataset (the laptop default).
    :param sample_dataset: dataset scored when ``input_uri`` is empty.
    :param label_column: dropped from the batch if present.
    :param id_column: copied through to the output to join scores back.
    :param classes: class names in the model's probability column order.
    :param chunk_rows: rows per predict call (bounds memory on large batches).
    :param mlflow_conn_id: default the ``mlops_mlflow_conn_id`` Variable.

    Other parameters as :class:`MlopsStepOperator` (compute, image, runtime, deferrable, ...).
    """

    template_fields: Sequence[str] = (*MlopsStepOperator.template_fields, "model_name", "alias", "candidate_alias",
                                      "input_uri", "sample_dataset")
    ui_color = "#d9f2e6"

    def __init__(self, *, model_name: str, alias: str = "champion", candidate_alias: str | None = None,
                 input_uri: str = "", sample_dataset: str | None = None, label_column: str = "target",
                 id_column: str | None = None, classes: Sequence[str] | None = None, chunk_rows: int = 100_000,
                 mlflow_conn_id: str | None = None, step_name: str = "batch-score", **kwargs: Any) -> None:
        super().__init__(module=SCORER_MODULE, step_name=step_name, **kwargs)
        _check_alias("BatchScoreOperator.alias", alias)
        _check_alias("BatchScoreOperator.candidate_alias", candidate_alias, optional=True)
        if candidate_alias and candidate_alias == alias:
            raise SpecError("BatchScoreOperator.candidate_alias", f"an alias other than alias={alias!r}",
                            candidate_alias)
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise SpecError("BatchScoreOperator.chunk_rows", "an integer >= 1", chunk_rows)
        if not model_name:
            raise SpecError("BatchScoreOperator.model_name", "a registered model name", model_name)
        self.model_name = model_name
        self.alias = alias
        self.candidate_alias = candidate_alias or ""
        self.input_uri = input_uri
        self.sample_dataset = sample_dataset
        self.label_column = label_column
        self.id_column = id_column
        self.classes = list(classes or [])
        self.chunk_rows = chunk_rows
        self.mlflow_conn_id = mlflow_conn_id

    def build_step(self, image: str, env: dict[str, str], args: list[str], compute: Any = None) -> Any:
        # Called by the base __init__ before this class's fields exist: the parse-time check needs no args.
        if hasattr(self, "chunk_rows"):
            args = [*self._score_args(), *args]
        return super().build_step(image, env, args, compute)

    def _score_args(self) -> list[str]:
        _check_alias("BatchScoreOperator.alias", self.alias)  # templated values: checked once rendered
        _check_alias("BatchScoreOperator.candidate_alias", self.candidate_alias, optional=True)
        args = ["--model-uri", f"models:/{self.model_name}@{self.alias}", "--chunk-rows", str(self.chunk_rows)]
        if self.candidate_alias:
            args += ["--candidate-uri", f"models:/{self.model_name}@{self.candidate_alias}"]
        if self.input_uri:
            args += ["--input-uri", self.input_uri]
        elif self.sample_dataset:
            args += ["--sample-dataset", self.sample_dataset]
        if self.label_column:
            args += ["--label", self.label_column]
        if self.id_column:
            args += ["--id-column", self.id_column]
        if self.classes:
            args += ["--classes", ",".join(self.classes)]
        return args

    def step_env(self, context: Context, plan: StepPlan,
                 runtime: str) -> tuple[dict[str, str], tuple[SecretEnvRef, ...]]:
        from airflow_mlops.hooks.mlflow import MlflowHook

        env, refs = super().step_env(context, plan, runtime)
        hook = MlflowHook(mlflow_conn_id=self.mlflow_conn_id or plan.config.mlflow_conn_id)
        if runtime == "kubernetes":
            mlflow_env, mlflow_refs = hook.pod_env(plan.config.mlflow_secret)
        else:
            mlflow_env, mlflow_refs = hook.process_env(), ()
        env.update(mlflow_env)
        return env, (*refs, *mlflow_refs)

    def on_step_success(self, context: Context, plan: StepPlan, result: dict[str, Any],
                        image_digest: str | None) -> dict[str, Any]:
        for role in ("current", "candidate"):
            if role in result:
                out = result[role]
                self.log.info("%-9s %s version %s (%s): %d rows -> %s, predicted %s", role, out["model_name"],
                              out["version"], out["model_uri"], out["rows"], out["output_uri"],
                              out["prediction_counts"])
        if "comparison" in result:
            self.log.info("agreement between versions: %s", ", ".join(
                f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in result["comparison"].items()))
        return result


class PublishBatchScoresOperator(BaseOperator):
    """Point consumers at this batch's scores: the candidate's if it agrees with the current model, else current.

    Consumers read a small pointer JSON (``output_uri``, model version, batch run) instead of a fixed path,
    so the switch is one atomic write and the previous pointer stays inside the new one for rollback.

    :param score_result: the scoring task's XCom (templated, e.g. ``{{ ti.xcom_pull(task_ids='score') }}``).
    :param pointer_uri: where the pointer lives (templated); default
        ``<artifact_root>/serving/batch/<model>/current.json``.
    :param policy: a :class:`BatchSwitchPolicy` or a dict of its fields (templated: checked at task start).
    """

    template_fields: Sequence[str] = ("score_result", "pointer_uri", "policy")
    template_fields_renderers = {"score_result": "json", "policy": "json"}
    ui_color = "#c9ead8"

    def __init__(self, *, score_result: Mapping[str, Any] | str, pointer_uri: str | None = None,
                 policy: BatchSwitchPolicy | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.score_result = score_result
        self.pointer_uri = pointer_uri
        self.policy: Any = policy if policy is not None else BatchSwitchPolicy()
        if isinstance(self.policy, Mapping) and not _templated(self.policy):
            BatchSwitchPolicy.from_dict(self.policy)  # fail at parse time

    def _policy(self) -> BatchSwitchPolicy:
        if isinstance(self.policy, BatchSwitchPolicy):
            return self.policy
        try:
            return BatchSwitchPolicy.from_dict(_as_mapping("policy", self.policy))
        except SpecError as err:
            raise AirflowFailException(str(err)) from None

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.hooks.artifacts import ArtifactStoreHook
        from airflow_mlops.hooks.config import load_config

        result = _as_mapping("score_result", self.score_result)
        if "current" not in result:
            raise AirflowFailException(f"score_result has no 'current' output: {sorted(result)}")
        current = result["current"]
        pointer_uri = self.pointer_uri or join_uri(load_config().artifact_root, "serving", "batch",
                                                   str(current["model_name"]), "current.json")
        store = ArtifactStoreHook()
        previous = store.read_json(pointer_uri) if store.exists(pointer_uri) else None
        policy = self._policy()
        if "candidate" in result:
            decision = decide_switch(result["comparison"], policy)
            chosen = result[decision.publish]
            reasons = list(decision.reasons)
        else:
            decision, chosen, reasons = None, current, ["single-model batch: the current model's scores"]
        ti = context["ti"]
        pointer = {
            "output_uri": chosen["output_uri"], "model_name": chosen["model_name"], "version": chosen["version"],
            "model_uri": chosen["pinned_uri"], "rows": chosen["rows"], "input_uri": result.get("input_uri"),
            "dag_id": ti.dag_id, "run_id": ti.run_id, "reasons": reasons,
            "previous": {k: v for k, v in (previous or {}).items() if k != "previous"} or None,
        }
        store.write_json(pointer_uri, pointer)
        self.log.info("consumers now read %s version %s: %s", chosen["model_name"], chosen["version"],
                      chosen["output_uri"])
        for reason in reasons:
            self.log.info("  because %s", reason)
        self.log.info("pointer: %s (previous: %s)", pointer_uri,
                      f"version {previous.get('version')}, {previous.get('output_uri')}" if previous else "none")
        outcome = {"pointer_uri": pointer_uri, "published": "candidate" if decision and decision.switched
                   else "current", "switched": bool(decision and decision.switched), **pointer}
        if decision is not None and not decision.switched and policy.on_disagreement == "fail":
            raise AirflowFailException("candidate held back (consumers keep the current model's scores): "
                                       + "; ".join(reasons))
        return outcome
