"""etcd's errors, one exception class each, with etcd's gRPC status code and exact message.

etcd reports every failure as a gRPC status; its Go client maps the *message text* back to a
typed error (``rpctypes``), python-etcd3 and aetcd map on the code. etcdlite raises the same
classes from the embedded :class:`~etcdlite.Store`, from :class:`~etcdlite.Client` talking to
any etcd, and its server sends the same code and text, so code that handles one handles all.

Messages are kept verbatim in this one module: the exception classes' ``message``, and the
texts below that are not exceptions of their own (watch cancel reasons, the texts of Go's
protobuf decoder and of grpc-go's transport). Everywhere else refers to them by name.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar

__all__ = [
    "ELECTION_SESSION_EXPIRED",
    "GATEWAY_COMMON_NAME",
    "GO_CODE_NAMES",
    "GRPC_MESSAGE_TOO_LARGE",
    "GRPC_NOT_IMPLEMENTED",
    "GRPC_STREAM_UNMARSHAL_FAILED",
    "GRPC_UNKNOWN_METHOD",
    "GRPC_UNKNOWN_SERVICE",
    "GRPC_UNMARSHAL_FAILED",
    "PROTO_ILLEGAL_TAG",
    "PROTO_INTEGER_OVERFLOW",
    "PROTO_UNEXPECTED_EOF",
    "PROTO_WRONG_WIRE_TYPE",
    "TLS_CLIENT_CERT_AUTH_IGNORED",
    "TLS_FILES_IGNORED",
    "TLS_FILES_REQUIRED",
    "WATCH_CANCELED",
    "WATCH_DUPLICATE_ID",
    "WATCH_EMPTY_RANGE",
    "AuthFailedError",
    "AuthNotEnabledError",
    "AuthOldRevisionError",
    "BadLeaderTransfereeError",
    "CompactedError",
    "DeadlineExceededError",
    "DuplicateKeyError",
    "ElectionNoLeaderError",
    "ElectionNotLeaderError",
    "EmptyKeyError",
    "EtcdError",
    "FutureRevisionError",
    "GrpcCompressedFlagError",
    "GrpcCompressedMessageError",
    "GrpcInternalServerError",
    "GrpcMissingMessageError",
    "GrpcTruncatedMessageError",
    "InvalidAuthMgmtError",
    "InvalidAuthTokenError",
    "KeyNotFoundError",
    "LeaderChangedError",
    "LeaseExistsError",
    "LeaseNotFoundError",
    "LeaseProvidedError",
    "LeaseTTLTooLargeError",
    "LockTimeoutError",
    "MaintenanceInvalidAuthTokenError",
    "MaintenancePermissionDeniedError",
    "MaintenanceUserEmptyError",
    "MaintenanceUserNotFoundError",
    "MemberNotFoundError",
    "MemberNotLearnerError",
    "MissingLeaderKeyError",
    "NoLeaderError",
    "NoPasswordUserError",
    "NoSpaceError",
    "PermissionDeniedError",
    "PermissionNotGrantedError",
    "RequestTooLargeError",
    "RoleAlreadyExistError",
    "RoleEmptyError",
    "RoleNotFoundError",
    "RoleNotGrantedError",
    "RootRoleNotExistError",
    "RootUserNotExistError",
    "ServerStoppedError",
    "SessionExpiredError",
    "StatusCode",
    "TimeoutError_",
    "TooManyOpsError",
    "TooManyRequestsError",
    "UnavailableError",
    "UserAlreadyExistError",
    "UserEmptyError",
    "UserNotFoundError",
    "ValueProvidedError",
    "WatchCanceledError",
    "WatchClusterChangedError",
    "WatchCompactedError",
    "error_from_go_status_text",
    "error_from_status",
    "go_status_text",
]


class StatusCode(IntEnum):
    """gRPC status codes (same numbers as ``grpclib.Status`` and grpc-go's ``codes``)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class EtcdError(Exception):
    """Base of every etcd error: ``code`` is the gRPC status, ``message`` etcd's exact text.

    A status that etcdlite does not know by text (e.g. a transport failure reported by a
    client) is raised as a plain ``EtcdError`` carrying that code and text.
    """

    code: StatusCode = StatusCode.UNKNOWN
    message: str = ""
    _by_message: ClassVar[dict[str, type[EtcdError]]] = {}

    def __init__(self, message: str | None = None, code: StatusCode | None = None) -> None:
        if message is not None:
            self.message = message
        if code is not None:
            self.code = code
        super().__init__(self.message)

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "message" in cls.__dict__:
            EtcdError._by_message[cls.message] = cls

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message, self.code))


