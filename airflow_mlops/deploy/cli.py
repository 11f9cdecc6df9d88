"""``airflow-mlops deploy {bundle,validate,update,sync,set-images,rollback,releases,parity-venv}``: ship to MWAA.

The deploy order (``.github/workflows/deploy.yml``): bundle, validate, update (requirements + plugins, with the
constraints inside plugins.zip, one UpdateEnvironment, wait), set-images, sync (DAGs last; records the release),
smoke run. AWS credentials, region and endpoint come from the usual boto3 sources (in CI: OIDC role via
aws-actions/configure-aws-credentials; ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>`` point the clients at
another endpoint, e.g. a local stand-in).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from airflow_mlops.deploy import DeployError
from airflow_mlops.deploy.bundle import DEFAULT_AIRFLOW_VERSION, DEFAULT_PYTHON_VERSION, Bundle, BundleSpec

DEFAULT_OUT = "build/mwaa"


def _client(service: str) -> Any:
    import boto3
    from botocore.config import Config

    if service != "mwaa":
        return boto3.client(service)
    # MWAA's API lives on api./env. host prefixes; an overridden endpoint (a stand-in, a proxy) has none.
    overridden = os.environ.get("AWS_ENDPOINT_URL_MWAA") or os.environ.get("AWS_ENDPOINT_URL")
    return boto3.client(service, config=Config(inject_host_prefix=not overridden))


def _log(line: str) -> None:
    print(line, flush=True)


def _cmd_bundle(args: argparse.Namespace) -> int:
    from airflow_mlops.deploy.bundle import build_bundle

    spec = BundleSpec(
        repo=Path(args.repo),
        out=Path(args.out),
        airflow_version=args.airflow_version,
        python_version=args.python_version,
        constraints=Path(args.constraints) if args.constraints else None,
        wheelhouse=Path(args.wheelhouse) if args.wheelhouse else None,
        startup_script=Path(args.startup_script) if args.startup_script else None,
        extra_requirements=tuple(args.requirement or ()),
    )
    build_bundle(spec, log=_log)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from airflow_mlops.deploy.validate import check_bucket_versioning, validate_bundle

    if args.bucket_only:
        if not args.bucket:
            raise DeployError("--bucket-only needs --bucket")
        problems = check_bucket_versioning(_client("s3"), args.bucket)
        for line in problems or [f"bucket {args.bucket}: versioning Enabled"]:
            _log(line)
        return 1 if problems else 0
    report = validate_bundle(
        Bundle.load(Path(args.bundle)),
        python=args.python,
        budget_s=args.parse_budget,
        resolve=args.resolve,
        s3=_client("s3") if args.bucket else None,
        bucket=args.bucket,
        log=_log,
    )
    return 0 if report.ok else 1


def _cmd_sync(args: argparse.Namespace) -> int:
    from airflow_mlops.deploy.sync import sync_dags

    bundle = Bundle.load(Path(args.bundle))
    s3 = _client("s3")
    result = sync_dags(
        s3, args.bucket, args.prefix, bundle.dags, dry_run=args.dry_run, workers=args.workers,
        take_over=args.take_over, log=_log,
    )
    _log(f"sync done in {result.seconds:.1f}s: {len(result.uploaded)} uploaded ({result.bytes_uploaded} bytes), "
         f"{len(result.deleted)} deleted, {result.writes} write request(s)")
    if args.environment and not args.dry_run:
        from airflow_mlops.deploy.release import record_release

        record_release(s3, _client("mwaa"), environment=args.environment, bucket=args.bucket, dags_prefix=args.prefix,
                       manifest_version=result.manifest_version, log=_log)
    return 0


def _artifacts(bundle: Bundle, args: argparse.Namespace) -> list[Any]:
    from airflow_mlops.deploy.update import Artifact

    arts = [
        Artifact("requirements", bundle.requirements_txt, args.requirements_key),
        Artifact("plugins", bundle.plugins_zip, args.plugins_key),
    ]
    if bundle.startup_script is not None:
        arts.append(Artifact("startup_script", bundle.startup_script, args.startup_key))
    return arts


def _cmd_update(args: argparse.Namespace) -> int:
    from airflow_mlops.deploy.update import smoke_run, update_environment

    bundle = Bundle.load(Path(args.bundle))
    mwaa = _client("mwaa")
    update_environment(
        mwaa,
        _client("s3"),
        name=args.environment,
        bucket=args.bucket,
        artifacts=_artifacts(bundle, args),
        airflow_version=bundle.airflow_version,
        wait=not args.no_wait,
        force=args.force,
        poll_s=args.poll,
        timeout_s=args.timeout,
        log=_log,
    )
    if args.smoke_dag:
        run_id = args.smoke_run_id or f"smoke-{int(time.time())}"
        smoke_run(mwaa, name=args.environment, dag_id=args.smoke_dag, run_id=run_id, poll_s=args.poll,
                  timeout_s=args.timeout, log=_log)
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from airflow_mlops.deploy.update import rollback

    rollback(_client("mwaa"), _client("s3"), name=args.environment, bucket=args.bucket, release=args.release,
             wait=not args.no_wait, poll_s=args.poll, timeout_s=args.timeout, log=_log)
    return 0


def _cmd_releases(args: argparse.Namespace) -> int:
    from airflow_mlops.deploy.release import current_release, read_ledger

    events, _ = read_ledger(_client("s3"), args.bucket, args.environment)
    env = _client("mwaa").get_environment(Name=args.environment)["Environment"]
    current = current_release(env, events)
    if not events:
        _log(f"no releases recorded for {args.environment} (deploy sync --environment records them)")
    for event in events:
        mark = "*" if current is not None and event is current else " "
        _log(f"{mark} {event.line()}")
    return 0


def _cmd_set_images(args: argparse.Namespace) -> int:
    from airflow_mlops.deploy.variables import IMAGE_VARIABLES, check_image_ref, check_secrets_backend, set_variables

    values = {
        variable: check_image_ref(f"--{flag.replace('_', '-')}", getattr(args, flag))
        for flag, variable in IMAGE_VARIABLES.items()
        if getattr(args, flag)
    }
    _log(f"set images on {args.environment} ({args.backend})")
    mwaa = _client("mwaa")
    if args.backend == "secrets-manager":
        # Secrets the environment does not read would leave the DAGs on the default images, silently.
        check_secrets_backend(mwaa.get_environment(Name=args.environment)["Environment"], args.variables_prefix)
    set_variables(
        values,
        backend=args.backend,
        environment=args.environment,
        mwaa=mwaa if args.backend == "rest-api" else None,
        secretsmanager=_client("secretsmanager") if args.backend == "secrets-manager" else None,
        prefix=args.variables_prefix,
        log=_log,
    )
    return 0


def _cmd_parity_venv(args: argparse.Namespace) -> int:
    """Build a venv the way MWAA installs an environment: its Airflow pin, then requirements.txt as shipped."""
    from airflow_mlops.deploy.validate import localize

    bundle = Bundle.load(Path(args.bundle))
    venv = Path(args.venv)
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([args.python, "-m", "venv", str(venv)], check=True)
    with tempfile.TemporaryDirectory(prefix="mwaa-parity-") as tmp:
        req = localize(bundle, Path(tmp))
        airflow_version = args.airflow_version or bundle.airflow_version
        _log(f"parity venv {venv}: apache-airflow=={airflow_version} + {bundle.requirements_txt}")
        subprocess.run(
            [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             f"apache-airflow=={airflow_version}", "-r", str(req)],
            check=True,
        )
    subprocess.run([str(py), "-m", "pip", "check"], check=True)
    _log(f"parity venv ready: validate with --python {py}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``airflow-mlops`` argument parser."""
    parser = argparse.ArgumentParser(prog="airflow-mlops", description=__doc__)
    top = parser.add_subparsers(dest="group", required=True)
    deploy = top.add_parser("deploy", help="ship DAGs, plugins and requirements to Amazon MWAA")
    sub = deploy.add_subparsers(dest="command", required=True)

    p = sub.add_parser("bundle", help="build dags/, plugins.zip and requirements.txt")
    p.add_argument("--repo", default=".", help="repository root (default: .)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    p.add_argument("--airflow-version", default=DEFAULT_AIRFLOW_VERSION)
    p.add_argument("--python-version", default=DEFAULT_PYTHON_VERSION)
    p.add_argument("--constraints", help="constraints file (default: the vendored one for the versions)")
    p.add_argument("--wheelhouse", help="folder of wheels to ship in plugins.zip (private network: --no-index)")
    p.add_argument("--startup-script", help="MWAA startup script to ship")
    p.add_argument("--requirement", action="append", metavar="NAME",
                   help="another distribution the DAGs need, pinned from the constraints file (repeatable)")
    p.set_defaults(func=_cmd_bundle)

    p = sub.add_parser("validate", help="import every DAG in a fresh process and check the bundle")
    p.add_argument("--bundle", default=DEFAULT_OUT)
    p.add_argument("--python", default=sys.executable, help="interpreter to import DAGs with (parity venv)")
    p.add_argument("--parse-budget", type=float, default=2.0, help="seconds per DAG file (default 2.0)")
    p.add_argument("--resolve", action="store_true", help="also dry-run pip's resolver (needs the index)")
    p.add_argument("--bucket", help="also check that this bucket has versioning on")
    p.add_argument("--bucket-only", action="store_true",
                   help="only the bucket check (once credentials exist, after the bundle was validated)")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("sync", help="incremental, ordered upload of dags/ to s3://BUCKET/PREFIX by content hash "
                                            "(support files, DAG files, deletions last)")
    p.add_argument("--bundle", default=DEFAULT_OUT)
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", default="dags", help="the environment's DagS3Path (default: dags)")
    p.add_argument("--dry-run", action="store_true", help="print the plan only")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--take-over", action="store_true",
                   help="take over the claim of a sync that died (its claim is older than 15 minutes)")
    p.add_argument("--environment",
                   help="MWAA environment: after the sync, record the release (what it runs + these DAGs) in the "
                        "ledger that rollback reads")
    p.set_defaults(func=_cmd_sync)

    for name, helptext in (("update", "publish requirements/plugins and update the environment"),
                           ("rollback", "restore an earlier release: requirements + plugins, then its DAGs")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--environment", required=True, help="MWAA environment name")
        p.add_argument("--no-wait", action="store_true", help="do not wait for AVAILABLE")
        p.add_argument("--poll", type=float, default=30.0, help="seconds between status polls")
        p.add_argument("--timeout", type=float, default=3600.0,
                       help="seconds to wait at most for AVAILABLE (update: as long again for the smoke run, "
                            "including waiting for the smoke DAG to be parsed)")
    upd = sub.choices["update"]
    upd.add_argument("--bundle", default=DEFAULT_OUT)
    upd.add_argument("--bucket", required=True)
    upd.add_argument("--requirements-key", default="requirements.txt")
    upd.add_argument("--plugins-key", default="plugins.zip")
    upd.add_argument("--startup-key", default="startup.sh")
    upd.add_argument("--force", action="store_true", help="update even if the versions are unchanged")
    upd.add_argument("--smoke-dag", help="DAG to trigger through InvokeRestApi after the update")
    upd.add_argument("--smoke-run-id", help="run id for the smoke run (default smoke-<epoch>)")
    upd.set_defaults(func=_cmd_update)
    rb = sub.choices["rollback"]
    rb.add_argument("--bucket", required=True, help="the environment's source bucket (holds the release ledger)")
    rb.add_argument("--release", help="release id or unique prefix (default: the one before what runs now)")
    rb.set_defaults(func=_cmd_rollback)

    p = sub.add_parser("releases", help="list the releases recorded for an environment (* marks what runs)")
    p.add_argument("--environment", required=True)
    p.add_argument("--bucket", required=True)
    p.set_defaults(func=_cmd_releases)

    from airflow_mlops.deploy.variables import BACKENDS, DEFAULT_VARIABLES_PREFIX

    p = sub.add_parser("set-images", help="set the image Variables to digests CI built (mlops_image, ...)")
    p.add_argument("--environment", required=True)
    p.add_argument("--backend", choices=BACKENDS, default="secrets-manager",
                   help="secrets-manager (the environment's secrets backend) or rest-api (InvokeRestApi)")
    p.add_argument("--variables-prefix", default=DEFAULT_VARIABLES_PREFIX,
                   help=f"the secrets backend's variables_prefix (default {DEFAULT_VARIABLES_PREFIX})")
    p.add_argument("--mlops-image", help="step image (trainer) as REPOSITORY@sha256:...")
    p.add_argument("--checks-image", help="checks image as REPOSITORY@sha256:...")
    p.add_argument("--serving-image", help="serving image as REPOSITORY@sha256:...")
    p.set_defaults(func=_cmd_set_images)

    p = sub.add_parser("parity-venv", help="install the bundle's requirements into a venv as MWAA does")
    p.add_argument("--bundle", default=DEFAULT_OUT)
    p.add_argument("--venv", required=True)
    p.add_argument("--python", default="python3.12", help="interpreter for a new venv (MWAA's Python)")
    p.add_argument("--airflow-version", help="Airflow to install (default: the version the bundle was built for)")
    p.set_defaults(func=_cmd_parity_venv)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``airflow-mlops`` console script.

    :param argv: arguments (default: sys.argv[1:])
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        # AWS errors (no credentials, access denied, unreachable endpoint) are a person's to fix, not a traceback.
        if type(exc).__module__.split(".")[0] not in {"botocore", "boto3"}:
            raise
        print(f"error: AWS: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
