#!/usr/bin/env bash
# Build the component image with whichever container engine exists (docker or podman).
#
#   scripts/image.sh build [--cuda] [--tag TAG]   build docker/Dockerfile (or .cuda), print size
#   scripts/image.sh setup                       podman only: packages, config, base image
#   scripts/image.sh engine                      print the engine and its environment
#   scripts/image.sh tag                         the image reference `build` would tag
#   scripts/image.sh content-tag                 this working tree's content tag (c-<12 hex>)
#
# `make image` calls `build`. With podman the one-time setup runs first when something is
# missing, so a clean Debian machine (root, apt) goes from nothing to an image in one
# command. What the setup does, and why (../shared/ENVIRONMENT.md has the measurements):
# - packages podman, runc, mmdebstrap (Debian bookworm);
# - a containers.conf (CONTAINERS_CONF) with runc instead of crun and lowered default
#   ulimits: on cgroup-v1 hybrid VMs without CAP_SYS_RESOURCE crun cannot start containers;
#   the host's CA bundle is mounted into builds and containers (registry traffic may be
#   TLS-intercepted; the mount is not saved into the image);
# - a base image when python:3.11-slim-bookworm cannot be pulled (no Docker Hub): Debian's
#   own Python built with mmdebstrap from the host's apt sources (docker/base/Dockerfile).
#
# The tag: IMAGE (default pipeline.image from params.yaml); a repository without a tag is tagged
# with the working tree's content tag (pipeline/image.py says why: `gandistill compile` and
# `submit` refuse an image tag that does not match the code they compile).
# Environment: IMAGE (repository or full reference), PYTHON_IMAGE (base),
# WHEELS (a folder of wheels to mount into the build; default: pip's configured find-links
# folder when it holds the CPU torch wheel), TORCH_INDEX (the index torch comes from when no
# wheel folder is mounted: default PyTorch's cpu / cu128 index, see the Dockerfiles; e.g. a
# mirror, or https://pypi.org/simple, whose default Linux torch wheel is a CUDA build),
# GIT_COMMIT (default: git rev-parse HEAD), GANDISTILL_PODMAN_DIR (where the podman config
# lives, default .podman/).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

OFFICIAL_PYTHON=python:3.11.11-slim-bookworm
ROOTFS=localhost/gandistill-bookworm-rootfs:latest
STANDIN=localhost/gandistill-python-base:3.11-bookworm
PODMAN_DIR="${GANDISTILL_PODMAN_DIR:-$ROOT/.podman}"

log() { echo "image: $*" >&2; }
die() { echo "image: error: $*" >&2; exit 1; }

engine() {
  if [ -n "${CONTAINER_ENGINE:-}" ]; then echo "$CONTAINER_ENGINE"; return; fi
  # A docker CLI without a reachable daemon is not an engine (this is common: client only).
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then echo docker; return; fi
  if command -v podman >/dev/null 2>&1; then echo podman; return; fi
  echo none
}

podman_env() {
  export CONTAINERS_CONF="$PODMAN_DIR/containers.conf"
}

write_podman_conf() {
  mkdir -p "$PODMAN_DIR"
  local ca=/etc/ssl/certs/ca-certificates.crt tmp="$PODMAN_DIR/.containers.conf.tmp"
  {
    echo "# Written by scripts/image.sh setup; used through CONTAINERS_CONF."
    echo "[containers]"
    echo 'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]'
    if [ -f "$ca" ]; then
      echo "volumes = [\"$ca:$ca:ro\"]"
      echo "env = [\"PIP_CERT=$ca\", \"REQUESTS_CA_BUNDLE=$ca\"]"
    fi
    echo "[engine]"
    echo 'runtime = "runc"'
  } > "$tmp"
  mv "$tmp" "$PODMAN_DIR/containers.conf"
}

apt_sources() {
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [ -s "$f" ]; then echo "$f"; return; fi
  done
  die "no apt sources file found for mmdebstrap (looked for /etc/apt/sources.list.d/debian.sources, /etc/apt/sources.list)"
}

build_standin() {
  podman_env
  if ! podman image exists "$ROOTFS"; then
    local tar
    tar="$(mktemp -d)/rootfs.tar"
    log "building a Debian bookworm root filesystem with mmdebstrap (~2 min, once)"
    # The apt mirror may be a dated snapshot: its Release files are past Valid-Until.
    mmdebstrap --variant=minbase --quiet \
      --aptopt='Acquire::Check-Valid-Until "false"' --aptopt='Acquire::Check-Date "false"' \
      --include=python3,python3-venv,python3-pip,ca-certificates \
      bookworm "$tar" "$(apt_sources)"
    podman import --quiet "$tar" "$ROOTFS" >/dev/null
    rm -rf "$(dirname "$tar")"
  fi
  log "building the base image $STANDIN (Debian's Python 3.11 in a venv)"
  podman build --format docker --quiet --build-arg ROOTFS="$ROOTFS" -t "$STANDIN" docker/base >/dev/null
}

setup() {
  local need=()
  for tool in podman runc mmdebstrap; do command -v "$tool" >/dev/null 2>&1 || need+=("$tool"); done
  if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
      || die "missing ${need[*]}: install them (Debian: apt-get install podman runc mmdebstrap), or install docker"
    log "installing ${need[*]} (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
      || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
           apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
  fi
  write_podman_conf
  podman_env
  if [ -n "${PYTHON_IMAGE:-}" ]; then return; fi
  if podman image exists "$OFFICIAL_PYTHON" || podman image exists "$STANDIN"; then return; fi
  if timeout 120 podman pull -q "docker.io/library/$OFFICIAL_PYTHON" >/dev/null 2>&1; then return; fi
  log "docker.io/library/$OFFICIAL_PYTHON cannot be pulled here: using a base built from Debian packages"
  build_standin
}

