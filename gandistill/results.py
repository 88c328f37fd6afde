"""A stage's `result.json`: the numbers it reports, next to its outputs (read by later stages,
the local run's summary and `gandistill runs`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gandistill.files import atomic_write_text

RESULT_FILE = "result.json"


def write_result(out_dir: str | Path, result: dict[str, Any]) -> None:
    atomic_write_text(Path(out_dir) / RESULT_FILE, json.dumps(result, indent=2, default=float))


def read_result(folder: str | Path) -> dict[str, Any]:
    file = Path(folder) / RESULT_FILE
    return json.loads(file.read_text()) if file.is_file() else {}
