"""Errors that name the fault and the fix.

Every error a user can cause (bad params, bad data, unreachable services) is raised as a
`GandistillError` subclass; the CLI prints its message on one line block and exits with
the error's `exit_code` instead of dumping a traceback.

The exit codes are a documented table (README, "Exit codes"): one class per row below. An
error raised inside a pipeline task crosses a process boundary as its row's class *name*
(`category`, in the stage's failure event), and the CLI turns the name back into the code
(`by_name`) — so a DataError raised in prepare_data exits 3 whether it was raised before
the pipeline started or inside it.
"""

from __future__ import annotations


class GandistillError(Exception):
    """Base class: a user-facing error whose message says what is wrong and how to fix it."""

    exit_code = 1


class ConfigError(GandistillError):
    """params.yaml or a --set override is invalid. Raised before any stage runs."""

    exit_code = 2


class DataError(GandistillError):
    """A dataset file is missing, corrupt, or inconsistent."""

    exit_code = 3


class TrainingError(GandistillError):
    """Training diverged or collapsed and retries were exhausted."""

    exit_code = 4


class ServiceError(GandistillError):
    """An external service (object store, MLflow, KFP) failed after bounded retries."""

    exit_code = 5


class ExportError(GandistillError):
    """An exported model does not reproduce the PyTorch model (parity check failed)."""

    exit_code = 6


class WorkerError(GandistillError):
    """A data-parallel worker process (a torchrun rank) died or hung, so the stage failed."""

    exit_code = 7


# The exit-code table, one documented class per code (a subclass, e.g. tracking.TrackingError,
# reports as the row it belongs to).
DOCUMENTED: tuple[type[GandistillError], ...] = (ConfigError, DataError, TrainingError, ServiceError, ExportError,
                                                 WorkerError)


def category(exc: BaseException) -> str:
    """The name of the documented class `exc` belongs to ("GandistillError" for an unlisted
    user-facing error, "" for anything else: a bug)."""
    for cls in DOCUMENTED:
        if isinstance(exc, cls):
            return cls.__name__
    return GandistillError.__name__ if isinstance(exc, GandistillError) else ""


def by_name(name: str) -> type[GandistillError]:
    """The documented class called `name` (see `category`); GandistillError (exit 1) otherwise."""
    return next((cls for cls in DOCUMENTED if cls.__name__ == name), GandistillError)


class ParamNotGiven(RuntimeError):
    """A stage read a params key that its record (gandistill.stage_records, `reads`)
    does not give it. A bug in gandistill, not a user fault: it keeps its traceback."""
