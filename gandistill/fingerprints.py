"""Identities of what a training run depends on: a checkpoint is resumed only by the run that
would have produced it (same params sections, same data version, same input models)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from gandistill.config import Params
from gandistill.files import file_hash
from gandistill.model_files import MODEL_FILE


def fingerprint(*parts: Any) -> str:
    """Stable hash of params sections and input identities."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """A short content identity of a model file (the first 16 hex digits of its sha256)."""
    return file_hash(path, "sha256")[:16]


# Keys that judge a training run's result without shaping it: a new value must resume the run's
# checkpoint, not start over (teacher.min_accuracy: train_teacher's teaching bar).
JUDGES_ONLY = {"teacher": ("min_accuracy",)}


def params_sections(params: Params, *names: str) -> dict[str, Any]:
    """The named params sections (less the keys in JUDGES_ONLY) and the seed, as plain data (a
    fingerprint's params part)."""
    return {name: getattr(params, name).model_dump(exclude=set(JUDGES_ONLY.get(name, ()))) for name in names} | {
        "seed": params.seed}


def model_digest(folder: str | Path) -> str:
    """`file_digest` of the model file in `folder`; "" when it holds none (an imported TorchScript
    teacher is `model.ts`)."""
    file = Path(folder) / MODEL_FILE
    return file_digest(file) if file.is_file() else ""
