"""Ray Tune search over JAFFNet's hybrid-loss weights and DRF dilation rates.

``jaffnet tune`` (``tuning.commands``) loads a search space (``tuning.search_space``),
runs each trial as a full Ray Train run (``tuning.trainable``) under ASHA, logs one MLflow
parent run with a nested run per trial (``tuning.tracking``), prints the trial table
(``tuning.trials``) and registers the winner (``tuning.search``).
"""
