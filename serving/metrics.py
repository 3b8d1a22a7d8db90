"""Prometheus metrics of the ingress, through Ray Serve's metrics API.

Ray exports them (prefixed ``ray_``, tagged with the application, deployment and replica)
on each node's metrics port, next to Serve's own request metrics. Tags are kept to a few
values: the client's ``line`` is not a tag, since a client could invent any number of them.
"""

from __future__ import annotations

from serving.decision_log import StoreObserver

IMAGE_SCORE_BOUNDARIES = [0.05 * step for step in range(1, 20)]  # 0.05 .. 0.95


class InspectionMetrics(StoreObserver):
    """Created in the replica (Ray metrics need a running Ray worker)."""

    def __init__(self):
        from ray.serve.metrics import Counter, Gauge, Histogram

        self.decisions = Counter("jaffnet_decisions", description="inspection decisions by outcome and model version",
                                 tag_keys=("decision", "model_version"))
        self.image_scores = Histogram("jaffnet_image_score", description="image score (smoothed max) per frame",
                                      boundaries=IMAGE_SCORE_BOUNDARIES, tag_keys=("model_version",))
        self.log_queue = Gauge("jaffnet_decision_log_queue_depth",
                               description="decisions waiting for the decision log's writer")
        self.log_written = Counter("jaffnet_decision_log_written", description="decisions committed to the log")
        self.log_not_logged = Counter("jaffnet_decision_log_not_logged",
                                      description="decisions the log could not take, by kind (dropped writes)",
                                      tag_keys=("kind",))

    def decided(self, decision: str, model_version: str, image_score: float) -> None:
        self.decisions.inc(tags={"decision": decision, "model_version": model_version})
        self.image_scores.observe(image_score, tags={"model_version": model_version})

    # StoreObserver: called from the log's writer thread and from requests.
    def written(self, count: int) -> None:
        if count:
            self.log_written.inc(count)

    def not_logged(self, kind: str) -> None:
        self.log_not_logged.inc(tags={"kind": kind})

    def queue_depth(self, depth: int) -> None:
        self.log_queue.set(depth)
