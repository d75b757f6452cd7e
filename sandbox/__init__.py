"""ML platform sandbox: a local-first testbed for MLflow, KFP, KServe, S3 and PostgreSQL."""

__version__ = "0.1.0"
