"""Six models logged the ways users log them, with requests and the model's own in-process answers.

Each `MatrixModel` knows its registered URI, a V1 body, V2 inputs (JSON tensors)
and what `mlflow.pyfunc.load_model(uri).predict(...)` returns for the same
rows in-process, so a served answer can be compared exactly.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import cloudpickle
import mlflow
import numpy as np
import pandas as pd

# PythonModels defined here must load in the model server's process, which cannot import tests/.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class ProbabilityModel(mlflow.pyfunc.PythonModel):
    """Class probabilities: a 2-D output."""

    def __init__(self, classifier):
        self.classifier = classifier

    def predict(self, context, model_input, params=None):
        return self.classifier.predict_proba(np.asarray(model_input, dtype=np.float64))


class LabelScoreModel(mlflow.pyfunc.PythonModel):
    """A DataFrame with a string label and a float score: two named outputs."""

    def predict(self, context, model_input, params=None):
        score = model_input["amount"].to_numpy(dtype=np.float64) * 0.5 + model_input["count"].to_numpy() * 0.25
        return pd.DataFrame({"label": np.where(score > 1.0, "high", "low"), "score": score})


class DigitsModel(mlflow.pyfunc.PythonModel):
    """An image-shaped tensor input (-1, 8, 8)."""

    def __init__(self, classifier):
        self.classifier = classifier

    def predict(self, context, model_input, params=None):
        return self.classifier.predict(np.asarray(model_input).reshape(len(model_input), -1))


@dataclass
class MatrixModel:
    key: str
    uri: str
    v1_body: dict[str, Any]
    v2_inputs: list[dict[str, Any]]
    expected: Any  # the in-process predict's result for those rows

    def expected_outputs(self) -> dict[str, np.ndarray]:
        """Expected answers by V2 output name."""
        if isinstance(self.expected, pd.DataFrame):
            return {str(c): self.expected[c].to_numpy() for c in self.expected.columns}
        return {"predict": np.asarray(self.expected)}

    def expected_v1(self) -> list:
        if isinstance(self.expected, pd.DataFrame):
            return self.expected.to_dict(orient="records")
        return np.asarray(self.expected).tolist()


def _register(name: str, log) -> str:
    with mlflow.start_run():
        info = log()
    version = mlflow.MlflowClient().search_model_versions(f"name = '{name}'", order_by=["version_number DESC"])[0]
    assert info.model_uri
    return f"models:/{name}/{version.version}"


def build_matrix(tracking_uri: str, prefix: str = "matrix") -> dict[str, MatrixModel]:
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(f"{prefix}-models")
    rng = np.random.default_rng(7)
    models: dict[str, MatrixModel] = {}

    def predict_in_process(uri: str, data: Any) -> Any:
        return mlflow.pyfunc.load_model(uri).predict(data)

    # 1. A RandomForest logged from numpy: a tensor signature (-1, 8) float64, as KServe's sklearn examples do.
    x = rng.normal(size=(300, 8))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(x, y)
    name = f"{prefix}-forest-numpy"
    uri = _register(
        name,
        lambda: mlflow.sklearn.log_model(
            forest, name="model", input_example=x[:3], registered_model_name=name, serialization_format="cloudpickle"
        ),
    )
    rows = x[:4]
    models["forest_numpy"] = MatrixModel(
        "forest_numpy",
        uri,
        {"instances": rows.tolist()},
        [{"name": "input-0", "shape": [4, 8], "datatype": "FP64", "data": rows.reshape(-1).tolist()}],
        predict_in_process(uri, rows),
    )

    # 2. An sklearn Pipeline, OneHotEncoder on a string column plus numeric columns, logged from pandas.
    frame = pd.DataFrame(
        {
            "city": rng.choice(["paris", "lyon", "nice"], size=300),
            "amount": rng.normal(50, 10, size=300),
            "count": rng.integers(0, 10, size=300),
        }
    )
    labels = ((frame["city"] == "paris") | (frame["amount"] > 55)).astype(int)
    pipeline = Pipeline(
        [
            (
                "encode",
                ColumnTransformer(
                    [("city", OneHotEncoder(handle_unknown="ignore"), ["city"])], remainder="passthrough"
                ),
            ),
            ("classify", LogisticRegression(max_iter=500)),
        ]
    ).fit(frame, labels)
    name = f"{prefix}-pipeline-onehot"
    uri = _register(
        name,
        lambda: mlflow.sklearn.log_model(
            pipeline,
            name="model",
            input_example=frame.head(3),
            registered_model_name=name,
            serialization_format="cloudpickle",
        ),
    )
    sample = frame.head(4)
    models["pipeline_onehot"] = MatrixModel(
        "pipeline_onehot",
        uri,
        {"instances": sample.to_dict(orient="records")},
        [
            {"name": "city", "shape": [4], "datatype": "BYTES", "data": sample["city"].tolist()},
            {"name": "amount", "shape": [4], "datatype": "FP64", "data": sample["amount"].tolist()},
            {"name": "count", "shape": [4], "datatype": "INT64", "data": sample["count"].tolist()},
        ],
        predict_in_process(uri, sample),
    )

    # 3. A PythonModel returning class probabilities (2-D), column signature of doubles.
    features = pd.DataFrame(rng.normal(size=(300, 4)), columns=["a", "b", "c", "d"])
    classifier = LogisticRegression(max_iter=500).fit(features.to_numpy(), rng.integers(0, 3, size=300))
    proba_model = ProbabilityModel(classifier)
    sample = features.head(4)
    name = f"{prefix}-pyfunc-proba"
    uri = _register(
        name,
        lambda: mlflow.pyfunc.log_model(
            name="model",
            python_model=proba_model,
            signature=infer_signature(sample, proba_model.predict(None, sample)),
            registered_model_name=name,
            pip_requirements=["scikit-learn"],
        ),
    )
    models["pyfunc_proba"] = MatrixModel(
        "pyfunc_proba",
        uri,
        {"instances": sample.to_numpy().tolist()},
        [{"name": "input-0", "shape": [4, 4], "datatype": "FP64", "data": sample.to_numpy().reshape(-1).tolist()}],
        predict_in_process(uri, sample),
    )

    # 4. A PythonModel returning a DataFrame with a string label and a float score.
    label_frame = frame[["amount", "count"]].head(4)
    label_model = LabelScoreModel()
    name = f"{prefix}-pyfunc-frame"
    uri = _register(
        name,
        lambda: mlflow.pyfunc.log_model(
            name="model",
            python_model=label_model,
            signature=infer_signature(label_frame, label_model.predict(None, label_frame)),
            registered_model_name=name,
            pip_requirements=["pandas"],
        ),
    )
    models["pyfunc_frame"] = MatrixModel(
        "pyfunc_frame",
        uri,
        {"instances": label_frame.to_dict(orient="records")},
        [
            {"name": "amount", "shape": [4], "datatype": "FP64", "data": label_frame["amount"].tolist()},
            {"name": "count", "shape": [4], "datatype": "INT64", "data": label_frame["count"].tolist()},
        ],
        predict_in_process(uri, label_frame),
    )

    # 5. Neither signature nor input example.
    plain = LogisticRegression(max_iter=500).fit(x[:, :4], y)
    name = f"{prefix}-no-signature"
    uri = _register(
        name,
        lambda: mlflow.sklearn.log_model(
            plain, name="model", registered_model_name=name, serialization_format="cloudpickle"
        ),
    )
    rows = x[:4, :4]
    models["no_signature"] = MatrixModel(
        "no_signature",
        uri,
        {"instances": rows.tolist()},
        [{"name": "input-0", "shape": [4, 4], "datatype": "FP64", "data": rows.reshape(-1).tolist()}],
        predict_in_process(uri, rows),
    )

    # 6. An image-shaped tensor model: sklearn's digits, (-1, 8, 8).
    digits = load_digits()
    images = digits.images.astype(np.float64)
    digit_classifier = LogisticRegression(max_iter=2000).fit(images.reshape(len(images), -1), digits.target)
    digits_model = DigitsModel(digit_classifier)
    sample = images[:3]
    name = f"{prefix}-digits"
    uri = _register(
        name,
        lambda: mlflow.pyfunc.log_model(
            name="model",
            python_model=digits_model,
            signature=infer_signature(sample, digits_model.predict(None, sample)),
            registered_model_name=name,
            pip_requirements=["scikit-learn"],
        ),
    )
    models["digits"] = MatrixModel(
        "digits",
        uri,
        {"instances": sample.tolist()},
        [{"name": "input-0", "shape": [3, 8, 8], "datatype": "FP64", "data": sample.reshape(-1).tolist()}],
        predict_in_process(uri, sample),
    )
    return models
