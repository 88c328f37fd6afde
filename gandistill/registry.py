"""The model registry as an operator uses it: move an alias by hand (`gandistill promote
--version N [--alias champion]`), e.g. to roll back to an earlier champion.

Versions are never deleted (promote only moves aliases), so a rollback is one alias change.
It is an operator's decision, not the gate's: the gate is not applied, and the version records
who decided (`gandistill.decision` = the alias, `gandistill.reason` = "set by hand ...",
`previous_<alias>` = the version that held the alias before). With the embedded sqlite registry
the change runs under the same lock as pipeline promotions (`registry_lock`, which the promote
stage takes too), so it cannot interleave with one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from gandistill.errors import ConfigError, GandistillError
from gandistill.tracking import client as mlflow_client
from gandistill.tracking import tracking_error, tracking_uri

ALIAS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
# Who set a version's alias and why (the promote stage's gate, or an operator by hand).
TAG_DECISION = "gandistill.decision"
TAG_REASON = "gandistill.reason"


@contextlib.contextmanager
def registry_lock() -> Iterator[bool]:
    """Exclusive flock next to a local sqlite registry (yields True), else a no-op (False)."""
    uri = os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri()
    if urlparse(uri).scheme != "sqlite":
        yield False
        return
    # sqlite:///relative.db and sqlite:////abs/path.db: the file path follows the third slash
    db = Path(unquote(uri[len("sqlite:///"):].split("?")[0]))
    lock_path = db.with_name(db.name + ".promote.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def set_alias(model_name: str, version: str | int, alias: str, reason: str = "") -> dict[str, Any]:
    """Point `alias` of `model_name` at an existing `version`; returns what changed."""
    version = str(version)
    if not ALIAS_RE.match(alias) or re.fullmatch(r"[vV]\d+|latest", alias):
        raise ConfigError(f"--alias {alias!r} is not a usable alias: letters, digits, '_' or '-', starting with a "
                          "letter or '_' (MLflow reserves 'latest' and v<number>)")
    client = mlflow_client()
    try:
        with registry_lock():
            versions = {str(v.version): v for v in client.search_model_versions(f"name = '{model_name}'")}
            if version not in versions:
                known = ", ".join(sorted(versions, key=int)) or "none"
                raise ConfigError(f"model {model_name!r} has no version {version} (versions: {known}); "
                                  "`gandistill runs` lists which run registered which version")
            previous = client.get_registered_model(model_name).aliases.get(alias)
            client.set_registered_model_alias(model_name, alias, version)
            why = f"set by hand (gandistill promote --version {version} --alias {alias})" + (
                f": {reason}" if reason else "")
            tags = {TAG_DECISION: alias, TAG_REASON: why[:4900], f"previous_{alias}": previous or ""}
            for key, value in tags.items():
                client.set_model_version_tag(model_name, version, key, value)
    except GandistillError:
        raise
    except Exception as exc:  # the registry failed: one clear error, exit 5
        raise tracking_error(exc, f"moving @{alias} of {model_name} to version {version}") from None
    return {"model_name": model_name, "version": version, "alias": alias,
            "previous": None if previous is None else str(previous), "reason": why,
            "test_acc": versions[version].tags.get("student_test_acc")}
