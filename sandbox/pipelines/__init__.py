"""Kubeflow Pipelines definitions the sandbox runs: the training pipeline."""
