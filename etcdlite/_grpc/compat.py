"""The one version guard for the grpclib, h2 and hpack internals etcdlite's fast path uses.

Every private name the fast path touches is listed in :data:`REQUIRED` (classes and their
methods) and :data:`INSTANCE_ATTRIBUTES` (attributes grpclib sets in ``__init__``, checked
on live objects the first time a connection is made). The versions in :data:`TESTED` are
the ranges the suite has run against. Outside them, or with a name missing, etcdlite warns
once and every connection uses grpclib's public path instead: slower, same answers.
``ETCDLITE_FAST_PATH=0`` forces that path without a warning (CI runs the parity suite so).
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import warnings
from typing import Any

__all__ = [
    "INSTANCE_ATTRIBUTES",
    "REQUIRED",
    "TESTED",
    "fast_path_enabled",
    "missing_attributes",
    "warn_off",
]

#: Distribution → [lowest, highest) version tuples checked by the suite.
TESTED: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "grpclib": ((0, 4, 7), (0, 5)),
    "h2": ((4, 1), (5,)),
    "hpack": ((4, 0), (5,)),
}

#: (module, class, attribute) for every class-level name the fast path relies on.
REQUIRED: tuple[tuple[str, str, str], ...] = (
    ("grpclib.server", "Server", "_protocol_factory"),
    ("grpclib.server", "Server", "__gc_step__"),
    ("grpclib.server", "Handler", "accept"),
    ("grpclib.server", "Handler", "cancel"),
    ("grpclib.server", "Handler", "__gc_step__"),
    ("grpclib.protocol", "H2Protocol", "connection_made"),
    ("grpclib.protocol", "Stream", "recv_data"),
    ("grpclib.protocol", "Stream", "reset_nowait"),
    ("grpclib.protocol", "Stream", "closable"),
    ("grpclib.protocol", "Connection", "data_send_process"),
    ("grpclib.client", "Channel", "_protocol_factory"),
    # the Client's lean unary call (call.py) and its held PING ACKs (transport.py)
    ("grpclib.client", "Channel", "__connect__"),
    ("grpclib.protocol", "Connection", "ack"),
    ("grpclib.protocol", "Connection", "headers_send_process"),
    ("grpclib.protocol", "EventsProcessor", "register"),
    ("h2.connection", "H2Connection", "get_next_available_stream_id"),
    ("h2.connection", "H2Connection", "send_data"),
    ("h2.connection", "H2Connection", "reset_stream"),
    ("h2.frame_buffer", "FrameBuffer", "__next__"),
    ("h2.connection", "H2Connection", "send_headers"),
    ("h2.connection", "H2Connection", "data_to_send"),
    ("h2.connection", "H2Connection", "local_flow_control_window"),
    ("h2.stream", "StreamState", "OPEN"),
    ("h2.stream", "StreamState", "HALF_CLOSED_REMOTE"),
    ("h2.stream", "StreamState", "HALF_CLOSED_LOCAL"),
    ("h2.connection", "ConnectionState", "CLIENT_OPEN"),
    ("h2.windows", "WindowManager", "window_consumed"),
    ("grpclib.protocol", "EventsProcessor", "process"),
    # the Client's request frames (request.py)
    ("h2.connection", "H2Connection", "_begin_new_stream"),
    ("h2.connection", "H2Connection", "open_outbound_streams"),
    ("h2.connection", "ConnectionInputs", "SEND_HEADERS"),
    ("h2.connection", "ConnectionInputs", "SEND_DATA"),
    ("h2.connection", "AllowedStreamIDs", "ODD"),
    ("h2.stream", "StreamInputs", "SEND_HEADERS"),
    ("h2.stream", "StreamInputs", "SEND_DATA"),
    ("h2.stream", "StreamInputs", "SEND_END_STREAM"),
    # the server's reply headers and once-checked received lists (headers.py)
    ("h2.stream", "H2Stream", "_process_received_headers"),
    ("hpack", "Decoder", "decode"),
    ("hpack", "Encoder", "encode"),
)

#: Attributes grpclib and h2 set per instance (kind → names): checked on probe objects
#: built without a socket (:func:`_probe`), and on the live server and handler.
INSTANCE_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "Server": (
        "_mapping",
        "_codec",
        "_status_details_codec",
        "_config",
        "_h2_config",
        "_handlers",
        "_server",
        "__dispatch__",
    ),
    "Handler": ("_tasks", "codec", "loop"),
    "Stream": ("_h2_connection", "_transport", "connection", "window_updated"),
    "ServerStream": ("_stream", "_codec", "_recv_type"),
    "Connection": (
        "_connection",
        "_transport",
        "write_ready",
        "stream_close_waiter",
        "data_received",
        "last_data_received",
    ),
    # checked on the Client's live channels (building one outside a loop would make one)
    "Channel": ("_scheme", "_authority"),
    "H2Connection": (
        "streams",
        "outbound_flow_control_window",
        "decoder",
        "encoder",
        "local_settings",
        "max_outbound_frame_size",
        "remote_settings",
        "state_machine",
        "incoming_buffer",
        "_frame_dispatch_table",
        # the Client's receive path (receive.py)
        "max_inbound_frame_size",
        "_inbound_flow_control_window_manager",
        # the server's request intake (intake.py, taken.py)
        "highest_inbound_stream_id",
        "_closed_streams",
    ),
    "H2Stream": (
        "state_machine",
        "outbound_flow_control_window",
        "_inbound_window_manager",
        "_expected_content_length",
        "_actual_content_length",
        "_authority",
        "request_method",
    ),
    "HeaderTable": ("resized",),
    # the receive paths move a stream's state machine as h2's receive_headers does
    "H2StreamStateMachine": ("state", "headers_received"),
}


def missing_attributes(kind: str, obj: Any) -> list[str]:
    """The per-instance attributes of ``kind`` that ``obj`` lacks."""
    return [f"{kind}.{a}" for a in INSTANCE_ATTRIBUTES[kind] if not hasattr(obj, a)]


def _probe() -> list[str]:
    """Build grpclib's and h2's per-connection objects without a socket and check them."""
    from grpclib.config import Configuration
    from grpclib.const import Cardinality
    from grpclib.protocol import Connection, Stream
    from grpclib.server import Stream as ServerStream
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.stream import H2Stream

    h2conn = H2Connection(H2Configuration(client_side=False))
    transport: Any = None
    conn = Connection(h2conn, transport, config=Configuration().__for_server__())
    stream = Stream(conn, h2conn, transport)
    h2stream = H2Stream(1, h2conn.config, 65535, 65535)
    none: Any = None
    server_stream = ServerStream(
        stream,
        "/probe",
        Cardinality.UNARY_UNARY,
        bytes,
        bytes,
        codec=none,
        status_details_codec=None,
        dispatch=none,
    )
    return [
        *missing_attributes("ServerStream", server_stream),
        *missing_attributes("H2Connection", h2conn),
        *missing_attributes("Connection", conn),
        *missing_attributes("Stream", stream),
        *missing_attributes("H2Stream", h2stream),
        *missing_attributes("HeaderTable", h2conn.encoder.header_table),
        *missing_attributes("H2StreamStateMachine", h2stream.state_machine),
    ]


def _version(dist: str) -> tuple[int, ...] | None:
    try:
        text = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    parts: list[int] = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _problems() -> list[str]:
    problems = []
    for dist, (low, high) in TESTED.items():
        version = _version(dist)
        if version is None or not low <= version < high:
            problems.append(f"{dist} {version} is outside the tested range {low}..{high}")
    for module_name, class_name, attr in REQUIRED:
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            problems.append(f"{module_name}.{class_name} is missing")
            continue
        if not hasattr(cls, attr):
            problems.append(f"{module_name}.{class_name}.{attr} is missing")
    if not problems:
        try:
            problems += _probe()
        except Exception as e:  # a constructor whose signature moved
            problems.append(f"building grpclib's protocol objects failed: {e!r}")
    return problems


def warn_off(problems: list[str]) -> None:
    """Say once, as a ``RuntimeWarning``, why the fast path is off."""
    warnings.warn(
        "etcdlite: the HTTP/2 fast path is off, grpclib's own path serves every request "
        f"({'; '.join(problems)})",
        RuntimeWarning,
        stacklevel=3,
    )


@functools.cache
def fast_path_enabled() -> bool:
    """Whether connections use the fast path (decided once per process)."""
    if os.environ.get("ETCDLITE_FAST_PATH", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    problems = _problems()
    if problems:
        warn_off(problems)
        return False
    return True
