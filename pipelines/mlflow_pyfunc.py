"""MLflow "model from code" for a registered JAFFNet (no pickled objects).

MLflow loads this file as the model's code; the weights and config travel as the
``jaffnet`` artifact (a ``jaffnet.io.save_pretrained`` directory).
``predict`` takes ImageNet-normalised float32 ``(N, 3, H, W)`` input (see
``jaffnet.preprocess``) and returns defect probabilities ``(N, H, W)``.
"""

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel

from jaffnet.io import load_pretrained


class JAFFNetPyfunc(PythonModel):
    def load_context(self, context):
        self.model = load_pretrained(context.artifacts["jaffnet"])

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        with torch.inference_mode():
            logits = self.model(torch.as_tensor(np.asarray(model_input, dtype=np.float32)))
        return torch.sigmoid(logits)[:, 0].numpy()


mlflow.models.set_model(JAFFNetPyfunc())
