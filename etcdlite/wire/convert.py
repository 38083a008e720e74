"""Translation between etcdlite's request/result types and etcd's protobuf messages.

No semantics here: every field maps to the field of the same name and number.
"""

from __future__ import annotations

from collections.abc import Sequence

import betterproto2

from ..ops import (
    Compare,
    CompareTarget,
    DeleteRangeRequest,
    Op,
    PutRequest,
    RangeRequest,
    TxnRequest,
)
from ..types import (
    DeleteRangeResponse,
    Event,
    EventType,
    KeyValue,
    PutResponse,
    RangeResponse,
    ResponseHeader,
    TxnResponse,
    WatchResponse,
)
from ..watch import WatchSpec
from .pb import etcdserverpb as pb
from .pb import mvccpb

__all__ = [
    "delete_range_request_to_pb",
    "delete_range_response_from_pb",
    "header_from_pb",
    "kv_from_pb",
    "put_request_to_pb",
    "put_response_from_pb",
    "range_request_to_pb",
    "range_response_from_pb",
    "txn_request_to_pb",
    "txn_response_from_pb",
]


# --- requests → protobuf ------------------------------------------------------------------


def range_request_to_pb(req: RangeRequest) -> pb.RangeRequest:
    return pb.RangeRequest(
        key=req.key,
        range_end=req.range_end,
        limit=req.limit,
        revision=req.revision,
        # out-of-range values are legal on the wire (3.4 ignores them): betterproto2 keeps them
        sort_order=pb.RangeRequestSortOrder(int(req.sort_order)),
        sort_target=pb.RangeRequestSortTarget(int(req.sort_target)),
        serializable=req.serializable,
        keys_only=req.keys_only,
        count_only=req.count_only,
        min_mod_revision=req.min_mod_revision,
        max_mod_revision=req.max_mod_revision,
        min_create_revision=req.min_create_revision,
        max_create_revision=req.max_create_revision,
    )


def put_request_to_pb(req: PutRequest) -> pb.PutRequest:
    return pb.PutRequest(
        key=req.key,
        value=req.value,
        lease=req.lease,
        prev_kv=req.prev_kv,
        ignore_value=req.ignore_value,
        ignore_lease=req.ignore_lease,
    )


def delete_range_request_to_pb(req: DeleteRangeRequest) -> pb.DeleteRangeRequest:
    return pb.DeleteRangeRequest(key=req.key, range_end=req.range_end, prev_kv=req.prev_kv)


_UNION_FIELD: dict[int, str] = {
    CompareTarget.VERSION: "version",
    CompareTarget.CREATE: "create_revision",
    CompareTarget.MOD: "mod_revision",
    CompareTarget.VALUE: "value",
    CompareTarget.LEASE: "lease",
}


def compare_to_pb(cmp: Compare) -> pb.Compare:
    msg = pb.Compare(
        result=pb.CompareCompareResult(int(cmp.result)),
        target=pb.CompareCompareTarget(int(cmp.target)),
        key=cmp.key,
        range_end=cmp.range_end,
    )
    field = _UNION_FIELD.get(cmp.target)
    if field is not None:
        setattr(msg, field, cmp.operand)
    return msg


def request_op_to_pb(op: Op | None) -> pb.RequestOp:
    if isinstance(op, RangeRequest):
        return pb.RequestOp(request_range=range_request_to_pb(op))
    if isinstance(op, PutRequest):
        return pb.RequestOp(request_put=put_request_to_pb(op))
    if isinstance(op, DeleteRangeRequest):
        return pb.RequestOp(request_delete_range=delete_range_request_to_pb(op))
    if isinstance(op, TxnRequest):
        return pb.RequestOp(request_txn=txn_request_to_pb(op))
    return pb.RequestOp()


def txn_request_to_pb(req: TxnRequest) -> pb.TxnRequest:
    return pb.TxnRequest(
        compare=[compare_to_pb(c) for c in req.compare],
        success=[request_op_to_pb(op) for op in req.success],
        failure=[request_op_to_pb(op) for op in req.failure],
    )


# --- protobuf → results -------------------------------------------------------------------


def header_from_pb(h: pb.ResponseHeader | None) -> ResponseHeader:
    if h is None:
        return ResponseHeader()
    return ResponseHeader(h.cluster_id, h.member_id, h.revision, h.raft_term)


def kv_from_pb(kv: mvccpb.KeyValue) -> KeyValue:
    return KeyValue(kv.key, kv.create_revision, kv.mod_revision, kv.version, kv.value, kv.lease)


def _kvs(kvs: Sequence[mvccpb.KeyValue]) -> list[KeyValue]:
    return [kv_from_pb(kv) for kv in kvs]


def range_response_from_pb(r: pb.RangeResponse) -> RangeResponse:
    return RangeResponse(header_from_pb(r.header), _kvs(r.kvs), r.more, r.count)


def put_response_from_pb(r: pb.PutResponse) -> PutResponse:
    return PutResponse(
        header_from_pb(r.header), kv_from_pb(r.prev_kv) if r.prev_kv is not None else None
    )