#: etcd's answer (HTTP 400, text) to a gateway request made with a client certificate that
#: has a CN, when auth and ``--client-cert-auth`` are on.
GATEWAY_COMMON_NAME = (
    "CommonName of client sending a request against gateway will be ignored and not used "
    "as expected\n"
)

#: grpc-go's names of the status codes (``codes.Code.String()``).
GO_CODE_NAMES = (
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
)


def go_status_text(e: EtcdError) -> str:
    """``e`` as grpc-go prints a status error (etcd's watch cancel reasons carry this)."""
    return f"rpc error: code = {GO_CODE_NAMES[int(e.code)]} desc = {e.message}"


def error_from_go_status_text(text: str) -> EtcdError | None:
    """The error :func:`go_status_text` printed, or None if ``text`` is not one."""
    prefix = "rpc error: code = "
    if not text.startswith(prefix):
        return None
    name, sep, message = text[len(prefix) :].partition(" desc = ")
    if not sep or name not in GO_CODE_NAMES:
        return None
    return error_from_status(GO_CODE_NAMES.index(name), message)


def error_from_status(code: int, message: str) -> EtcdError:
    """The exception for a gRPC status, matched on the message text as clientv3 does."""
    cls = EtcdError._by_message.get(message)
    if cls is not None and cls.code == code:
        return cls()
    try:
        status = StatusCode(code)
    except ValueError:
        status = StatusCode.UNKNOWN
    if status == StatusCode.UNAVAILABLE:
        return UnavailableError(message)
    return EtcdError(message, status)


# --- texts that are not exceptions of their own ------------------------------------------

#: A watch cancelled by the server without a more specific reason.
WATCH_CANCELED = "etcdserver: watch canceled"
#: ``cancel_reason`` of a watch create whose range is empty (``range_end`` before ``key``).
WATCH_EMPTY_RANGE = "mvcc: watcher range is empty"
#: ``cancel_reason`` of a watch create reusing a client-chosen id live on the stream.
WATCH_DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"
#: Go's election recipe, when its session's lease is gone.
ELECTION_SESSION_EXPIRED = "election: session is expired"

# Go's protobuf decoder (gogo), as etcd reports a malformed request.
PROTO_UNEXPECTED_EOF = "unexpected EOF"
PROTO_INTEGER_OVERFLOW = "proto: integer overflow"
PROTO_ILLEGAL_TAG = "proto: {message}: illegal tag {number} (wire type {wire})"
PROTO_WRONG_WIRE_TYPE = "proto: wrong wireType = {wire} for field {field}"

# grpc-go's server transport.
GRPC_UNMARSHAL_FAILED = "grpc: error unmarshalling request: {error}"
GRPC_STREAM_UNMARSHAL_FAILED = "grpc: failed to unmarshal the received message {error}"
GRPC_MESSAGE_TOO_LARGE = "grpc: received message larger than max ({size} vs. {limit})"
GRPC_UNKNOWN_METHOD = "unknown method {method} for service {service}"
GRPC_UNKNOWN_SERVICE = "unknown service {service}"
GRPC_NOT_IMPLEMENTED = "method {method} not implemented"

# etcd's start-up texts for TLS flags (etcdmain / embed, 3.4; "peer" is really in the text).
TLS_FILES_REQUIRED = (
    "TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme"
)
TLS_FILES_IGNORED = (
    "The scheme of client url {url} is HTTP while peer key/cert files are presented. "
    "Ignored key/cert files."
)
TLS_CLIENT_CERT_AUTH_IGNORED = (
    "The scheme of client url {url} is HTTP while client cert auth (--client-cert-auth) "
    "is enabled. Ignored client cert auth for this url."
)


