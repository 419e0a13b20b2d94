# Taskmaster's commands (tm-master, tm-slave, tm-spawn, tm-run, tm-status)
# in a container image.
#
#   docker build -t taskmaster:1.0.0 .
#   docker run --rm taskmaster:1.0.0 tm-run taskmaster.example 2
#
# Your job module goes in an image built FROM this one (COPY jobs.py /app/),
# or is mounted at run time.  No secret is in the image: mount it (a
# Kubernetes Secret, a Compose secret) and point TASKMASTER_SECRET_FILE at it.

# The base image, pinned to an exact Python release and Debian suite (both
# stages use the very same one).  Pin it by digest too where you build:
#   docker buildx imagetools inspect python:3.12.10-slim-bookworm   # Digest: sha256:...
#   docker build --build-arg PYTHON_IMAGE=python:3.12.10-slim-bookworm@sha256:<digest> ...
ARG PYTHON_IMAGE=python:3.12.10-slim-bookworm

# --- build: a wheel from this checkout ---------------------------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- run -----------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TASKMASTER_NO_PROGRESS=1
# A fixed, unprivileged user: Kubernetes' runAsUser and fsGroup name it by number.
RUN groupadd --gid 10001 taskmaster \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin taskmaster \
    && mkdir -p /app /var/lib/taskmaster \
    && chown taskmaster:taskmaster /var/lib/taskmaster
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# The master's state and failures files: mount a volume here.
WORKDIR /var/lib/taskmaster
ENV PYTHONPATH=/app
USER 10001:10001
CMD ["tm-master", "--help"]
