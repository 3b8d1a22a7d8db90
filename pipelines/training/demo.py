"""``jaffnet demo``: synth -> ingest -> train (2 DDP workers) -> register -> evaluate.

Prints the test-split table next to an all-background prediction's (the score of a model
that learnt nothing), the test split's operating table (escapes and overkill with 95 %
upper bounds, at escape targets and at the model's stored rule; the curves and per-frame
CSV go to ``OUT/report``), the MLflow run and how to open the MLflow UI.
"""

from __future__ import annotations

import time
from pathlib import Path

from jaffnet.metrics import format_table
from pipelines.registry import configure_tracking, redact
from pipelines.training.config import DEMO_CONFIG, HARD_DEMO_CONFIG, load_config
from pipelines.evaluation.evaluate import all_background_baseline, evaluate
from pipelines.evaluation.report import write_report
from pipelines.training.reporting import mlflow_ui_hint, print_training_summary

DEMO_COUNT = 640  # synthetic frames split 70/15/15 by the data pipeline: 448 train, 96 validation, 96 test
# More frames from the same generator for the test split only: ~15 % of frames are good, so on 96
# test frames the image AUROC's 95 % interval is 0.06-0.09 wide, on ~1100 0.02-0.04 (docs/benchmarks/recipe.md).
EXTRA_TEST_FRAMES = 1024
DEMO_FRAME_SIZE = 64  # synthesised at the training size: thin scratches and cracks stay visible
DEMO_SEED = 0
# No faint defects: the demo's eighth-width model at 64 px cannot learn those within its
# few minutes; `jaffnet synth` defaults to the hard setting.
DEMO_DIFFICULTY = "easy"
HARD_DEMO_COUNT = 1280  # `jaffnet demo --difficulty hard`


def _step(message: str, started: float) -> None:
    print(f"\n[{time.perf_counter() - started:6.1f}s] {message}", flush=True)


def run_demo(out_dir: str | Path = "demo_out", *, count: int | None = None, config_path: str | Path | None = None,
             overrides: list[str] | tuple[str, ...] = (), tracking_uri: str | None = None,
             difficulty: str = DEMO_DIFFICULTY, extra_test_frames: int = EXTRA_TEST_FRAMES) -> dict:
    """Run every stage; returns the test metrics of the model and of the baseline.
    ``count`` frames are split 70/15/15; ``extra_test_frames`` more go to the test split only.
    ``difficulty`` hard: a quarter of the defects faint, with the hard demo's keys
    (``demo_hard.yaml`` over ``demo.yaml``) unless ``config_path`` is given."""
    from pipelines.data.ingestion import ingest
    from pipelines.data.splits import fractions_with_extra_test
    from pipelines.data.synth import synthesize
    from pipelines.runtime import init_ray
    from pipelines.training.run import train

    out = Path(out_dir).resolve()
    configs = [config_path] if config_path else [DEMO_CONFIG] + ([HARD_DEMO_CONFIG] if difficulty == "hard" else [])
    cfg = load_config(configs, [f"storage_path={out / 'ray_results'}", *overrides])  # a bad key fails before Ray starts
    count = count or (HARD_DEMO_COUNT if difficulty == "hard" else DEMO_COUNT)
    val_fraction, test_fraction = fractions_with_extra_test(count, extra_test_frames)
    # The demo is an entry point: it starts Ray and picks the tracking server; the library
    # functions below start nothing. Worker output stays on (the epoch lines stream to this
    # console), and so does the dashboard: Ray Train's placement-group cleaner polls the
    # state API it serves and warns every few seconds without it.
    init_ray()
    configure_tracking(tracking_uri)

    total = count + extra_test_frames
    started = time.perf_counter()

    _step(f"synthesising {total} defect images ({DEMO_FRAME_SIZE}px, {difficulty} difficulty: {count} split "
          f"70/15/15, {extra_test_frames} more to test on) into {out / 'synth'}", started)
    synthesize(out / "synth", count=total, size=DEMO_FRAME_SIZE, seed=DEMO_SEED, difficulty=difficulty,
               overwrite=True)
    _step("ingesting them into a Parquet dataset with Ray Data", started)
    dataset = ingest(out / "synth", out / "dataset", "folder", seed=DEMO_SEED, overwrite=True,
                     val_fraction=val_fraction, test_fraction=test_fraction).dataset_dir

    _step(f"training JAFFNet (width {cfg.width}, {cfg.image_size}px, {cfg.epochs} epochs) on "
          f"{cfg.num_workers} Ray Train workers", started)
    outcome = train(cfg, dataset)
    print_training_summary(outcome)

    _step(f"evaluating {outcome.publication.model_uri} on the test split", started)
    # The test split at validation's batch (demo.yaml: 32 inputs a pass; `jaffnet evaluate` keeps 8 for
    # full-size models on small PCs): the same scores, ~7 s less of the demo's ~30 s evaluation.
    model = evaluate(outcome.publication.model_uri, dataset, "test", batch_size=cfg.validation_batch)
    baseline = all_background_baseline(dataset, "test")
    print(model.table(f"JAFFNet {outcome.publication.model_uri} on test ({model.count} images)"))
    print()
    print(format_table({"JAFFNet": model.rows["overall"], "all-background": baseline.rows["overall"]},
                       title="test split, overall: the trained model vs predicting no defect anywhere"))
    report = out / "report"
    write_report(model, report)
    print()
    print((report / "operating_table.txt").read_text(), end="")
    print(f"report (frames.csv, roc.png, pr.png, score_histogram.png, operating table): {report}")
    print(f"another target without retraining: jaffnet calibrate --model {outcome.publication.model_uri} "
          f"--data {dataset} --max-escape-rate 0.01")
    _step("done", started)
    print(f"MLflow run {outcome.mlflow_run_id} in experiment {cfg.experiment!r} at {redact(outcome.tracking_uri)}")
    print(f"MLflow UI: {mlflow_ui_hint(outcome.tracking_uri)}")
    return {"model": model.rows["overall"], "baseline": baseline.rows["overall"],
            "image": model.image_rows["overall"], "seconds": time.perf_counter() - started}
