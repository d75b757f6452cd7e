"""What a served model takes and gives, read from its MLflow signature.

`ModelIO` turns decoded request bodies (KServe V1 JSON, V2 tensors from JSON,
the binary extension or gRPC) into exactly the input the signature declares,
so the model sees what `mlflow.pyfunc.load_model(uri).predict(...)` would see
in-process, and turns whatever `predict` returns into V1 predictions or named
V2 outputs. Anything the model cannot take is a `PayloadError` naming the
request field, row and column; the server answers it with a 400.

Three kinds of model input:
- columns (a ColSpec signature): a pandas DataFrame with one column per spec,
  each of its declared type (double, float, long, integer, boolean, string,
  binary, datetime); optional columns may be left out of a request;
- tensors (a TensorSpec signature): a numpy array of the declared dtype and
  shape, or a dict of them for named tensors;
- unknown (no signature): records become a DataFrame, anything else a numpy
  array; only JSON well-formedness and the NaN policy are checked.

The modules, by responsibility:
- `schema`: the type tables, `InputSpec`, `V2Tensor` (one V2 input as sent), `ModelInput`;
- `inputs`: `ModelIO`, decoding V1 bodies and V2 tensors into model input, and stacking a micro-batch;
- `values` and `conversion`: validation, of values as sent and of values against their declared type;
- `outputs`: predictions as named `Output`s, and as V1 predictions, V2 outputs and V2 metadata.
"""

from sandbox.serving.model_io.inputs import ModelIO
from sandbox.serving.model_io.outputs import Output, model_outputs, v1_predictions, v2_outputs_json
from sandbox.serving.model_io.schema import V2_DTYPES, InputSpec, ModelInput, V2Tensor, v2_datatype

__all__ = [
    "V2_DTYPES",
    "InputSpec",
    "ModelIO",
    "ModelInput",
    "Output",
    "V2Tensor",
    "model_outputs",
    "v1_predictions",
    "v2_datatype",
    "v2_outputs_json",
]
