"""The component image's reference, pinned to the code it runs.

KFP's cache key holds a task's image *reference* and command, not the code inside the image: a
mutable tag (`gandistill-python:0.1.0`) rebuilt with new code would let a cached task serve the
old code's outputs, and a node that pulled the tag before would run the old image. So the image
is tagged by its content — `c-` + the first 12 hex digits of a SHA-256 over the files the image's
code and environment come from (CONTENT below, as git lists them in the working tree, committed
or not) — and `compile` / `submit` / `trainer-manifest` accept only:

- a repository without a tag (`pipeline.image: registry/ml/gandistill`): the content tag of this
  working tree is appended — `make image` builds and tags exactly that; the tag `cuda`
  (`registry/ml/gandistill:cuda`) asks for the CUDA variant, `<content tag>-cuda` (`make image CUDA=1`);
- that content tag itself (or its `-cuda` variant): anything else is refused, naming the tag
  this tree needs;
- an image pinned by digest (`…@sha256:…`): taken as given (it cannot change under its name).

Pods pull with `IfNotPresent` (pipeline/kubernetes.py): a content tag or digest never names two
images, so a node's cached copy is the right one. Any change to CONTENT changes the tag and so
every task's cache key (one image holds every stage's code; the stages share the library, so a
per-stage code identity would differ for nearly every change anyway); params.yaml, README.md, docs,
tests and bench are not in it — tasks get their params as compiled constants, so a params or docs
change keeps the image and, per stage, the cache (docs/cluster.md §6). scripts/image.sh computes
the same tag in bash (tests/test_image_pin.py keeps the two equal).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

from gandistill.config import Params
from gandistill.errors import ConfigError

# What the image's code and environment are built from (docker/Dockerfile* COPY these, besides
# params.yaml and README.md, which no task reads).
CONTENT = ("docker/Dockerfile", "docker/Dockerfile.cuda", ".dockerignore", "requirements-image.txt",
           "pyproject.toml", "data.dvc", "gandistill", "components", "pipeline")
TAG_PREFIX = "c-"
_TAG_RE = re.compile(r":([\w][\w.-]{0,127})$")
REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout, when installed editable (make setup)


def checkout() -> Path | None:
    """The gandistill source checkout this code runs from, if any (an installed wheel has none)."""
    return REPO_ROOT if (REPO_ROOT / "docker" / "Dockerfile").is_file() and (REPO_ROOT / ".git").exists() else None


def content_tag(root: Path) -> str:
    """`c-<12 hex>`: SHA-256 over "<sha256 of file>  <path>" lines, sorted by path, for every file
    git lists (tracked or untracked, not ignored) under CONTENT in `root`'s working tree."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *CONTENT],
                            cwd=root, capture_output=True, check=True).stdout.decode()
    lines = []
    for rel in sorted({p for p in listed.split("\0") if p}, key=lambda p: p.encode()):
        path = root / rel
        if path.is_file():  # a tracked file deleted in the working tree is not in the image
            lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {rel}\n")
    return TAG_PREFIX + hashlib.sha256("".join(lines).encode()).hexdigest()[:12]


def split(image: str) -> tuple[str, str | None]:
    """(repository, tag or None); a registry's host:port is not a tag."""
    match = _TAG_RE.search(image)
    if match and "/" not in match.group(1):
        return image[: match.start()], match.group(1)
    return image, None


def pinned(image: str, root: Path | None) -> str:
    """The reference a compiled pipeline may use for `image` (see the module docstring)."""
    if "@sha256:" in image:
        return image
    repo, tag = split(image)
    if root is None:
        raise ConfigError(f"pipeline.image={image!r} is not pinned to any code: outside a gandistill checkout "
                          "the image's content cannot be checked, so give it by digest "
                          f"(pipeline.image={repo}@sha256:…, as your registry shows it)")
    want = content_tag(root)
    if tag is None:
        return f"{repo}:{want}"
    if tag == "cuda":
        return f"{repo}:{want}-cuda"
    if tag in (want, f"{want}-cuda"):
        return image
    raise ConfigError(f"pipeline.image={image!r}: the tag does not match this working tree, whose code is "
                      f"{want}; pods would run other code than you compiled, and KFP's cache would serve results "
                      f"of that code. Build and push the image for this tree (`make image IMAGE={repo}` tags it "
                      f"{repo}:{want}), set pipeline.image to the repository alone ({repo}) or to {repo}:{want}, "
                      "or pin a digest (…@sha256:…)")


def pin(params: Params, root: Path | None = None) -> Params:
    """`params` with pipeline.image pinned for this checkout (root: default, the one running)."""
    image = pinned(params.pipeline.image, root if root is not None else checkout())
    if image == params.pipeline.image:
        return params
    return params.model_copy(update={"pipeline": params.pipeline.model_copy(update={"image": image})})


if __name__ == "__main__":  # `python -m gandistill_pipeline.image`: this checkout's content tag
    root = checkout()
    print(content_tag(root) if root else "no gandistill checkout here")
