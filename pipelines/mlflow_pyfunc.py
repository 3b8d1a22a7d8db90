"""MLflow "model from code" for a registered JAFFNet (no pickled objects).

MLflow loads this file as the model's code; the weights and config travel as the
``jaffnet`` artifact (a ``jaffnet.io.save_pretrained`` directory).
``predict`` takes float32 ``(N, 3, H, W)`` input normalised as the model's input contract
says (``jaffnet.preprocess.normalize``) and returns defect probabilities ``(N, H, W)``.
"""

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

from jaffnet.inference import build_predictor
from jaffnet.io import load_pretrained


class JAFFNetPyfunc(PythonModel):
    def load_context(self, context):
        self.predictor = build_predictor(load_pretrained(context.artifacts["jaffnet"]), "eager")

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        return self.predictor(np.asarray(model_input, dtype=np.float32))


mlflow.models.set_model(JAFFNetPyfunc())
