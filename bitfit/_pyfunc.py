"""The code of the registered BitFit model (MLflow's models-from-code: the model is this file
and the bias artifact, nothing pickled). ``bitfit.registry`` logs it with a copy of the bitfit
package as the model's code, so ``bitfit`` below is the model's own wherever it is served."""

from mlflow.models import set_model

from bitfit.registry import BitFitModel

set_model(BitFitModel())
