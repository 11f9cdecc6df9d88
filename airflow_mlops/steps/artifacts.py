"""Read and write the artifact store (a local path or s3://) from inside a step, through pyarrow's filesystems."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from pyarrow.fs import FileSystem


def _fs(uri: str) -> tuple[FileSystem, str]:
    from pyarrow import fs

    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if "://" not in uri:
        return fs.LocalFileSystem(), os.path.abspath(uri)
    if uri.startswith("s3://"):
        # Honour a custom endpoint (MinIO, moto, VPC endpoints) the way the AWS SDKs do.
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
            s3 = fs.S3FileSystem(endpoint_override=host, scheme=scheme, region=region)
            return s3, uri[len("s3://"):]
    filesystem, path = fs.FileSystem.from_uri(uri)
    return filesystem, path


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def exists(uri: str) -> bool:
    """True when a file exists at ``uri``."""
    from pyarrow import fs

    filesystem, path = _fs(uri)
    return filesystem.get_file_info(path).type == fs.FileType.File


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri``; writes to a temp name then moves, so readers never see half a file locally."""
    filesystem, path = _fs(uri)
    parent = _parent(path)
    if parent:
        filesystem.create_dir(parent, recursive=True)
    tmp = f"{path}.partial"
    with filesystem.open_output_stream(tmp) as out:
        out.write(data)
    filesystem.move(tmp, path)


def read_bytes(uri: str) -> bytes:
    """Read the file at ``uri``."""
    filesystem, path = _fs(uri)
    with filesystem.open_input_stream(path) as src:
        return bytes(src.read())


def write_json(uri: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON."""
    write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def read_json(uri: str) -> Any:
    """Read a JSON file."""
    return json.loads(read_bytes(uri))


def write_parquet(df: pd.DataFrame, uri: str) -> None:
    """Write a DataFrame as Parquet (index dropped: columns are the contract)."""
    import io

    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False)
    write_bytes(uri, buffer.getvalue())


def read_parquet(uri: str) -> pd.DataFrame:
    """Read a Parquet file into a DataFrame."""
    import io

    import pandas as pd

    return pd.read_parquet(io.BytesIO(read_bytes(uri)))


def list_files(uri: str) -> list[str]:
    """URIs of the files at ``uri``: the file itself, or every file below a directory/prefix, sorted."""
    from pyarrow import fs

    filesystem, path = _fs(uri)
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.File:
        return [uri]
    if info.type == fs.FileType.NotFound:
        return []
    base = uri.rstrip("/")
    root = path.rstrip("/")
    found = filesystem.get_file_info(fs.FileSelector(root, recursive=True))
    return sorted(f"{base}/{f.path[len(root):].lstrip('/')}" for f in found if f.type == fs.FileType.File)
