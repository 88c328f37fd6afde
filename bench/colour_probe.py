"""Exploratory probes for issue 21 (generators beyond grey digits): train a generator once under a
name, then distill students from it with other settings — so distillation-side ablations (bank,
filter, adaptive generation, augmentation) do not retrain a GAN each time.

    python -m bench.colour_probe teacher --dataset mnistm --name lenet5          # cached by name
    python -m bench.colour_probe gan --dataset mnistm --teacher lenet5 --name r16 --set gan.arch=resnet …
    python -m bench.colour_probe distill --dataset mnistm --teacher lenet5 --gan r16 --name r16-bank --set …

Every run appends to bench/results/colour-probes.json (and .md): its command, commit, load, wall
times, the generator's checks and the student's test-accuracy curve (the benchmark's off-the-clock
probe; final and val-selected numbers as in bench.quality). Names are the cache: a name reused with
other settings is refused, so a result always belongs to the settings it names. Unlike bench.quality,
the cache is not keyed by code: these probes guide the recipe, the tables in quality.md prove it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import datasets as bench_datasets
from bench.quality import DATASETS, _params, git_commit, machine, test_probe
from gandistill.checkpoint_store import CHECKPOINT_ROOT_ENV
from gandistill.fingerprints import fingerprint
from gandistill.results import read_result
from gandistill.stages import distill, prepare_data, train_gan, train_teacher

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "colour-probes"


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _folder(work: Path, kind: str, name: str, settings: dict[str, Any]) -> tuple[Path, bool]:
    """(folder, done): refuse a name already used with other settings."""
    folder = work / f"{kind}-{name}"
    stamp = folder / "settings.json"
    if stamp.is_file() and json.loads(stamp.read_text()) != settings:
        raise SystemExit(f"{folder} was made with other settings; pick another --name")
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(settings, indent=1, sort_keys=True))
    return folder, (folder / "result.json").is_file()


def record(entry: dict[str, Any]) -> None:
    file = RESULTS.with_suffix(".json")
    runs = json.loads(file.read_text()) if file.is_file() else []
    runs.append(entry)
    file.write_text(json.dumps(runs, indent=1))
    lines = ["# Colour probes (exploratory, issue 21): one seed each", "",
             "Made by `python -m bench.colour_probe` (commands below); load = 1/5/15-min load average at the start; "
             "wall s = the stage's own training seconds. Not a result table: see quality.md for those.", "",
             "| kind | dataset | name | from | final test | selected test | recall | FID | agreement | wall s | load | "
             "commit | settings |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    def pct(v: float | None) -> str:
        return "—" if v is None else f"{100 * v:.2f}"

    def num(v: float | None, digits: int) -> str:
        return "—" if v is None else f"{v:.{digits}f}"

    for r in runs:
        lines.append(f"| {r['kind']} | {r['dataset']} | {r['name']} | {r.get('from', '—')} | "
                     f"{pct(r.get('final_acc'))} | {pct(r.get('selected_acc'))} | {num(r.get('recall'), 3)} | "
                     f"{num(r.get('fid'), 1)} | {num(r.get('agreement'), 3)} | "
                     f"{r['wall_s']:.0f} | {r['load']} | {r['commit']} | {' '.join(r['overrides']) or '—'} |")
    lines += ["", "Commands:", ""] + [f"- `{r['command']}`" for r in runs]
    RESULTS.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["teacher", "gan", "distill"])
    parser.add_argument("--dataset", choices=list(DATASETS), required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--teacher", help="teacher name (gan, distill)")
    parser.add_argument("--gan", help="generator name (distill of a gan method)")
    parser.add_argument("--method", default="gan")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    if any(o == "data.source=npz" for o in DATASETS[args.dataset]):
        bench_datasets.dataset_path(args.dataset)
    work = ROOT / "bench" / "work" / "probes" / args.dataset
    params = _params(args.seed, "default", args.dataset, args.threads, args.overrides)
    data_dir = work / f"data-{fingerprint(params.data.model_dump())[:8]}"
    if not (data_dir / "result.json").is_file():
        prepare_data.run(params, data_dir)
    settings = {"overrides": args.overrides, "seed": args.seed, "teacher": args.teacher, "gan": args.gan,
                "method": args.method}
    folder, done = _folder(work, args.kind, args.name, settings)
    if done:
        print(f"{folder} exists: nothing to do")
        return
    entry: dict[str, Any] = {"kind": args.kind, "dataset": args.dataset, "name": args.name, "load": _load(),
                             "commit": git_commit(), "overrides": args.overrides, "machine": machine(),
                             "command": "python -m bench.colour_probe " + " ".join(argv)}
    os.environ[CHECKPOINT_ROOT_ENV] = tempfile.mkdtemp(dir=work)  # fresh: a resumed run reports no wall time
    started = time.time()
    teacher_dir = work / f"teacher-{args.teacher}"
    if args.kind == "teacher":
        result = train_teacher.run(params, data_dir, folder)
        entry |= {"final_acc": result["test_acc"], "selected_acc": result["test_acc"], "wall_s": result["wall_s"]}
    elif args.kind == "gan":
        result = train_gan.run(params, data_dir, teacher_dir, folder)
        entry |= {"from": args.teacher, "wall_s": result["wall_s"], "recall": result.get("selected_recall"),
                  "fid": result.get("selected_fid"), "agreement": result.get("selected_agreement"),
                  "checks": result["history"]}
    else:
        params.distill.method = args.method
        generator_dir = work / f"gan-{args.gan}" if args.gan else None
        gan = read_result(generator_dir) if generator_dir else {}
        result = distill.run(params, data_dir, teacher_dir, generator_dir, folder, observer=test_probe(data_dir))
        curve = [{"step": h["step"], "wall_s": h["wall_s"], "samples": h["samples"], "test_acc": h["test_acc"]}
                 for h in result["history"] if "test_acc" in h]
        entry |= {"from": f"{args.teacher}/{args.gan}", "wall_s": result["wall_s"],
                  "final_acc": curve[-1]["test_acc"] if curve else result["test_acc"],
                  "selected_acc": result["test_acc"] if result["selected_on"] != "final" else None,
                  "recall": gan.get("selected_recall"), "fid": gan.get("selected_fid"),
                  "agreement": gan.get("selected_agreement"), "curve": curve,
                  "extra": {k: v for k, v in result.items() if k.startswith("filtered")}}
    entry["wall_clock_s"] = time.time() - started
    record(entry)
    print(f"[probe] {args.kind} {args.name}: " + ", ".join(
        f"{k} {entry[k]:.4f}" for k in ("final_acc", "recall", "fid") if isinstance(entry.get(k), float))
        + f" ({entry['wall_s']:.0f} s, load {entry['load']})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
