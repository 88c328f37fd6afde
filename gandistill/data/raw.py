"""What every dataset source returns: raw arrays plus the facts that version them.

A source returns train (and, if it has one, test) as uint8 N×C×H×W with int64 labels;
prepare_data then validates, carves val (and test when missing) and stores the result.
Its own module so that sources (sources.py, dvc_source.py, idx.py) can share it without
importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RawData:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray | None
    test_y: np.ndarray | None
    class_names: list[str]
    version: dict[str, str] = field(default_factory=dict)
    # Where the train / test labels live in the source (an array or file name), for messages
    # that point at a bad label: "y[345]".
    label_names: tuple[str, str] = ("train labels", "test labels")
