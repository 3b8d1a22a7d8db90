"""Stand-in model deployments whose right answer is known to the pixel."""

import numpy as np

from jaffnet.contract import InputContract
from jaffnet.decision import DecisionRule

TILE = 64
PROBE_CONTRACT = InputContract(image_size=TILE, mode="tile", tile_overlap=0.25)


def bright_spot_model():
    from ray import serve

    @serve.deployment(max_ongoing_requests=32)
    class BrightSpotModel:
        """Probability 1 where all three channels exceed 200, else 0."""

        def info(self) -> dict:
            return {"name": "bright-spot", "version": "0", "run_id": None, "threshold": 0.5, "image_size": TILE,
                    "contract": PROBE_CONTRACT.to_dict(),
                    "rule": DecisionRule(pixel_threshold=0.5, image_threshold=0.5).to_dict(),
                    "metrics": {}, "backend": "numpy", "device": "cpu"}

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
        async def predict_input(self, tiles):
            return [{"probability": (t.min(axis=2) > 200).astype(np.float32), "batch_size": len(tiles)}
                    for t in tiles]

    return BrightSpotModel
