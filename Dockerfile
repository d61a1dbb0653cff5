# syntax=docker/dockerfile:1
# Build stage: wheels of the client stubs, the service and every dependency (generated/ is
# committed, so no protoc here).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY clients/python ./clients/python
COPY simplu_grpc ./simplu_grpc
COPY generated ./generated
RUN pip wheel --no-cache-dir --wheel-dir /wheels ./clients/python .

# Runtime stage: slim, non-root. The wheels are bind-mounted for the install, never copied,
# so no layer keeps them (a COPY + rm would leave them in the image's history).
FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home simplu
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels simplu-grpc
USER 10001
ENV GRPC_PORT=50051 METRICS_PORT=9464 PYTHONUNBUFFERED=1
EXPOSE 50051 9464
# SIGTERM: readiness goes NOT_SERVING, in-flight RPCs finish within SHUTDOWN_GRACE_SECONDS.
STOPSIGNAL SIGTERM
ENTRYPOINT ["simplu-grpc"]
CMD ["serve"]
