"""etcdlite: an asyncio-native, in-process etcd v3 store with etcd's semantics.

``Store`` is the embedded store; ``Client`` (``connect("host:port")``) offers the same API
against any etcd endpoint, etcdlite's own server or a real etcd cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .api import KV
from .auth import AuthAPI
from .clock import Clock, LoopClock, ManualClock
from .core.quota import AlarmType
from .errors import (
    AuthFailedError,
    AuthNotEnabledError,
    CompactedError,
    DeadlineExceededError,
    DuplicateKeyError,
    EmptyKeyError,
    EtcdError,
    FutureRevisionError,
    InvalidAuthMgmtError,
    InvalidAuthTokenError,
    KeyNotFoundError,
    LeaderChangedError,
    LeaseExistsError,
    LeaseNotFoundError,
    LeaseProvidedError,
    LeaseTTLTooLargeError,
    NoLeaderError,
    NoSpaceError,
    PermissionDeniedError,
    RequestTooLargeError,
    RoleAlreadyExistError,
    RoleNotFoundError,
    ServerStoppedError,
    StatusCode,
    TooManyOpsError,
    UnavailableError,
    UserAlreadyExistError,
    UserEmptyError,
    UserNotFoundError,
    ValueProvidedError,
    WatchCanceledError,
    WatchClusterChangedError,
    WatchCompactedError,
)
from .lease import Lease, LeaseTimeToLive
from .ops import (
    Compare,
    CompareResult,
    CompareTarget,
    Delete,
    Get,
    Put,
    Txn,
    prefix_end,
)
from .recipes import (
    Election,
    ElectionNoLeaderError,
    ElectionNotLeaderError,
    LeaderKey,
    Lock,
    LockTimeoutError,
    Session,
    SessionExpiredError,
)
from .store import Store, StoreClosedError
from .types import (
    CompactResponse,
    DeleteRangeResponse,
    Event,
    EventType,
    FilterType,
    KeyValue,
    Permission,
    PermissionType,
    PutResponse,
    RangeResponse,
    ResponseHeader,
    SortOrder,
    SortTarget,
    TxnResponse,
    WatchResponse,
)
from .userview import UserView
from .watch import Watch

if TYPE_CHECKING:
    from .client import Client, connect
    from .server import EtcdServer, serve

# The client and the server pull in grpclib's client or server side; load each only when
# used, so `etcdlite serve` starts without the client and an embedded app without either.
_LAZY = {
    "Client": ".client",
    "connect": ".client",
    "EtcdServer": ".server",
    "serve": ".server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "KV",
    "AlarmType",
    "AuthAPI",
    "AuthFailedError",
    "AuthNotEnabledError",
    "Client",
    "Clock",
    "CompactResponse",
    "CompactedError",
    "Compare",
    "CompareResult",
    "CompareTarget",
    "DeadlineExceededError",
    "Delete",
    "DeleteRangeResponse",
    "DuplicateKeyError",
    "Election",
    "ElectionNoLeaderError",
    "ElectionNotLeaderError",
    "EmptyKeyError",
    "EtcdError",
    "EtcdServer",
    "Event",
    "EventType",
    "FilterType",
    "FutureRevisionError",
    "Get",
    "InvalidAuthMgmtError",
    "InvalidAuthTokenError",
    "KeyNotFoundError",
    "KeyValue",
    "LeaderChangedError",
    "LeaderKey",
    "Lease",
    "LeaseExistsError",
    "LeaseNotFoundError",
    "LeaseProvidedError",
    "LeaseTTLTooLargeError",
    "LeaseTimeToLive",
    "Lock",
    "LockTimeoutError",
    "LoopClock",
    "ManualClock",
    "NoLeaderError",
    "NoSpaceError",
    "Permission",
    "PermissionDeniedError",
    "PermissionType",
    "Put",
    "PutResponse",
    "RangeResponse",
    "RequestTooLargeError",
    "ResponseHeader",
    "RoleAlreadyExistError",
    "RoleNotFoundError",
    "ServerStoppedError",
    "Session",
    "SessionExpiredError",
    "SortOrder",
    "SortTarget",
    "StatusCode",
    "Store",
    "StoreClosedError",
    "TooManyOpsError",
    "Txn",
    "TxnResponse",
    "UnavailableError",
    "UserAlreadyExistError",
    "UserEmptyError",
    "UserNotFoundError",
    "UserView",
    "ValueProvidedError",
    "Watch",
    "WatchCanceledError",
    "WatchClusterChangedError",
    "WatchCompactedError",
    "WatchResponse",
    "connect",
    "prefix_end",
    "serve",
]