# --- KV / lease errors (identical in etcd 3.4, 3.5, 3.6) ----------------------------------


class EmptyKeyError(EtcdError, ValueError):
    code = StatusCode.INVALID_ARGUMENT
    message = "etcdserver: key is not provided"


class KeyNotFoundError(EtcdError, ValueError):
    """``ignore_value``/``ignore_lease`` on a missing key, or a txn op with no request."""

    code = StatusCode.INVALID_ARGUMENT
    message = "etcdserver: key not found"


class ValueProvidedError(EtcdError, ValueError):
    code = StatusCode.INVALID_ARGUMENT
    message = "etcdserver: value is provided"


class LeaseProvidedError(EtcdError, ValueError):
    code = StatusCode.INVALID_ARGUMENT
    message = "etcdserver: lease is provided"


class TooManyOpsError(EtcdError, ValueError):
    code = StatusCode.INVALID_ARGUMENT
    message = "etcdserver: too many operations in txn request"


class DuplicateKeyError(EtcdError, ValueError):
    code = StatusCode.INVALID_ARGUMENT
    message = "etcdserver: duplicate key given in txn request"


class CompactedError(EtcdError):
    """The requested revision is older than the compacted revision."""

    code = StatusCode.OUT_OF_RANGE
    message = "etcdserver: mvcc: required revision has been compacted"


class FutureRevisionError(EtcdError):
    code = StatusCode.OUT_OF_RANGE
    message = "etcdserver: mvcc: required revision is a future revision"


class NoSpaceError(EtcdError):
    code = StatusCode.RESOURCE_EXHAUSTED
    message = "etcdserver: mvcc: database space exceeded"


class LeaseNotFoundError(EtcdError, LookupError):
    code = StatusCode.NOT_FOUND
    message = "etcdserver: requested lease not found"


class LeaseExistsError(EtcdError):
    code = StatusCode.FAILED_PRECONDITION
    message = "etcdserver: lease already exists"


class LeaseTTLTooLargeError(EtcdError, ValueError):
    code = StatusCode.OUT_OF_RANGE
    message = "etcdserver: too large lease TTL"


class RequestTooLargeError(EtcdError, ValueError):
    code = StatusCode.INVALID_ARGUMENT
    message = "etcdserver: request is too large"


class TooManyRequestsError(EtcdError):
    code = StatusCode.RESOURCE_EXHAUSTED
    message = "etcdserver: too many requests"


# --- cluster / server-state errors a client may see -------------------------------------


class UnavailableError(EtcdError):
    """Base of the UNAVAILABLE family (no leader, leader changed, timeouts, stopped)."""

    code = StatusCode.UNAVAILABLE


class NoLeaderError(UnavailableError):
    message = "etcdserver: no leader"


class LeaderChangedError(UnavailableError):
    message = "etcdserver: leader changed"


class TimeoutError_(UnavailableError):
    message = "etcdserver: request timed out"


class ServerStoppedError(UnavailableError):
    message = "etcdserver: server stopped"


# --- cluster, maintenance and auth answers of a single-member server ---------------------


class BadLeaderTransfereeError(EtcdError):
    code = StatusCode.FAILED_PRECONDITION
    message = "etcdserver: bad leader transferee"


class MemberNotLearnerError(EtcdError):
    code = StatusCode.FAILED_PRECONDITION
    message = "etcdserver: can only promote a learner member"


class MemberNotFoundError(EtcdError, LookupError):
    code = StatusCode.NOT_FOUND
    message = "etcdserver: member not found"


class AuthNotEnabledError(EtcdError):
    code = StatusCode.FAILED_PRECONDITION
    message = "etcdserver: authentication is not enabled"


class RootUserNotExistError(EtcdError):
    code = StatusCode.FAILED_PRECONDITION
    message = "etcdserver: root user does not exist"


# --- what a Client sees of an etcd with auth, and of its own deadline ----------------------


class DeadlineExceededError(EtcdError, TimeoutError):
    """A call (retries included) did not end within the Client's ``timeout``.

    Go's client reports ``context.DeadlineExceeded`` here; this is also a ``TimeoutError``
    (what a single-endpoint Client raised before), and not an ``UnavailableError``.
    """

    code = StatusCode.DEADLINE_EXCEEDED


