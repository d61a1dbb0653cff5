"""gRPC server interceptors: request log, metrics, auth, error mapping."""
