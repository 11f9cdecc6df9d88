"""P5 incremental deploy: 200 DAG files, 1 changed. Uploads and wall time of our sync vs a full upload.

Against a real moto S3 server over HTTP (local, so network latency is near zero and the ratio understates what a
real region saves). Both sides use the same client and worker count, interleaved, medians of several rounds.
"""

from __future__ import annotations

import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from airflow_mlops.deploy.sync import sync_dags

N_FILES = 200
ROUNDS = 5
WORKERS = 8
BUCKET = "bench-mwaa"


def _full_upload(s3: Any, dags: Path, prefix: str) -> int:
    """What a naive deploy does: put every file (``aws s3 cp --recursive``), no comparison."""
    files = sorted(p for p in dags.rglob("*") if p.is_file())

    def put(p: Path) -> None:
        s3.put_object(Bucket=BUCKET, Key=prefix + p.relative_to(dags).as_posix(), Body=p.read_bytes())

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        list(pool.map(put, files))
    return len(files)


def test_p5_incremental_sync(tmp_path: Path) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}",
                          aws_access_key_id="x", aws_secret_access_key="x")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        dags = tmp_path / "dags"
        dags.mkdir()
        body = "from airflow.sdk import DAG\n" + "# padding line for a realistic DAG file size\n" * 80
        for i in range(N_FILES):
            (dags / f"dag_{i:03d}.py").write_text(f"# dag {i}\n{body}")
        sync_dags(s3, BUCKET, "dags", dags, workers=WORKERS, log=lambda _: None)

        full_s, incr_s, uploads = [], [], []
        for r in range(ROUNDS):
            (dags / f"dag_{r:03d}.py").write_text(f"# dag {r} edited in round {r}\n{body}")
            t = time.perf_counter()
            result = sync_dags(s3, BUCKET, "dags", dags, workers=WORKERS, log=lambda _: None)
            incr_s.append(time.perf_counter() - t)
            uploads.append(len(result.uploaded))
            t = time.perf_counter()
            n_full = _full_upload(s3, dags, "full/")
            full_s.append(time.perf_counter() - t)
        full, incr = statistics.median(full_s), statistics.median(incr_s)
        print(
            f"\nP5 sync, {N_FILES} DAG files, 1 changed ({ROUNDS} rounds, {WORKERS} workers, moto S3 over HTTP):\n"
            f"  full upload          {n_full} uploads   median {full * 1000:7.1f} ms\n"
            f"  airflow-mlops sync   {uploads[0]} upload    median {incr * 1000:7.1f} ms\n"
            f"  ratio sync/full      {incr / full:.3f}"
        )
        assert uploads == [1] * ROUNDS  # a count, not a timing: exactly the changed file went up each round
    finally:
        server.stop()
