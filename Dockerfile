# syntax=docker/dockerfile:1
# Build stage: a wheel of the service (generated/ is committed, so no protoc here).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY simplu_grpc ./simplu_grpc
COPY generated ./generated
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: slim, non-root, only the wheels.
FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home simplu
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
ENV GRPC_PORT=50051 METRICS_PORT=9464 PYTHONUNBUFFERED=1
EXPOSE 50051 9464
# SIGTERM: readiness goes NOT_SERVING, in-flight RPCs finish within SHUTDOWN_GRACE_SECONDS.
STOPSIGNAL SIGTERM
ENTRYPOINT ["simplu-grpc"]
CMD ["serve"]
