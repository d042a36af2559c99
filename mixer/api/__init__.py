"""The mixer's APIs: REST (`mixer.api.http`) and, later, gRPC (`mixer.api.grpc`).

Both answer errors through the one table in `mixer.api.errors`.
"""

from mixer.api.errors import ERROR_TABLE, ErrorKind, classify, to_problem

__all__ = ["ERROR_TABLE", "ErrorKind", "classify", "to_problem"]
