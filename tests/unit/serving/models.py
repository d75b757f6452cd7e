"""Six models saved the ways users log them, with requests and the model's own in-process answers.

Each `MatrixModel` knows the folder it was saved to (what the model server loads, as it would load
`models:/NAME/N`), a V1 body, V2 inputs (JSON tensors) and what `mlflow.pyfunc.load_model(folder).predict(...)`
returns for the same rows, so a served answer can be compared exactly. No tracking server: `save_model` writes
the same MLmodel folder `log_model` uploads.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import mlflow
import numpy as np
import pandas as pd

# The PythonModels below are pickled by value, so a saved model loads in a process that cannot import tests/.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

KEYS = ["forest_numpy", "pipeline_onehot", "pyfunc_proba", "pyfunc_frame", "no_signature", "digits"]


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
    uri: str  # the saved model's folder: what `mlflow.pyfunc.load_model` (and so the model server) loads
    v1_body: dict[str, Any]
    v2_inputs: list[dict[str, Any]]
    expected: Any  # the in-process predict's result for those rows

    @property
    def name(self) -> str:
        """The name it is served under (as `serve deploy m-...` named it on the real stack)."""
        return "m-" + self.key.replace("_", "-")

    def expected_outputs(self) -> dict[str, np.ndarray]:
        """Expected answers by V2 output name."""
        if isinstance(self.expected, pd.DataFrame):
            return {str(c): self.expected[c].to_numpy() for c in self.expected.columns}
        return {"predict": np.asarray(self.expected)}

    def expected_v1(self) -> list:
        if isinstance(self.expected, pd.DataFrame):
            return self.expected.to_dict(orient="records")
        return np.asarray(self.expected).tolist()


def build_matrix(folder: Path) -> dict[str, MatrixModel]:
    """Train and save the six models under `folder`, one sub-folder each."""
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(7)
    models: dict[str, MatrixModel] = {}

    def saved(key: str, save) -> str:
        path = str(folder / key)
        save(path)
        return path

    def predict_in_process(uri: str, data: Any) -> Any:
        return mlflow.pyfunc.load_model(uri).predict(data)

    # 1. A RandomForest saved from numpy: a tensor signature (-1, 8) float64, as KServe's sklearn examples do.
    x = rng.normal(size=(300, 8))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(x, y)
    uri = saved(
        "forest_numpy",
        lambda path: mlflow.sklearn.save_model(
            forest, path, input_example=x[:3], serialization_format="cloudpickle", pip_requirements=["scikit-learn"]
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

    # 2. An sklearn Pipeline, OneHotEncoder on a string column plus numeric columns, saved from pandas.
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
    uri = saved(
        "pipeline_onehot",
        lambda path: mlflow.sklearn.save_model(
            pipeline,
            path,
            input_example=frame.head(3),
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn"],
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
    uri = saved(
        "pyfunc_proba",
        lambda path: mlflow.pyfunc.save_model(
            path,
            python_model=proba_model,
            signature=infer_signature(sample, proba_model.predict(None, sample)),
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
    uri = saved(
        "pyfunc_frame",
        lambda path: mlflow.pyfunc.save_model(
            path,
            python_model=label_model,
            signature=infer_signature(label_frame, label_model.predict(None, label_frame)),
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
    uri = saved(
        "no_signature",
        lambda path: mlflow.sklearn.save_model(
            plain, path, serialization_format="cloudpickle", pip_requirements=["scikit-learn"]
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
    uri = saved(
        "digits",
        lambda path: mlflow.pyfunc.save_model(
            path,
            python_model=digits_model,
            signature=infer_signature(sample, digits_model.predict(None, sample)),
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
    assert list(models) == KEYS
    return models
