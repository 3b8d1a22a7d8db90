"""Held-out textures: a demo-size model trained on some surfaces, tested on surfaces it never saw,
next to its in-distribution test score.

    python benchmarks/generalisation.py --out /tmp/generalisation [--held-out gravel,fabric] [--runs 1]

Trains with the demo's keys (``demo.yaml``; ``--difficulty`` as ``jaffnet demo``) on frames of the
other bundled textures, then evaluates the registered model on the test split of its own data (its
``--count`` frames split 70/15/15, plus ``--test-frames`` more, as ``jaffnet demo`` does) and on
``--test-frames`` frames drawn only from the held-out textures. Prints one row per split with the
all-background baseline's MAE beside it and the image AUROC's 95 % interval; writes OUT/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recipe import cpu_name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--held-out", default="gravel,fabric")
    parser.add_argument("--difficulty", default="easy", choices=("easy", "hard"))
    parser.add_argument("--count", type=int, default=640, help="frames to train, validate and test on")
    parser.add_argument("--test-frames", type=int, default=1024,
                        help="more test frames of the seen textures, and the held-out textures' test frames")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    from pipelines.data.ingestion import ingest
    from pipelines.data.splits import fractions_with_extra_test
    from pipelines.data.synth import synthesize
    from pipelines.data.textures import TEXTURES
    from pipelines.registry import configure_tracking
    from pipelines.runtime import init_ray
    from pipelines.training.config import DEMO_CONFIG, HARD_DEMO_CONFIG, load_config
    from pipelines.evaluation.evaluate import all_background_baseline, evaluate
    from pipelines.training.run import train

    held_out = [t.strip() for t in args.held_out.split(",")]
    seen = [t for t in TEXTURES if t not in held_out]
    out = Path(args.out)
    init_ray()
    configure_tracking(f"sqlite:///{out / 'mlflow.db'}")
    datasets = {}
    seen_fractions = fractions_with_extra_test(args.count, args.test_frames)
    for name, textures, seed, count, (val_fraction, test_fraction) in (
            ("seen", seen, 0, args.count + args.test_frames, seen_fractions),
            ("held_out", held_out, 1, args.test_frames, (0.0, 0.99))):  # each class keeps one frame out of test
        synthesize(out / f"synth_{name}", count, size=64, seed=seed, difficulty=args.difficulty,
                   textures=textures, overwrite=True)
        datasets[name] = ingest(out / f"synth_{name}", out / f"dataset_{name}", "folder", seed=seed,
                                val_fraction=val_fraction, test_fraction=test_fraction, overwrite=True).dataset_dir
    configs = [DEMO_CONFIG] + ([HARD_DEMO_CONFIG] if args.difficulty == "hard" else [])
    rows = []
    for run in range(args.runs):
        cfg = load_config(configs, [f"storage_path={out / 'ray_results'}", "experiment=generalisation",
                                    "model_name=generalisation", f"seed={run}", *args.overrides])
        uri = train(cfg, datasets["seen"]).publication.model_uri
        for name, dataset in datasets.items():
            model, baseline = evaluate(uri, dataset, "test"), all_background_baseline(dataset, "test")
            rows.append({"run": run, "split": name, "frames": model.count,
                         "textures": seen if name == "seen" else held_out,
                         "cpu": cpu_name(), "difficulty": args.difficulty, "model": model.rows["overall"],
                         "image": model.image_rows["overall"], "baseline": baseline.rows["overall"]})
    with (out / "results.jsonl").open("a") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    print(f"\ntrained on {', '.join(seen)}; held out {', '.join(held_out)} ({args.difficulty}, {cpu_name()})")
    print(f"{'run':>3} {'test split':<10} {'frames':>6} {'MAE':>7} {'bg MAE':>7} {'ratio':>6} {'Sm':>6} {'maxF':>6} "
          f"{'AUROC [95 % interval]':>22} {'escape':>7} {'overkill':>8}")
    nan = float("nan")
    for r in rows:
        m, b, i = r["model"], r["baseline"], r["image"]
        auroc = (f"{i.get('image_auroc', nan):.3f} "
                 f"[{i.get('image_auroc_low', nan):.3f}, {i.get('image_auroc_high', nan):.3f}]")
        print(f"{r['run']:>3} {r['split']:<10} {r['frames']:>6} {m['mae']:7.4f} {b['mae']:7.4f} "
              f"{m['mae'] / b['mae']:6.3f} "
              f"{m['s_measure']:6.4f} {m['max_f']:6.4f} {auroc:>22} "
              f"{i.get('escape_rate', nan):7.3f} {i.get('overkill_rate', nan):8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
