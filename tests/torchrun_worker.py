"""A torchrun worker for the multi-process tests (not a test module itself).

Runs several stage specs (written by `gandistill.launch.write_spec`) one after another in
one process group — one torch import and one rendezvous for many runs — through the
production worker, `gandistill.launch.worker_main`. Test-only switches, by environment:

- GANDISTILL_TEST_FLOAT64=1: torch's default dtype float64, so N ranks and one rank must
  agree to float64 rounding (float32 rounding differences between batch shapes are
  amplified by Adam on near-zero gradients and by discrete choices such as top-k);
- GANDISTILL_TEST_AUDIT_DIR=DIR: a Python audit hook records every file this rank opens
  for writing or renames into; written to DIR/rank-N.json at exit (the rank-0-only-writes
  evidence).
Each spec may carry "env": {VAR: value} (e.g. its own checkpoint root), set before it runs.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path

import torch

from gandistill import launch

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _audit_writes(folder: Path) -> None:
    rank = os.environ.get("RANK", "0")
    written: list[str] = []

    def hook(event: str, args: tuple) -> None:
        if event == "open" and args and isinstance(args[0], str | bytes | os.PathLike):
            mode, flags = args[1], args[2]
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int)
                                                                              and flags & WRITE_FLAGS):
                written.append(os.fsdecode(args[0]))
        elif event == "os.rename":
            written.append(os.fsdecode(args[1]))

    sys.addaudithook(hook)
    atexit.register(lambda: (folder / f"rank-{rank}.json").write_text(json.dumps(written)))


def main(specs: list[str]) -> int:
    if os.environ.get("GANDISTILL_TEST_FLOAT64") == "1":
        torch.set_default_dtype(torch.float64)
    if os.environ.get("GANDISTILL_TEST_AUDIT_DIR"):
        _audit_writes(Path(os.environ["GANDISTILL_TEST_AUDIT_DIR"]))
    for spec in specs:
        os.environ.update(json.loads(Path(spec).read_text()).get("env", {}))
        code = launch.worker_main(spec)
        if code:
            return code
        if torch.distributed.is_initialized():  # as a DAG edge does: the next stage reads rank 0's outputs
            torch.distributed.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
