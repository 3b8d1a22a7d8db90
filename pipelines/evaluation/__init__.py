"""Scoring a split, calibrating the OK/NG rule and evaluating a model: what training validation,
``jaffnet evaluate``, ``jaffnet calibrate``, the endpoint's acceptance test and the INT8 gate share.

- ``calibration``: the pixel threshold (F-measure) and the image threshold for a target
  (escape or overkill rate, or cost), Clopper-Pearson bounds, the stored ``CalibrationRecord``
- ``scoring``: a split's saliency and image-level metrics and per-frame records (mergeable)
- ``evaluate``: a saved or registered model on a dataset split, through its input contract
- ``report``: ``evaluate --out``: frames.csv, ROC/PR curves, score histogram, operating table
- ``recalibrate``: ``jaffnet calibrate``: a new version with the same weights and a new rule
- ``overlays``: image | truth | heat map PNGs
"""
