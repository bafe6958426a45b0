"""The code of the registered BitFit model (MLflow's models-from-code: the model is this file
and the bias artifact, nothing pickled). ``bitfit.registry`` logs it."""

from mlflow.models import set_model

from bitfit.registry import BitFitModel

set_model(BitFitModel())
