"""Where a model server keeps its model's files: the folder it is given, emptied first; never a stray temp folder."""

from __future__ import annotations

from sandbox.serving.mlflow_model import MLflowModel


def test_the_model_is_downloaded_into_the_given_folder_replacing_an_earlier_copy(matrix, tmp_path):
    model = next(iter(matrix.values()))
    folder = tmp_path / "deployment" / "model"
    folder.mkdir(parents=True)
    (folder / "from-an-earlier-version.txt").write_text("stale")
    server = MLflowModel(model.name, model.uri, model_dir=folder)
    assert server.load()
    assert list(folder.rglob("MLmodel"))  # (a local path is copied into a sub-folder of its name)
    assert not (folder / "from-an-earlier-version.txt").exists()
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
