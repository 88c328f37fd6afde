"""`data.source: dvc` — materialise a dataset from a DVC repository at a revision.

    data: {source: dvc, dvc_repo: <path or git URL>, dvc_rev: <commit/tag/branch>, path: data/mnist}

The files under `path` are fetched through `dvc.api.DVCFileSystem` (DVC cache, else the
repository's default remote) into a temporary folder, checked file by file against the
md5s recorded in the repository's `.dvc` pointer at that revision, and read as an IDX
folder. The version facts (repo, requested and resolved revision, the pointer's md5)
are recorded, so every run names exactly which data it saw.

The remote's endpoint: the repository's DVC config (`dvc remote modify --local ...`), or,
in a container with no local config, `AWS_ENDPOINT_URL` — credentials always from AWS_* env.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from gandistill.config import DataParams
from gandistill.data.idx import load_idx_folder
from gandistill.data.raw import RawData
from gandistill.files import file_hash
from gandistill.errors import DataError, ServiceError


def _open_fs(repo: str, rev: str | None) -> Any:
    from dvc.api import DVCFileSystem

    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    # remote_config applies to the default remote; only set when the environment names an endpoint.
    remote_config = {"endpointurl": endpoint} if endpoint else None
    try:
        return DVCFileSystem(repo, rev=rev, remote_config=remote_config)
    except Exception as exc:  # scmrepo/dvc raise many types: bad URL, unknown rev, not a DVC repo
        raise DataError(f"data.dvc_repo={repo!r} at data.dvc_rev={rev!r}: cannot open it as a DVC repository "
                        f"({type(exc).__name__}: {exc}); check the path/URL and that the revision exists "
                        "(`git ls-remote`)") from None


def _tracked_md5(fs: Any, path: str) -> str | None:
    """md5 of the DVC output that holds `path` (e.g. data.dvc's `<md5>.dir`)."""
    current = PurePosixPath(path)
    for candidate in (current, *current.parents):
        if str(candidate) in ("", "."):
            break
        try:
            md5 = fs.info(str(candidate)).get("dvc_info", {}).get("md5")
        except FileNotFoundError:
            continue
        if md5:
            return str(md5)
    return None


def materialise(repo: str, rev: str | None, path: str, dest: Path) -> dict[str, str]:
    """Fetch `path` at `rev` into `dest`, verify every file's md5; return the version facts."""
    fs = _open_fs(repo, rev)
    try:
        if not fs.exists(path):
            raise DataError(f"data.path={path!r} is not in {repo} at revision {rev or 'HEAD/workspace'}; "
                            "check data.path and data.dvc_rev (`dvc list REPO --rev REV -R`)")
        files = {name: info for name, info in fs.find(path, detail=True).items() if info.get("type") == "file"}
        if not files:
            raise DataError(f"data.path={path!r} in {repo}@{rev} holds no files")
        try:
            fs.get(path, str(dest), recursive=True)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - dvc wraps remote failures in many types
            raise ServiceError(
                f"could not fetch {path} from the DVC remote of {repo}@{rev} ({type(exc).__name__}: {exc}); "
                f"check the remote (`dvc remote list`), its endpoint (AWS_ENDPOINT_URL="
                f"{os.environ.get('AWS_ENDPOINT_URL', 'unset')}) and AWS_* credentials, and that the data was "
                "pushed (`make data-push`)") from None
        root = PurePosixPath(path)
        for name, info in files.items():
            expected = (info.get("dvc_info") or {}).get("md5")
            local = dest / PurePosixPath(name).relative_to(root)
            if expected and file_hash(local) != expected:
                raise DataError(f"{name}: fetched content md5 {file_hash(local)} != {expected} recorded by DVC at "
                                f"{rev}; the remote object is corrupt — re-push it from a good copy")
        resolved = fs.repo.scm.get_rev() if getattr(fs.repo, "scm", None) is not None else ""
        return {"dvc_repo": repo, "dvc_rev": rev or "", "dvc_commit": str(resolved),
                "dvc_md5": _tracked_md5(fs, path) or "", "dvc_path": path}
    finally:
        close = getattr(fs, "close", None)
        if callable(close):
            close()


def load_dvc(params: DataParams) -> RawData:
    repo = params.dvc_repo or "."
    with tempfile.TemporaryDirectory(prefix="gandistill-dvc-") as tmp:
        folder = Path(tmp) / "data"
        facts = materialise(repo, params.dvc_rev, params.path, folder)
        raw = load_idx_folder(folder)  # arrays are in memory: the temp folder can go
    raw.version.update(facts)
    return raw
