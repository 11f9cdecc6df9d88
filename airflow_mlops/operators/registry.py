"""MLflow registry operators: register a version, compare it with the champion, promote / roll back an alias, copy."""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import Asset, BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airflow_mlops.core.errors import SpecError
from airflow_mlops.core.lineage import lineage_tags
from airflow_mlops.core.promotion import Candidate, PromotionPolicy, RegistryError, decide
from airflow_mlops.links.mlflow import MODEL_VERSION_URL_KEY, RUN_URL_KEY, MlflowModelVersionLink, MlflowRunLink

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops.hooks.mlflow import MlflowHook

ASSET_SCHEME = "x-mlflow"
CHECK_TAG = "mlops.check"


def model_alias_asset(model_name: str, alias: str) -> Asset:
    """The Asset a promotion of ``model_name@alias`` emits: ``x-mlflow://<model>@<alias>``.

    Airflow 3 passes URIs whose scheme starts with ``x-`` through untouched; any other unknown scheme (a bare
    ``mlflow://``) makes Airflow load every provider's asset URI handlers at DAG parse time (the amazon one
    imports boto3). The model name and alias are percent-quoted so a name with spaces stays one authority.
    """
    if not model_name or "{{" in model_name:
        raise SpecError("model_alias_asset.model_name", "a literal model name (Asset URIs are fixed at parse time)",
                        model_name)
    return Asset(uri=f"{ASSET_SCHEME}://{quote(model_name, safe='')}@{quote(alias, safe='')}",
                 name=f"{model_name}@{alias}", group="mlflow-model")