python_image() {
  local eng="$1"
  if [ -n "${PYTHON_IMAGE:-}" ]; then echo "$PYTHON_IMAGE"; return; fi
  if [ "$eng" = podman ] && ! podman image exists "$OFFICIAL_PYTHON" && podman image exists "$STANDIN"; then
    echo "$STANDIN"; return
  fi
  echo "$OFFICIAL_PYTHON"
}

wheels_dir() {
  # pip's configured find-links folder, if it holds a CPU torch wheel (e.g. an offline mirror).
  if [ -n "${WHEELS:-}" ]; then echo "$WHEELS"; return; fi
  local dir
  dir="$(pip config get global.find-links 2>/dev/null || true)"
  if [ -n "$dir" ] && [ -d "$dir" ] && compgen -G "$dir/torch-*+cpu-*.whl" >/dev/null; then echo "$dir"; fi
}

# What the image's code and environment come from; the same list and hash as
# pipeline/image.py (CONTENT, content_tag), which compile/submit check the tag against.
CONTENT=(docker/Dockerfile docker/Dockerfile.cuda .dockerignore requirements-image.txt pyproject.toml data.dvc
         gandistill components pipeline)

content_tag() {
  # c-<12 hex>: sha256 over "<sha256>  <path>" lines (byte-sorted paths) of every file git lists
  # under CONTENT, tracked or not (ignored files excluded), as they are in the working tree.
  git rev-parse --git-dir >/dev/null 2>&1 || die "not a git checkout: the content tag needs git (or pass --tag)"
  local digest
  digest="$(git ls-files -z --cached --others --exclude-standard -- "${CONTENT[@]}" | LC_ALL=C sort -z -u |
    while IFS= read -r -d '' f; do
      [ -f "$f" ] && printf '%s  %s\n' "$(sha256sum < "$f" | cut -d' ' -f1)" "$f"
    done | sha256sum | cut -c1-12)"
  echo "c-$digest"
}

default_tag() {
  # IMAGE, else pipeline.image in params.yaml (no Python needed: a clean clone can build the
  # image first). A repository without a tag gets this tree's content tag.
  local image="${IMAGE:-}"
  [ -n "$image" ] || image="$(awk '/^pipeline:/{p=1; next} /^[^ #]/{p=0} p && $1 == "image:" {print $2; exit}' \
    params.yaml)"
  [ -n "$image" ] || die "no pipeline.image in params.yaml: pass IMAGE=... or --tag"
  local last="${image##*/}"
  if [[ "$last" == *:* ]]; then echo "$image"; else echo "$image:$(content_tag)"; fi
}

build() {
  local cuda="" tag="${IMAGE:-}"
  while [ $# -gt 0 ]; do
    case "$1" in
      --cuda) cuda=1 ;;
      --tag) tag="$2"; shift ;;
      *) die "unknown option $1" ;;
    esac
    shift
  done
  [ -n "$tag" ] || tag="$(default_tag)"
  [ -z "$cuda" ] || [[ "$tag" == *-cuda ]] || tag="$tag-cuda"
  local eng
  eng="$(engine)"
  if [ "$eng" = none ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then eng=podman; else
      die "no container engine: install docker (with a running daemon) or podman"
    fi
  fi
  local args=(build -f "docker/Dockerfile${cuda:+.cuda}" -t "$tag")
  local commit="${GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
  args+=(--build-arg "GIT_COMMIT=$commit")
  [ -z "${TORCH_INDEX:-}" ] || args+=(--build-arg "TORCH_INDEX=$TORCH_INDEX")
  if [ "$eng" = podman ]; then
    setup
    podman_env
    args+=(--format docker)  # the OCI format drops SHELL and HEALTHCHECK
    local wheels
    wheels="$(wheels_dir)"
    if [ -n "$wheels" ] && [ -z "$cuda" ]; then
      args+=(-v "$wheels:/wheels:ro" --build-arg WHEELS=/wheels)
    fi
  elif [ -n "$(wheels_dir)" ] && [ -z "$cuda" ]; then
    log "note: docker build cannot mount $(wheels_dir); torch comes from the TORCH_INDEX build arg"
  fi
  args+=(--build-arg "PYTHON_IMAGE=$(python_image "$eng")")
  log "$eng ${args[*]} ."
  local started=$SECONDS
  "$eng" "${args[@]}" .
  local size
  size="$("$eng" image inspect --format '{{.Size}}' "$tag")"
  log "built $tag in $((SECONDS - started)) s, size $((size / 1000000)) MB ($size bytes), commit $commit"
  echo "$tag"
}

case "${1:-build}" in
  build) shift || true; build "$@" ;;
  setup) setup ;;
  engine) eng="$(engine)"; echo "$eng"; [ "$eng" != podman ] || echo "CONTAINERS_CONF=$PODMAN_DIR/containers.conf" ;;
  tag) default_tag ;;
  content-tag) content_tag ;;
  *) die "usage: scripts/image.sh build [--cuda] [--tag TAG] | tag | content-tag | setup | engine" ;;
esac
