"""etcd's gRPC wire protocol: our .proto files, the generated code (``pb``) and converters.

Kept free of imports from ``pb`` so that ``python -m etcdlite.wire.regen`` runs even when the
generated code is missing or broken.
"""
