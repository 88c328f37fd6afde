"""What the training stages share around their own math."""

from __future__ import annotations

from typing import Any

from gandistill.runtime import Runtime


def follower_result(runtime: Runtime, steps: int | None = None) -> dict[str, Any]:
    """What a rank other than 0 returns from a training stage: it trained its share and
    stops there — rank 0 alone writes the model, result.json and the final metrics."""
    return {"rank": runtime.rank, "world_size": runtime.world_size, "steps": steps, "writes": False}
