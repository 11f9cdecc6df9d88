"""Artifact store access from the Airflow side: a local directory or S3 (through the amazon provider's S3Hook)."""

from __future__ import annotations

import json
import os
from typing import Any

from airflow.sdk import BaseHook


class ArtifactStoreHook(BaseHook):
    """Reads and writes small objects (result JSON, reports) under an artifact root.

    :param aws_conn_id: AWS connection for ``s3://`` roots.
    """

    def __init__(self, aws_conn_id: str | None = "aws_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id

    def _s3(self) -> Any:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id)

    @staticmethod
    def _local(uri: str) -> str:
        return uri[len("file://"):] if uri.startswith("file://") else uri

    def exists(self, uri: str) -> bool:
        """True when an object exists at ``uri``."""
        if uri.startswith("s3://"):
            bucket, key = self._s3().parse_s3_url(uri)
            return bool(self._s3().check_for_key(key, bucket))
        return os.path.isfile(self._local(uri))

    def read_text(self, uri: str) -> str:
        """Read an object as text."""
        if uri.startswith("s3://"):
            bucket, key = self._s3().parse_s3_url(uri)
            return str(self._s3().read_key(key, bucket))
        with open(self._local(uri), encoding="utf-8") as fh:
            return fh.read()

    def read_json(self, uri: str) -> Any:
        """Read a JSON object."""
        return json.loads(self.read_text(uri))

    def write_text(self, uri: str, text: str) -> None:
        """Write ``text`` to ``uri``. S3 puts are atomic; locally a temp file is renamed over the target."""
        if uri.startswith("s3://"):
            bucket, key = self._s3().parse_s3_url(uri)
            self._s3().load_string(text, key, bucket, replace=True)
            return
        path = self._local(uri)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.partial-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)  # readers see the old or the new pointer, never half of one

    def write_json(self, uri: str, obj: Any) -> None:
        """Write ``obj`` as indented JSON."""
        self.write_text(uri, json.dumps(obj, indent=2, sort_keys=True, default=str))

    def ensure_root(self, root: str) -> None:
        """Create a local root directory (S3 prefixes need no creation)."""
        if not root.startswith("s3://"):
            os.makedirs(self._local(root), exist_ok=True)
