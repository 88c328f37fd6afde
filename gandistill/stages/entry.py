"""The adapter every kfp component calls: validate params, open the stage's MLflow child
run, run the stage, turn user-facing errors into one clear log line and an exit code.

Lives in the library so components stay a few lines and tests can call it directly.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from gandistill.config import Params
from gandistill.errors import GandistillError
from gandistill.tracking import Tracker, redact, stage_run

log = logging.getLogger("gandistill")


def configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=os.environ.get("GANDISTILL_LOG_LEVEL", "INFO"),
                            format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("gandistill").setLevel(os.environ.get("GANDISTILL_LOG_LEVEL", "INFO"))


def run_stage(stage: str, params_json: str, parent_run_id: str,
              body: Callable[[Params, Tracker], dict[str, Any]]) -> dict[str, Any]:
    configure_logging()
    try:
        params = Params.from_json(params_json)
        with stage_run(stage, parent_run_id) as tracker:
            return body(params, tracker)
    except GandistillError as exc:
        log.error("[%s] %s", stage, redact(str(exc)))
        raise SystemExit(exc.exit_code) from None


def scalar_metrics(result: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric top-level entries of a stage result (for kfp artifact metadata / Metrics)."""
    return {f"{prefix}{k}": float(v) for k, v in result.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}