def _literal(value: Any, field: str) -> Any:
    """A rendered template of a dict/list/None (``str(dict)`` or JSON) back to the value."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text in ("", "None", "null"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise AirflowFailException(f"{field} must render to a dict (JSON or Python literal); got {value!r}") from None


def check_verdict_tags(check_results: Mapping[str, Any] | None) -> tuple[dict[str, str], dict[str, bool | None]]:
    """Tags and verdicts from checks tasks' XComs (``{passed, failed_checks, report_uri, json_uri}`` or None).

    A check whose task does not exist or produced nothing is recorded as ``missing`` (verdict None).
    """
    tags: dict[str, str] = {}
    verdicts: dict[str, bool | None] = {}
    for name, raw in (check_results or {}).items():
        result = _literal(raw, f"check_results[{name!r}]")
        if not isinstance(result, Mapping) or "passed" not in result:
            tags[f"{CHECK_TAG}.{name}"] = "missing"
            verdicts[name] = None
            continue
        passed = bool(result["passed"])
        verdicts[name] = passed
        tags[f"{CHECK_TAG}.{name}"] = "passed" if passed else "failed"
        failed = result.get("failed_checks") or []
        if failed:
            tags[f"{CHECK_TAG}.{name}.failed_checks"] = ", ".join(str(f) for f in failed)[:5000]
        if result.get("report_uri"):
            tags[f"{CHECK_TAG}.{name}.report_uri"] = str(result["report_uri"])
    return tags, verdicts


def verdicts_from_tags(tags: Mapping[str, str]) -> dict[str, bool | None]:
    """Check verdicts recorded on a version by :func:`check_verdict_tags`."""
    prefix = f"{CHECK_TAG}."
    out: dict[str, bool | None] = {}
    for key, value in tags.items():
        if key.startswith(prefix) and "." not in key[len(prefix):]:
            out[key[len(prefix):]] = True if value == "passed" else False if value == "failed" else None
    return out


class _RegistryOperator(BaseOperator):
    """Shared plumbing: the hook from ``mlflow_conn_id`` (default: the ``mlops_mlflow_conn_id`` Variable)."""

    operator_extra_links: tuple[Any, ...] = (MlflowModelVersionLink(),)
    ui_color = "#e4d7f5"

    def __init__(self, *, mlflow_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id

    def _hook(self) -> MlflowHook:
        from airflow_mlops.hooks.config import load_config
        from airflow_mlops.hooks.mlflow import MlflowHook

        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id or load_config().mlflow_conn_id)

    def _push_version_url(self, context: Context, hook: MlflowHook, name: str, version: str) -> str | None:
        url = hook.model_version_url(name, version)
        if url:
            context["ti"].xcom_push(key=MODEL_VERSION_URL_KEY, value=url)
        return url


class RegisterModelVersionOperator(_RegistryOperator):
    """Register the model a training task produced (or any model source) as a version of ``model_name``.

    A retry of the same task reuses the version it already created. The version carries lineage tags:
    data version, params hash, git sha, image digest, dag/run/task, the checks' verdicts, plus ``extra_tags``.
    Waits until the version is READY (VersionNotReadyError otherwise).

    :param model_name: registered model name (templated).
    :param training_result: the training task's XCom (templated, e.g. ``{{ ti.xcom_pull('train') }}``): a dict
        with ``mlflow_run_id`` and ``model_uri``. Optional when ``source`` and ``run_id`` are given.
    :param source: model source instead of the training result (templated): ``runs:/<run_id>/<path>``,
        ``models:/m-<id>`` or a logged model id ``m-<id>``.
    :param run_id: the MLflow run of ``source`` (templated).
    :param check_results: check name -> that checks task's XCom (templated), e.g.
        ``{"model_checks": "{{ ti.xcom_pull(task_ids='model_checks') }}"}``; a missing task is tagged ``missing``.
    :param extra_tags: more tags for the version (templated).
    :param description: version description (templated).
    :param mlflow_conn_id: default the ``mlops_mlflow_conn_id`` Variable.
    :param ready_timeout: seconds to wait for the version to become READY.
    """

    template_fields: Sequence[str] = ("model_name", "training_result", "source", "run_id", "check_results",
                                      "extra_tags", "description")
    template_fields_renderers = {"training_result": "json", "extra_tags": "json", "check_results": "json"}
    operator_extra_links = (MlflowRunLink(), MlflowModelVersionLink())

    def __init__(self, *, model_name: str, training_result: Mapping[str, Any] | str | None = None,
                 source: str | None = None, run_id: str | None = None,
                 check_results: Mapping[str, Any] | None = None, extra_tags: Mapping[str, str] | None = None,
                 description: str | None = None, ready_timeout: float = 300, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if training_result is None and not source:
            raise SpecError(f"{type(self).__name__}.training_result", "the training task's result, or source= with "
                            "run_id=", None)
        if ready_timeout <= 0:
            raise SpecError(f"{type(self).__name__}.ready_timeout", "seconds > 0", ready_timeout)
        self.model_name = model_name
        self.training_result = training_result
        self.source = source
        self.run_id = run_id
        self.check_results = dict(check_results or {})
        self.extra_tags = dict(extra_tags or {})
        self.description = description
        self.ready_timeout = ready_timeout

    def _source(self) -> tuple[str, str, Mapping[str, Any]]:
        if self.source:
            source = str(self.source)
            if source.startswith("m-"):
                source = f"models:/{source}"
            if not source.startswith(("runs:/", "models:/m-")) and "://" not in source:
                raise AirflowFailException(f"source must be runs:/<run_id>/<path>, models:/m-<id>, m-<id> or a URI; "
                                           f"got {self.source!r}")
            run_id = str(self.run_id or "")
            if not run_id and source.startswith("runs:/"):
                run_id = source[len("runs:/"):].split("/", 1)[0]
            if not run_id:
                raise AirflowFailException(f"run_id is needed with source {source!r} (lineage comes from the run)")
            return source, run_id, {}
        result = _literal(self.training_result, "training_result")
        if not isinstance(result, Mapping) or not result.get("mlflow_run_id") or not result.get("model_uri"):
            raise AirflowFailException("training_result must be the training task's result with mlflow_run_id and "
                                       f"model_uri; got {result!r}")
        return str(result["model_uri"]), str(result["mlflow_run_id"]), result

    def execute(self, context: Context) -> dict[str, Any]:
        source, run_id, result = self._source()
        hook = self._hook()
        ti = context["ti"]
        client = hook.get_client()
        run = client.get_run(run_id)
        tags = lineage_tags(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, try_number=int(ti.try_number or 1),
                            data_version=result.get("data_version") or run.data.tags.get("mlops.data_version"),
                            git_sha=run.data.tags.get("mlops.git_sha"),
                            image_digest=result.get("image_digest") or run.data.tags.get("mlops.image_digest"))
        tags["mlops.params_hash"] = run.data.tags.get("mlops.params_hash", "")
        tags["mlops.training_run_id"] = run_id
        check_tags, verdicts = check_verdict_tags(self.check_results)
        tags.update(check_tags)
        tags.update({k: str(v) for k, v in self.extra_tags.items()})
        # A retry finds its version by dag/run/task (see MlflowHook.register_model_version); the try tag then
        # records the try that last confirmed it.
        tags = {k: v for k, v in tags.items() if v}
        description = self.description or (
            f"Trained by {ti.dag_id}.{run.data.tags.get('mlops.airflow.task_id', '?')} in run {ti.run_id}; "
            f"data {tags.get('mlops.data_version', 'unknown')}")
        version = hook.register_model_version(self.model_name, source, run_id, tags,
                                              description=description, ready_timeout=self.ready_timeout)
        url = hook.run_url(run.info.experiment_id, run_id)
        if url:
            ti.xcom_push(key=RUN_URL_KEY, value=url)
        version_url = self._push_version_url(context, hook, self.model_name, str(version.version))
        metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("test_")}
        self.log.info("model %s version %s (%s) from %s", self.model_name, version.version, version.status, source)
        self.log.info("  metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())) or "none")
        self.log.info("  checks:  %s", ", ".join(f"{k}={tags[f'{CHECK_TAG}.{k}']}" for k in sorted(verdicts)) or
                      "none recorded")
        return {"model_name": self.model_name, "version": str(version.version), "run_id": run_id,
                "model_uri": f"models:/{self.model_name}/{version.version}", "source": source,
                "metrics": metrics, "checks": verdicts, "tags": tags, "model_version_url": version_url}


class CompareModelVersionsOperator(_RegistryOperator):
    """Compare a challenger version with the version an alias (the champion) points to, under a policy.

    Pushes the decision (``promote``, ``reasons``, metric values) to XCom and writes it as tags on the challenger
    (``mlops.decision``, ``mlops.decision.reasons``, ...). Also records which versions the aliases pointed to
    (``read_aliases``), so the promotion can compare-and-swap against exactly what was compared.

    :param model_name: registered model name (templated).
    :param version: the challenger version (templated), e.g. ``{{ ti.xcom_pull('register')['version'] }}``.
    :param policy: a PromotionPolicy, a dict, or a JSON string (templated, e.g. ``{{ params.policy | tojson }}``).
    :param champion_alias: the alias of the version to beat.
    :param target_alias: the alias a promotion would move (its current holder is recorded for compare-and-swap).
    :param check_verdicts: check name -> passed (templated); default: the ``mlops.check.*`` tags on the version.
    :param fail_on_reject: fail the task on a reject instead of returning the decision (default False: branch on it).
    """

    template_fields: Sequence[str] = ("model_name", "version", "policy", "check_verdicts")
    template_fields_renderers = {"policy": "json", "check_verdicts": "json"}

    def __init__(self, *, model_name: str, version: str, policy: PromotionPolicy | Mapping[str, Any] | str,
                 champion_alias: str = "champion", target_alias: str = "challenger",
                 check_verdicts: Mapping[str, Any] | str | None = None, fail_on_reject: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(policy, Mapping) and not any("{{" in str(v) for v in policy.values()):
            policy = PromotionPolicy.from_mapping(policy)  # validated at parse time when it is not templated
        self.model_name = model_name
        self.version = version
        self.policy = policy
        self.champion_alias = champion_alias
        self.target_alias = target_alias
        self.check_verdicts = check_verdicts
        self.fail_on_reject = fail_on_reject

    def _policy(self) -> PromotionPolicy:
        if isinstance(self.policy, PromotionPolicy):
            return self.policy
        data = _literal(self.policy, "policy")
        if not isinstance(data, Mapping):
            raise AirflowFailException(f"policy must be a PromotionPolicy or a dict; got {self.policy!r}")
        return PromotionPolicy.from_mapping(data)

    def execute(self, context: Context) -> dict[str, Any]:
        policy = self._policy()
        hook = self._hook()
        name, version = self.model_name, str(self.version)
        try:
            challenger_mv = hook.get_model_version(name, version)
            champion_version = hook.get_alias_version(name, self.champion_alias)
            target_version = hook.get_alias_version(name, self.target_alias)
            challenger = Candidate(version, hook.run_metrics(challenger_mv.run_id), challenger_mv.run_id)
            champion = None
            if champion_version is not None:
                champion_mv = hook.get_model_version(name, champion_version)
                champion = Candidate(champion_version, hook.run_metrics(champion_mv.run_id), champion_mv.run_id)
            verdicts = _literal(self.check_verdicts, "check_verdicts")
            if verdicts is None:
                verdicts = verdicts_from_tags(challenger_mv.tags or {})
            decision = decide(policy, challenger, champion, verdicts)
        except RegistryError as err:
            raise AirflowFailException(str(err)) from err
        client = hook.get_client()
        for key, value in decision.to_tags().items():
            client.set_model_version_tag(name, version, key, value)
        version_url = self._push_version_url(context, hook, name, version)
        self.log.info("%s v%s vs %s: %s", name, version,
                      f"champion v{champion_version}" if champion_version else "no champion",
                      "PROMOTE" if decision.promote else "REJECT")
        rows = [("metric", "challenger", "champion")]
        for metric in policy.metrics_needed():
            old = champion.metrics.get(metric) if champion else None
            rows.append((metric, f"{challenger.metrics[metric]:.6g}", f"{old:.6g}" if old is not None else "-"))
        width = [max(len(r[i]) for r in rows) for i in range(3)]
        for row in rows:
            self.log.info("  %s", " | ".join(cell.ljust(w) for cell, w in zip(row, width, strict=True)))
        for reason in decision.reasons:
            self.log.info("  - %s", reason)
        out = decision.to_dict()
        out.update(model_name=name, champion_alias=self.champion_alias, target_alias=self.target_alias,
                   read_aliases={self.champion_alias: champion_version, self.target_alias: target_version})
        if not decision.promote:
            from airflow_mlops.notifiers.channels import emit_alert, mlflow_links

            emit_alert(context, event="promotion_rejected", model=name, version=version,
                       reason="; ".join(decision.reasons),
                       links={**mlflow_links(hook, run_id=challenger_mv.run_id), "mlflow_model_version": version_url},
                       details={"champion": champion_version, "target_alias": self.target_alias})
        if not decision.promote and self.fail_on_reject:
            raise AirflowFailException(f"{name} v{version} rejected: " + "; ".join(decision.reasons))
        return out


class PromoteModelAliasOperator(_RegistryOperator):
    """Move an alias (e.g. ``challenger``) to a version with compare-and-swap, and emit an Asset event.

    The alias moves only if it still points where ``decision['read_aliases']`` says it pointed when the
    comparison ran (or, without a decision, where it points when this task starts). The previous holder stays
    reachable under ``rollback_alias``. Audit tags record the dag run, the approver (from ``approval``), when and
    why. A rejected decision skips the task. Outlets ``x-mlflow://...`` get the version in their event extra.

    :param model_name: registered model name (templated).
    :param version: the version to promote (templated); default the decision's ``challenger_version``.
    :param alias: alias to move.
    :param decision: the compare task's XCom (templated), optional.
    :param approval: the approval task's XCom (templated), optional: its ``responded_by_user`` is the approver.
    :param rollback_alias: default ``<alias>_previous``.
    :param copy_to: also copy the version to this registered-model name (e.g. a prod registry model), optional.
    """

    template_fields: Sequence[str] = ("model_name", "version", "decision", "approval", "copy_to")
    template_fields_renderers = {"decision": "json", "approval": "json"}

    def __init__(self, *, model_name: str, alias: str = "challenger", version: str | None = None,
                 decision: Mapping[str, Any] | str | None = None, approval: Mapping[str, Any] | str | None = None,
                 rollback_alias: str | None = None, copy_to: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not alias or not alias.replace("_", "").replace("-", "").isalnum():
            raise SpecError(f"{type(self).__name__}.alias", "letters, digits, '_' or '-'", alias)
        if rollback_alias == alias:
            raise SpecError(f"{type(self).__name__}.rollback_alias", f"an alias other than {alias!r}", rollback_alias)
        if version is None and decision is None:
            raise SpecError(f"{type(self).__name__}.version", "a version, or a decision= to take it from", None)
        self.model_name = model_name
        self.alias = alias
        self.version = version
        self.decision = decision
        self.approval = approval
        self.rollback_alias = rollback_alias
        self.copy_to = copy_to

    def execute(self, context: Context) -> dict[str, Any]:
        decision = _literal(self.decision, "decision") or {}
        if decision and not decision.get("promote"):
            raise AirflowSkipException("decision is reject: " + "; ".join(decision.get("reasons") or []))
        version = str(self.version or decision.get("challenger_version") or "")
        if not version:
            raise AirflowFailException("no version to promote: set version= or pass the compare task's decision")
        hook = self._hook()
        ti = context["ti"]
        read = decision.get("read_aliases") or {}
        try:
            expected = read[self.alias] if self.alias in read else hook.get_alias_version(self.model_name, self.alias)
            approval = _literal(self.approval, "approval") or {}
            approver = approval.get("responded_by_user") if isinstance(approval, Mapping) else None
            approver_name = (approver.get("name") or approver.get("id")) if isinstance(approver, Mapping) else approver
            # The actor names the task, so a retry of this task is recognised as the same mover (move_alias treats
            # its own completed or interrupted move as done, and the copy and the Asset event still happen).
            actor = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}" + (f" approved by {approver_name}" if approver_name else "")
            reason = "; ".join(decision.get("reasons") or []) or f"promoted by {ti.task_id}"
            audit = {"mlops.promoted_by.dag_run": f"{ti.dag_id}/{ti.run_id}/{ti.task_id}"}
            if approver_name:
                audit["mlops.approved_by"] = str(approver_name)
            move = hook.move_alias(self.model_name, self.alias, version, expected_version=expected,
                                   rollback_alias=self.rollback_alias, audit_tags=audit, actor=actor, reason=reason)
            copied = None
            if self.copy_to:
                copied = str(hook.copy_model_version(self.model_name, version, self.copy_to).version)
        except RegistryError as err:
            raise AirflowFailException(str(err)) from err
        url = self._push_version_url(context, hook, self.model_name, version)
        extra = {"model_name": self.model_name, "alias": self.alias, "version": version,
                 "previous_version": move.previous_version, "model_uri": f"models:/{self.model_name}@{self.alias}"}
        for outlet in self.outlets or []:
            if isinstance(outlet, Asset) and outlet.uri.startswith(f"{ASSET_SCHEME}://"):
                if outlet.uri != model_alias_asset(self.model_name, self.alias).uri:
                    self.log.warning("outlet %s does not name %s@%s: its event still carries the version moved",
                                     outlet.uri, self.model_name, self.alias)
                context["outlet_events"][outlet].extra.update(extra)
        return {**move.to_dict(), "copied_version": copied, "model_version_url": url}


class RollbackModelAliasOperator(_RegistryOperator):
    """Point an alias back at the version its rollback alias holds (the two swap, so it is reversible).

    One rollback per task of a DAG run: a retry (or a re-run of the task in the same DAG run) finishes or returns
    the rollback this task already made and never swaps back (see ``MlflowHook.rollback_alias``). Another DAG run
    or task rolls back again, i.e. swaps the aliases once more, unless ``expected_version`` makes it conditional.

    :param model_name: registered model name (templated).
    :param alias: the alias to restore, e.g. ``champion``.
    :param rollback_alias: default ``<alias>_previous``.
    :param reason: recorded in the audit tags (templated).
    :param expected_version: roll back only if ``alias`` still points to this version, e.g. the bad candidate
        (templated); otherwise the task fails and nothing moves. None: whatever it points to.
    """

    template_fields: Sequence[str] = ("model_name", "reason", "expected_version")

    def __init__(self, *, model_name: str, alias: str = "champion", rollback_alias: str | None = None,
                 reason: str = "rollback", expected_version: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.alias = alias
        self.rollback_alias = rollback_alias
        self.reason = reason
        self.expected_version = expected_version

    def execute(self, context: Context) -> dict[str, Any]:
        hook = self._hook()
        ti = context["ti"]
        try:
            expected = None if self.expected_version in (None, "", "None") else str(self.expected_version)
            move = hook.rollback_alias(self.model_name, self.alias, self.rollback_alias,
                                       actor=f"{ti.dag_id}/{ti.run_id}/{ti.task_id}", reason=self.reason,
                                       expected_version=expected)
        except RegistryError as err:
            raise AirflowFailException(str(err)) from err
        url = self._push_version_url(context, hook, self.model_name, move.version)
        return {**move.to_dict(), "model_version_url": url}


class CopyModelVersionOperator(_RegistryOperator):
    """Copy a model version to another registered-model name (e.g. dev -> prod), once per source version.

    :param model_name: source registered model (templated).
    :param version: source version (templated).
    :param dst_name: destination registered model (templated).
    """

    template_fields: Sequence[str] = ("model_name", "version", "dst_name")

    def __init__(self, *, model_name: str, version: str, dst_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.version = version
        self.dst_name = dst_name

    def execute(self, context: Context) -> dict[str, Any]:
        hook = self._hook()
        try:
            copied = hook.copy_model_version(self.model_name, str(self.version), self.dst_name)
        except RegistryError as err:
            raise AirflowFailException(str(err)) from err
        self._push_version_url(context, hook, self.dst_name, str(copied.version))
        return {"model_name": self.dst_name, "version": str(copied.version),
                "source": f"{self.model_name}/{self.version}"}
