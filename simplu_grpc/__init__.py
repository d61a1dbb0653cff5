"""simplu-grpc: the Simplu API as a gRPC service."""