class InvalidAuthTokenError(EtcdError):
    """The token expired or is unknown to this member: clientv3 re-authenticates and retries."""

    code = StatusCode.UNAUTHENTICATED
    message = "etcdserver: invalid auth token"


class AuthOldRevisionError(EtcdError):
    code = StatusCode.INVALID_ARGUMENT
    message = "etcdserver: revision of auth store is old"


class UserEmptyError(EtcdError):
    code = StatusCode.INVALID_ARGUMENT
    message = "etcdserver: user name is empty"


class AuthFailedError(EtcdError):
    """A wrong user name or password."""

    code = StatusCode.INVALID_ARGUMENT
    message = "etcdserver: authentication failed, invalid user ID or password"


class RootRoleNotExistError(EtcdError):
    """AuthEnable when user ``root`` lacks role ``root`` (etcdctl hides it: it grants the
    role and retries)."""

    code = StatusCode.FAILED_PRECONDITION
    message = "etcdserver: root user does not have root role"


class UserAlreadyExistError(EtcdError):
    code = StatusCode.FAILED_PRECONDITION
    message = "etcdserver: user name already exists"


class UserNotFoundError(EtcdError, LookupError):
    code = StatusCode.FAILED_PRECONDITION
    message = "etcdserver: user name not found"


class RoleAlreadyExistError(EtcdError):
    code = StatusCode.FAILED_PRECONDITION
    message = "etcdserver: role name already exists"


class RoleNotFoundError(EtcdError, LookupError):
    code = StatusCode.FAILED_PRECONDITION
    message = "etcdserver: role name not found"


class RoleEmptyError(EtcdError):
    code = StatusCode.INVALID_ARGUMENT
    message = "etcdserver: role name is empty"


class PermissionDeniedError(EtcdError, PermissionError):
    code = StatusCode.PERMISSION_DENIED
    message = "etcdserver: permission denied"


class RoleNotGrantedError(EtcdError):
    code = StatusCode.FAILED_PRECONDITION
    message = "etcdserver: role is not granted to the user"


class PermissionNotGrantedError(EtcdError):
    code = StatusCode.FAILED_PRECONDITION
    message = "etcdserver: permission is not granted to the role"


class InvalidAuthMgmtError(EtcdError):
    """Deleting user or role ``root``, or revoking ``root`` from ``root``, while auth is on."""

    code = StatusCode.INVALID_ARGUMENT
    message = "etcdserver: invalid auth management"


class NoPasswordUserError(AuthFailedError):
    """A password given for a user added with ``no_password`` (a certificate-only user).
    etcd does not map this error to a status: it leaves as UNKNOWN with the auth store's
    text."""

    code = StatusCode.UNKNOWN
    message = "auth: authentication failed, password was given for no password user"


# etcd 3.4's Maintenance server (Defragment, Hash, HashKV, Snapshot) returns the auth store's
# errors unmapped: UNKNOWN with the store's ``auth:`` text. Each subclasses the error it is
# elsewhere, so ``except PermissionDeniedError`` catches both renderings.


class MaintenanceUserEmptyError(UserEmptyError):
    code = StatusCode.UNKNOWN
    message = "auth: user name is empty"


class MaintenancePermissionDeniedError(PermissionDeniedError):
    code = StatusCode.UNKNOWN
    message = "auth: permission denied"


class MaintenanceInvalidAuthTokenError(InvalidAuthTokenError):
    code = StatusCode.UNKNOWN
    message = "auth: invalid auth token"


class MaintenanceUserNotFoundError(UserNotFoundError):
    code = StatusCode.UNKNOWN
    message = "auth: user not found"


# --- grpc-go's answers to a request that is not well-formed gRPC --------------------------


class GrpcMissingMessageError(EtcdError):
    """A unary request that ended without its message."""

    code = StatusCode.INTERNAL
    message = "grpc: error while receiving request: EOF"


class GrpcTruncatedMessageError(EtcdError):
    """The stream ended inside a message (its prefix announced more bytes than came):
    UNKNOWN on a unary RPC, INTERNAL on a streaming one, as grpc-go answers."""

    code = StatusCode.UNKNOWN
    message = PROTO_UNEXPECTED_EOF


