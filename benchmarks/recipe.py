"""Training-recipe switches measured on hard synthetic data: each variant's test metrics
against the all-background baseline, over several runs (run-to-run spread is large).

    python benchmarks/recipe.py --out /tmp/recipe --runs 2 [--variants base,pos_weight,...] [--count 640]

Each run is ``jaffnet demo --difficulty hard`` with the variant's keys (``--set``) and its
own seed; results go to OUT/results.jsonl (one line per run) and a table is printed.
Run it alone: the figures are minutes of 2-core CPU each, and timings are only comparable
between runs taken with nothing else busy.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
from pathlib import Path

# Over the demo's configuration for the difficulty, which has some switches on: each variant sets all
# three (a later --set of the same key wins).
_OFF = ["bce_pos_weight=1", "warmup_epochs=0", "grad_clip_norm=null"]
VARIANTS = {
    "base": _OFF,
    "pos_weight": [*_OFF, "bce_pos_weight=5"],
    "warmup_clip": [*_OFF, "warmup_epochs=2", "grad_clip_norm=1.0"],
    "all": ["bce_pos_weight=5", "warmup_epochs=2", "grad_clip_norm=1.0"],
}


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def beats_background(model: dict, baseline: dict) -> int:
    """How many of the saliency metrics the model beats the all-background map on."""
    from jaffnet.metrics import LOWER_IS_BETTER, METRIC_COLUMNS

    return sum((model[m] < baseline[m]) if m in LOWER_IS_BETTER else (model[m] > baseline[m])
               for m in METRIC_COLUMNS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--difficulty", default="hard", choices=("easy", "hard"))
    parser.add_argument("--count", type=int, help="synthetic frames (default: the demo's for the difficulty)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="keys for every variant")
    args = parser.parse_args()

    from pipelines.training.demo import run_demo

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    for run in range(args.runs):
        for name in args.variants.split(","):
            folder = out / f"{name}-{run}"
            result = run_demo(folder, overrides=[*VARIANTS[name], *args.overrides, f"seed={run}"],
                              tracking_uri=f"sqlite:///{out / 'mlflow.db'}", difficulty=args.difficulty,
                              count=args.count)
            row = {"variant": name, "run": run, "cpu": cpu_name(), **result}
            with results.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    print(f"\n{args.difficulty} data, {cpu_name()}")
    print(f"{'variant':<12} {'runs':>4} {'MAE/bg':>14} {'image AUROC':>16} {'beats bg (of 8)':>16} {'minutes':>8}")
    for name in VARIANTS:
        mine = [r for r in rows if r["variant"] == name]
        if not mine:
            continue
        mae = [r["model"]["mae"] / r["baseline"]["mae"] for r in mine]
        auroc = [r["image"].get("image_auroc", float("nan")) for r in mine]
        beats = [beats_background(r["model"], r["baseline"]) for r in mine]
        minutes = statistics.mean(r["seconds"] for r in mine) / 60
        print(f"{name:<12} {len(mine):>4} {_spread(mae):>14} {_spread(auroc):>16} "
              f"{','.join(map(str, beats)):>16} {minutes:8.1f}")
    return 0


def _spread(values: list[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