def delete_range_response_from_pb(r: pb.DeleteRangeResponse) -> DeleteRangeResponse:
    return DeleteRangeResponse(header_from_pb(r.header), r.deleted, _kvs(r.prev_kvs))


def _response_op_from_pb(
    op: pb.ResponseOp,
) -> RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse:
    name, value = betterproto2.which_one_of(op, "response")
    assert value is not None, "empty ResponseOp"
    if name == "response_range":
        return range_response_from_pb(value)
    if name == "response_put":
        return put_response_from_pb(value)
    if name == "response_delete_range":
        return delete_range_response_from_pb(value)
    if name == "response_txn":
        return txn_response_from_pb(value)
    raise ValueError(f"unexpected ResponseOp {name!r}")


def txn_response_from_pb(r: pb.TxnResponse) -> TxnResponse:
    return TxnResponse(
        header_from_pb(r.header),
        r.succeeded,
        [_response_op_from_pb(op) for op in r.responses],
    )


# --- watch --------------------------------------------------------------------------------


def watch_create_to_pb(spec: WatchSpec, watch_id: int = 0) -> pb.WatchRequest:
    return pb.WatchRequest(
        create_request=pb.WatchCreateRequest(
            key=spec.key,
            range_end=spec.range_end,
            start_revision=spec.start_revision,
            progress_notify=spec.progress_notify,
            filters=[pb.WatchCreateRequestFilterType(int(f)) for f in spec.filters],
            prev_kv=spec.prev_kv,
            watch_id=watch_id,
            fragment=spec.fragment,
        )
    )


def event_from_pb(ev: mvccpb.Event) -> Event:
    kv = kv_from_pb(ev.kv) if ev.kv is not None else KeyValue(b"")
    prev = kv_from_pb(ev.prev_kv) if ev.prev_kv is not None else None
    return Event(EventType(int(ev.type)), kv, prev)


def watch_response_from_pb(r: pb.WatchResponse) -> WatchResponse:
    return WatchResponse(
        header_from_pb(r.header),
        r.watch_id,
        [event_from_pb(ev) for ev in r.events],
        created=r.created,
        canceled=r.canceled,
        compact_revision=r.compact_revision,
        cancel_reason=r.cancel_reason,
        fragment=r.fragment,
    )


# --- protobuf requests → etcdlite requests (the server side) ------------------------------


def range_request_from_pb(m: pb.RangeRequest) -> RangeRequest:
    return RangeRequest(
        m.key,
        m.range_end,
        limit=m.limit,
        revision=m.revision,
        sort_order=int(m.sort_order),
        sort_target=int(m.sort_target),
        serializable=m.serializable,
        keys_only=m.keys_only,
        count_only=m.count_only,
        min_mod_revision=m.min_mod_revision,
        max_mod_revision=m.max_mod_revision,
        min_create_revision=m.min_create_revision,
        max_create_revision=m.max_create_revision,
    )


def put_request_from_pb(m: pb.PutRequest) -> PutRequest:
    return PutRequest(
        m.key,
        m.value,
        lease=m.lease,
        prev_kv=m.prev_kv,
        ignore_value=m.ignore_value,
        ignore_lease=m.ignore_lease,
    )


def delete_range_request_from_pb(m: pb.DeleteRangeRequest) -> DeleteRangeRequest:
    return DeleteRangeRequest(m.key, m.range_end, prev_kv=m.prev_kv)


_TARGET_OF_MEMBER = {name: target for target, name in _UNION_FIELD.items()}


def compare_from_pb(m: pb.Compare) -> Compare:
    """etcd uses the operand only if the set union member matches the target; otherwise it
    compares against 0 (or ``b""``)."""
    target = int(m.target)
    member, value = betterproto2.which_one_of(m, "target_union")
    if _TARGET_OF_MEMBER.get(member) != target or value is None:
        value = b"" if target == CompareTarget.VALUE else 0
    return Compare(m.key, target, int(m.result), value, m.range_end)


def request_op_from_pb(m: pb.RequestOp) -> Op | None:
    name, value = betterproto2.which_one_of(m, "request")
    if value is None:
        return None
    if name == "request_range":
        return range_request_from_pb(value)
    if name == "request_put":
        return put_request_from_pb(value)
    if name == "request_delete_range":
        return delete_range_request_from_pb(value)
    if name == "request_txn":
        return txn_request_from_pb(value)
    return None


def txn_request_from_pb(m: pb.TxnRequest) -> TxnRequest:
    return TxnRequest(
        [compare_from_pb(c) for c in m.compare],
        [request_op_from_pb(op) for op in m.success],
        [request_op_from_pb(op) for op in m.failure],
    )


def watch_spec_from_pb(m: pb.WatchCreateRequest) -> WatchSpec:
    return WatchSpec(
        m.key,
        m.range_end,
        start_revision=m.start_revision,
        filters=[int(f) for f in m.filters if int(f) in (0, 1)],
        prev_kv=m.prev_kv,
        progress_notify=m.progress_notify,
        fragment=m.fragment,
    )


def header_to_pb(h: ResponseHeader) -> pb.ResponseHeader:
    return pb.ResponseHeader(
        cluster_id=h.cluster_id, member_id=h.member_id, revision=h.revision, raft_term=h.raft_term
    )
