"""Check a data folder against its DVC pointer file (`data.dvc`) without running DVC.

DVC's directory hash (dvc-data, `Tree.digest`) is the md5 of
`json.dumps(sorted([{"md5": <file md5>, "relpath": <posix path>}...]), sort_keys=True)`
followed by ".dir". Recomputing it here lets prepare_data refuse data that differs from the
committed version — in a container that has the files but no DVC cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from gandistill.files import file_hash
from gandistill.errors import DataError

DVC_FILE = Path("data.dvc")


def dir_md5(folder: Path) -> str:
    entries = [{"md5": file_hash(p), "relpath": p.relative_to(folder).as_posix()}
               for p in sorted(folder.rglob("*")) if p.is_file()]
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def verify_against_dvc_file(folder: Path, dvc_file: Path = DVC_FILE) -> str | None:
    """Return the verified hash, None when no pointer covers `folder`; raise on mismatch."""
    if not dvc_file.is_file():
        return None
    try:
        outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", [])
    except yaml.YAMLError as exc:
        raise DataError(f"{dvc_file} is not valid YAML ({exc}); restore it with `git checkout {dvc_file}`") from None
    for out in outs:
        tracked = (dvc_file.parent / out["path"]).resolve()
        if folder.resolve() == tracked or tracked in folder.resolve().parents:
            if not tracked.is_dir():
                return None  # not materialised yet: the fetcher's per-file checksums apply
            actual = dir_md5(tracked)
            if actual != out.get("md5"):
                raise DataError(
                    f"{tracked}: content hash {actual} does not match {dvc_file} ({out.get('md5')}). "
                    f"The data differs from the committed version: run `dvc checkout` (or `make data-pull`), "
                    f"or `dvc add {out['path']}` and commit if the change is intended"
                )
            return actual
    return None
