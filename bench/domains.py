"""Target domains for the transfer benchmark, written as .npz files (`data.target_source=npz`).

    python -m bench.domains digits8 [--out bench/work/domains]

- `digits8`: scikit-learn's 8×8 handwritten digits (1,797 images, UCI; shipped inside the
  installed scikit-learn, no download), pixel values 0–16 scaled to 0–255. No test split in the
  file: prepare_data carves one (data.test_fraction). Small, grey, a different size and stroke
  style from MNIST — the case of issue 22 where the CycleGAN student ended at 2.6 %.

Each file is rebuilt only when missing; the path is printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "work" / "domains"


def digits8(out: Path) -> Path:
    from sklearn.datasets import load_digits

    path = out / "digits8.npz"
    if not path.is_file():
        digits = load_digits()
        x = np.round(digits.images * (255 / 16)).astype(np.uint8)  # N×8×8, 0–16 → 0–255
        out.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=x, y=digits.target.astype(np.int64))
    return path


BUILDERS = {"digits8": digits8}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(BUILDERS))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    print(BUILDERS[args.name](args.out))


if __name__ == "__main__":
    main()
