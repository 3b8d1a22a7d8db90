"""``jaffnet tune``: Ray Tune search over loss weights and DRF dilation rates."""

from __future__ import annotations

import sys

from pipelines.cli_options import add_tracking_uri, positive_int

LATEST = "latest"


def add_commands(subparsers, bench_subparsers) -> None:
    tune = subparsers.add_parser(
        "tune", help="Ray Tune + ASHA search over loss weights and dilation rates; registers the best model",
        description="Each trial is a full Ray Train run. The search space comes from --config (default: the "
                    "packaged tuning/search_space.yaml); the training config of every trial is the training "
                    "defaults, then --train-config, then the search file's `training` block, then --set.")
    tune.add_argument("--data", help="ingested dataset (from `jaffnet ingest`): a folder or s3://bucket/prefix")
    tune.add_argument("--config", help="search-space YAML (default: the packaged tuning/search_space.yaml)")
    tune.add_argument("--train-config", help="training YAML every trial starts from (see `jaffnet train`)")
    tune.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="fix one training-config key for every trial (repeatable), e.g. --set epochs=4")
    tune.add_argument("--num-samples", type=int, help="configurations to draw (default from the search file)")
    tune.add_argument("--repeats", type=positive_int, metavar="N",
                      help="run each configuration N times, with training seeds seed..seed+N-1, and pick the best "
                           "configuration by its mean (default from the search file: 1)")
    tune.add_argument("--max-concurrent", type=int,
                      help="trials at once (default: as many as fit the cluster, leaving CPUs for Ray Data)")
    tune.add_argument("--name", help="search name, its folder under storage_path (default: tune-<timestamp>)")
    tune.add_argument("--resume", nargs="?", const=LATEST, metavar="SEARCH_DIR",
                      help="carry on an interrupted search from its folder (<storage_path>/<name>; default: the "
                           "newest search under ./ray_results); takes no other option")
    tune.add_argument("--print-space", action="store_true", help="print the checked search space and exit")
    add_tracking_uri(tune)
    tune.set_defaults(func=tune_command)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def tune_command(args) -> int:
    from tuning.search import SearchError
    from tuning.search_space import SearchSpaceError

    if args.resume:
        given = [flag for flag, value in (("--data", args.data), ("--config", args.config),
                                          ("--train-config", args.train_config), ("--set", args.overrides),
                                          ("--num-samples", args.num_samples), ("--repeats", args.repeats),
                                          ("--max-concurrent", args.max_concurrent), ("--name", args.name))
                 if value]
        if given:
            return _fail(f"--resume continues the saved search as planned; drop {', '.join(given)}")
    try:
        return _resume(args) if args.resume else _start(args)
    except (SearchSpaceError, SearchError, FileNotFoundError, LookupError, ValueError) as exc:
        return _fail(str(exc))


def _start(args) -> int:
    from tuning.search_space import load_search_space, resolve_training

    # Everything checkable is checked before Ray starts.
    space = load_search_space(args.config, num_samples=args.num_samples, max_concurrent=args.max_concurrent,
                              repeats=args.repeats)
    base = resolve_training(space, args.train_config, args.overrides)
    if args.print_space:
        print(describe_space(space, base))
        return 0
    if not args.data:
        return _fail("--data DATASET is required (an ingested dataset directory)")
    from pipelines.registry import configure_tracking
    from pipelines.runtime import init_ray
    from tuning.search import plan_search, run_search
    from tuning.search_space import describe_metric

    configure_tracking(args.tracking_uri)
    init_ray()  # joins the cluster at RAY_ADDRESS if set, else starts a local one
    plan = plan_search(args.data, space, base, name=args.name)
    print(f"search {plan.name}: {describe_trials(space, base)}, {plan.max_concurrent} at a time -> "
          f"{plan.experiment_path}")
    print(f"  ASHA on {describe_metric(base)} over {base.epochs} epochs, {space.describe_grace(base.epochs)}")
    return report(run_search(plan))


def _resume(args) -> int:
    from pipelines.registry import configure_tracking
    from pipelines.runtime import init_ray
    from tuning.search import SearchPlan, latest_search, resume_search

    path = latest_search() if args.resume == LATEST else args.resume
    configure_tracking(args.tracking_uri or SearchPlan.load(path).tracking_uri)  # the search's own by default
    init_ray()
    return report(resume_search(path))


def describe_trials(space, base) -> str:
    """Like ``8 configurations x 3 seed(s) (0, 1, 2) = 24 trials``."""
    from tuning.search_space import trial_seeds

    seeds = trial_seeds(base.seed, space.repeats)
    return (f"{space.configuration_count()} configurations x {len(seeds)} seed(s) "
            f"({', '.join(map(str, seeds))}) = {space.trial_count()} trials")


def describe_space(space, base) -> str:
    from tuning.search_space import describe_metric

    lines = [f"search space from {space.source}:"]
    lines += [f"  {p.key}: {p.describe()}" for p in space.parameters.values()]
    lines.append(describe_trials(space, base))
    lines.append(f"ASHA {space.describe_grace(base.epochs)}, reduction factor {space.reduction_factor}, max "
                 f"{base.epochs} epochs, on {describe_metric(base)}")
    return "\n".join(lines)


def report(outcome) -> int:
    """Print the trial table and what became of the winner; the exit code."""
    from pipelines.registry import CANDIDATE_ALIAS, CHAMPION_ALIAS, redact
    from tuning.search_space import describe_metric

    plan, table = outcome.plan, outcome.table
    cfg = plan.train_config
    print(table.format())
    if table.repeated():
        print()
        print(table.format_configurations())
    if not outcome.complete:
        print(f"search interrupted; nothing registered. Carry on with: jaffnet tune --resume {plan.experiment_path}")
        return 1
    best = table.best()
    if best is None:
        print("no trial finished an epoch; nothing registered")
        return 1
    pub = outcome.publication
    aliases = [CANDIDATE_ALIAS] + ([CHAMPION_ALIAS] if pub.promoted else [])
    at_epoch = f" at epoch {best.best_epoch + 1}" if best.best_epoch is not None else ""
    print(f"search metric: {describe_metric(cfg)}")
    if table.repeated():
        group = table.best_configuration()
        sd = f", sd {group.spread:.4f}" if group.spread is not None else ""
        print(f"best configuration {group.configuration}: mean {table.metric} {group.mean:.4f} over "
              f"{len(group.values)} seeds{sd}")
        spread = table.seed_spread()
        means = [g.mean for g in table.configurations() if g.eligible]
        if spread is not None and len(means) > 1:
            print(f"run-to-run spread (sd between seeds, median over configurations) {spread:.4f}; "
                  f"configuration means range {max(means) - min(means):.4f}")
        print(f"registering its best run, trial {best.trial_id} (seed {best.params.get('seed')}): "
              f"{table.metric} {best.best:.4f}{at_epoch} of {best.epochs_run} run")
    else:
        print(f"best trial {best.trial_id}: {table.metric} {best.best:.4f}{at_epoch} of {best.epochs_run} run")
    print(f"registered {pub.model_uri} with alias {', '.join(aliases)} ({pub.promotion_reason}); "
          f"pixel threshold {pub.threshold:.3f}, image threshold {pub.image_threshold:.3f}")
    print(f"MLflow parent run {plan.parent_run_id} (experiment {plan.mlflow_experiment_id}) "
          f"at {redact(plan.tracking_uri)}")
    return 0
