"""What the report's Explain block costs: evaluate re-run on trained models, each block timed.

    python -m bench.explain_cost --record runs/NAME --repeats 3 --threads 2       # a local run's models
    python -m bench.explain_cost --data D --teacher T --generator G --student S \
        --repeats 3 --threads 2 --keep /tmp/report                                  # any stage folders

Calls `gandistill.stages.evaluate.run` on the same data, teacher, generator and student
`--repeats` times, into temporary folders (a run's own report is left alone; `--keep DIR` keeps the
last repeat's report and figures). A local run's record (runs/<name>/summary.json) says where each
stage's artifacts are and its params.yaml what it ran with; otherwise the params are the defaults
plus `--set`. evaluate times each of its blocks (result.json "block_seconds"); this keeps the median
of each block and of the whole stage. Run it under the exclusive CPU lock. Results:
bench/results/<results>.json and .md, with the command, the commit and the load average before
and after — times on a busy machine are not comparable.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.quality import RESULTS, git_commit, machine
from gandistill.config import Params, load_params
from gandistill.stages import evaluate


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def record_inputs(record: Path) -> tuple[dict[str, str], Path]:
    """The stage artifact folders of a finished local run and its params file."""
    summary = json.loads((record / "summary.json").read_text())
    artifacts = summary["artifacts"]
    folders = {"data": artifacts["prepare_data"], "teacher": artifacts["train_teacher"],
               "generator": artifacts.get("train_gan"), "student": artifacts["distill"]}
    return folders, record / "params.yaml"


def time_evaluate(folders: dict[str, str | None], params: Params, repeats: int,
                  keep: Path | None) -> list[dict[str, Any]]:
    timings = []
    for repeat in range(repeats):
        with tempfile.TemporaryDirectory(prefix="explain-cost-") as out:
            result = evaluate.run(params, folders["data"], folders["teacher"], folders["student"],
                                  folders["generator"], out)
            if keep is not None and repeat == repeats - 1:
                shutil.rmtree(keep, ignore_errors=True)
                shutil.copytree(out, keep)
        timings.append({"wall_s": result["wall_s"], "block_seconds": result["block_seconds"],
                        "test_samples": result["metrics"]["test_samples"],
                        "explain_disagreements": result["metrics"].get("explain_disagreements")})
    return timings


def summarise(timings: list[dict[str, Any]]) -> dict[str, float]:
    blocks = timings[0]["block_seconds"].keys()
    medians = {name: statistics.median(t["block_seconds"][name] for t in timings) for name in blocks}
    return medians | {"evaluate": statistics.median(t["wall_s"] for t in timings)}


def write(name: str, timings: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    medians = summarise(timings)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"medians_s": medians, "runs": timings, "meta": meta},
                                                     indent=1))
    lines = [f"# The report's block costs: {name}", "",
             f"evaluate re-run {len(timings)}× on {meta['models']} (made by `{meta['models_command']}`), "
             f"each block's wall seconds, median over the repeats. {meta['threads']} torch threads; "
             f"load average before {meta['load_before']}, after {meta['load_after']}. "
             f"Machine: {meta['machine']}. {meta['date']}, commit {meta['git_commit']}.", "",
             "| block | median s | share of evaluate |", "|---|---|---|"]
    total = medians["evaluate"]
    for block, seconds in medians.items():
        lines.append(f"| {block} | {seconds:.1f} | {100 * seconds / total:.0f} % |")
    lines += ["", f"Command: `{meta['command']}`", ""]
    (RESULTS / f"{name}.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", help="a local run's record folder, runs/<run-name>")
    for stage in ("data", "teacher", "generator", "student"):
        parser.add_argument(f"--{stage}", help=f"the {stage} folder (without --record)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="params override")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--keep", type=Path, help="keep the last repeat's evaluation folder here")
    parser.add_argument("--models-command", default="", help="the command that trained the models (for the table)")
    parser.add_argument("--results", default="explain-cost", help="results file name under bench/results/")
    args = parser.parse_args(argv)
    if args.record:
        folders, params_file = record_inputs(Path(args.record))
        models = f"the models of the run `{args.record}`"
    else:
        folders, params_file = {s: getattr(args, s) for s in ("data", "teacher", "generator", "student")}, None
        if not all(folders[s] for s in ("data", "teacher", "student")):
            parser.error("give --record or --data, --teacher and --student (and --generator where there is one)")
        models = f"the student `{Path(folders['student']).name}` and its teacher / generator"
    threads = [f"runtime.threads={args.threads}"] if args.threads else []
    params = load_params(params_file, [*args.overrides, *threads])
    load_before = load_average()
    timings = time_evaluate(folders, params, args.repeats, args.keep)
    command = ["python -m bench.explain_cost", *(f"--{k} {v}" for k, v in [("record", args.record), *folders.items()]
                                                 if v and (k == "record" or not args.record)),
               *(f"--set {o}" for o in args.overrides), f"--repeats {args.repeats}",
               *(f"--threads {args.threads}" for _ in [0] if args.threads)]
    meta = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "git_commit": git_commit(), "threads": torch.get_num_threads(), "load_before": load_before,
            "load_after": load_average(), "models": models, "folders": folders,
            "models_command": args.models_command or "see the folders' result.json",
            "command": " ".join(command)}
    write(args.results, timings, meta)
    print((RESULTS / f"{args.results}.md").read_text())


if __name__ == "__main__":
    main(sys.argv[1:])