class GrpcCompressedMessageError(EtcdError):
    """A request naming a compression (``grpc-encoding``): etcd installs no decompressor."""

    code = StatusCode.UNIMPLEMENTED
    message = 'grpc: Decompressor is not installed for grpc-encoding "gzip"'

    def __init__(self, encoding: str = "gzip") -> None:
        super().__init__(f'grpc: Decompressor is not installed for grpc-encoding "{encoding}"')
        self.encoding = encoding

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.encoding,))


class GrpcCompressedFlagError(EtcdError):
    """A message flagged compressed in a request that names no compression."""

    code = StatusCode.INTERNAL
    message = "grpc: compressed flag set with identity or empty encoding"


class GrpcInternalServerError(EtcdError):
    """An unexpected exception in a handler (grpclib's answer)."""

    code = StatusCode.UNKNOWN
    message = "Internal Server Error"


# --- the lock and election recipes -------------------------------------------------------
# Code UNKNOWN: etcd's v3lock and v3election services run Go's recipes, whose plain errors
# grpc-go sends as UNKNOWN with the error's text; a Client maps the texts back to these.


class SessionExpiredError(EtcdError):
    """The session's lease ended while waiting: the own key is gone, nothing is held.

    etcd 3.5+ returns this from ``Mutex.Lock``; 3.4 reports success instead (etcdlite's
    Python API always checks; its v3lock service answers like 3.4).
    """

    code = StatusCode.UNKNOWN
    message = "mutex: session is expired"


class ElectionNoLeaderError(EtcdError, LookupError):
    """``leader()`` on an election with no candidate."""

    code = StatusCode.UNKNOWN
    message = "election: no leader"


class ElectionNotLeaderError(EtcdError):
    """``proclaim()`` by a candidate that is not (or no longer) the leader."""

    code = StatusCode.UNKNOWN
    message = "election: not leader"


class MissingLeaderKeyError(EtcdError, ValueError):
    """v3election Proclaim/Resign without a ``leader`` field."""

    code = StatusCode.UNKNOWN
    message = '"leader" field must be provided'


class LockTimeoutError(TimeoutError):
    """``timeout`` seconds passed before the lock (or leadership) was obtained; nothing is
    held and the waiter's key was removed."""


# --- watch outcomes -----------------------------------------------------------------------


class WatchCanceledError(EtcdError):
    """The watch was cancelled by the server (``reason`` is etcd's ``cancel_reason``), e.g.
    ``mvcc: watcher range is empty`` or ``mvcc: duplicate watch ID provided on the
    WatchStream``."""

    code = StatusCode.CANCELLED

    def __init__(self, reason: str = "", code: StatusCode | None = None) -> None:
        super().__init__(reason, code)
        self.reason = reason

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.reason,))


class WatchClusterChangedError(EtcdError):
    """A watch resumed after its stream broke found a different cluster behind the
    endpoint (another cluster ID in the response header: e.g. an in-memory ``etcdlite
    serve`` restarted, or an endpoint now pointing elsewhere). That cluster's revisions
    say nothing about the history the watch followed, so it ends instead of going on from
    a revision that means something else there. Re-read the state and watch again.

    etcdlite's own: clientv3 (3.4-3.6) re-creates the watch from its next revision without
    looking at the cluster ID.
    """

    code = StatusCode.FAILED_PRECONDITION

    def __init__(self, old: int = 0, new: int = 0) -> None:
        super().__init__(
            f"etcdlite: watch resumed on a different cluster (cluster ID {old:x}, now {new:x}):"
            " its revisions are not this watch's history; read again and start a new watch"
        )
        self.old = old
        self.new = new

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.old, self.new))


class WatchCompactedError(CompactedError):
    """Compaction overtook the watch: events from ``compact_revision`` on are no longer
    available. Re-read the current state and watch again from a newer revision."""

    def __init__(self, compact_revision: int = 0, code: StatusCode | None = None) -> None:
        super().__init__(None, code)
        self.compact_revision = compact_revision

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.compact_revision,))
