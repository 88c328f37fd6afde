"""What the report's Explain block costs: evaluate re-run on a finished run's models, each block timed.

    gandistill run --local --run-name explain-short --set teacher.epochs=3 --set gan.steps=3000 --set distill.steps=3000
    python -m bench.explain_cost runs/explain-short --repeats 3 --threads 2    # under the exclusive CPU lock

Reads the run's record (runs/<name>/summary.json: where each stage's artifacts are, params.yaml:
what it ran with) and calls `gandistill.stages.evaluate.run` on the same data, teacher, generator
and student `--repeats` times, into temporary folders (the run's own report is left alone).
evaluate times each of its blocks (result.json "block_seconds"); this keeps the median of each
block and of the whole stage. Results: bench/results/<results>.json and .md, with the command,
the commit and the load (`uptime`) before and after — times on a busy machine are not comparable.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.quality import RESULTS, git_commit, machine
from gandistill.config import load_params
from gandistill.stages import evaluate


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_inputs(record: Path) -> tuple[dict[str, str], Path]:
    """The stage artifact folders of a finished local run and its params file."""
    summary = json.loads((record / "summary.json").read_text())
    return summary["artifacts"], record / "params.yaml"


def time_evaluate(record: Path, repeats: int, threads: int | None) -> list[dict[str, Any]]:
    artifacts, params_file = run_inputs(record)
    overrides = [f"runtime.threads={threads}"] if threads else []
    params = load_params(params_file, overrides)
    timings = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="explain-cost-") as out:
            result = evaluate.run(params, artifacts["prepare_data"], artifacts["train_teacher"],
                                  artifacts["distill"], artifacts.get("train_gan"), out)
        timings.append({"wall_s": result["wall_s"], "block_seconds": result["block_seconds"],
                        "explain_metrics": {k: v for k, v in result["metrics"].items()
                                            if k in ("explain_disagreements", "test_samples")}})
    return timings


def summarise(timings: list[dict[str, Any]]) -> dict[str, float]:
    blocks = timings[0]["block_seconds"].keys()
    medians = {name: statistics.median(t["block_seconds"][name] for t in timings) for name in blocks}
    return medians | {"evaluate": statistics.median(t["wall_s"] for t in timings)}


def write(name: str, record: Path, timings: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    medians = summarise(timings)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"medians_s": medians, "runs": timings, "meta": meta},
                                                     indent=1))
    lines = [f"# The report's block costs: {name}", "",
             f"evaluate re-run {len(timings)}× on the models of `{record}` (made by `{meta['run_command']}`), "
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
    parser.add_argument("record", help="a local run's record folder, runs/<run-name>")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--run-command", default="", help="the command that made the run (for the results file)")
    parser.add_argument("--results", default="explain-cost", help="results file name under bench/results/")
    args = parser.parse_args(argv)
    record = Path(args.record)
    load_before = load_average()
    timings = time_evaluate(record, args.repeats, args.threads)
    summary = json.loads((record / "summary.json").read_text())
    meta = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "git_commit": git_commit(), "threads": torch.get_num_threads(), "load_before": load_before,
            "load_after": load_average(), "run_git_commit": summary.get("git_commit"),
            "run_command": args.run_command or "see the run's params.yaml",
            "command": " ".join(["python -m bench.explain_cost", str(record), f"--repeats {args.repeats}",
                                 *(f"--threads {args.threads}" for _ in [0] if args.threads)])}
    write(args.results, record, timings, meta)
    print((RESULTS / f"{args.results}.md").read_text())


if __name__ == "__main__":
    main(sys.argv[1:])
