"""grpc-gateway's JSON mapping of etcd's messages, as etcd 3.4 produces and accepts it.

etcd 3.4's gateway marshals with golang/protobuf's jsonpb (``OrigName: true``,
``EmitDefaults: false``) and unmarshals with ``AllowUnknownFields: true``:

* out: field names as written in the ``.proto`` (``create_revision``, but ``ID``, ``TTL``,
  ``dbSize``, ``peerURLs``), 64-bit integers as JSON strings, 32-bit ones as numbers,
  bytes as standard padded base64, enums by name; zero values, empty lists and absent
  messages are left out (a set oneof member is written even when zero);
* in: the proto name or its lowerCamel JSON name (case-sensitive), unknown fields and
  ``null`` ignored, 64-bit integers as numbers or strings, enums by name or number, bytes
  only as standard padded base64; errors carry Go's texts.

betterproto2's generated classes keep only snake_case names, so the proto names are read
once from the ``.proto`` files shipped in :mod:`etcdlite.wire`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from functools import cache
from importlib import resources
from typing import Any

import betterproto2

from ...wire.pb import mvccpb

__all__ = ["JsonError", "from_json", "message_from_json", "to_json", "wire_to_json"]

_INT64 = frozenset({"int64", "uint64", "sint64", "fixed64", "sfixed64"})
_INT32 = frozenset({"int32", "uint32", "sint32", "fixed32", "sfixed32"})


class JsonError(ValueError):
    """A request body jsonpb rejects; the text is Go's."""


@cache
def _proto_names() -> dict[tuple[str, int], str]:
    """(betterproto2 class name, field number) → the field's name in the ``.proto``."""
    names: dict[tuple[str, int], str] = {}
    token = re.compile(
        r"//[^\n]*|/\*.*?\*/|\b(message|enum|oneof|service)\s+(\w+)\s*\{|[{}]"
        r"|(?:repeated\s+)?[\w.]+\s+(\w+)\s*=\s*(\d+)\s*[;\[]",
        re.S,
    )
    for proto in (
        "rpc.proto",
        "kv.proto",
        "auth.proto",
        "v3lock.proto",
        "v3election.proto",
        "health.proto",
    ):
        text = (resources.files("etcdlite.wire") / "proto" / proto).read_text()
        stack: list[tuple[str, str]] = []  # (kind, name) per open brace
        for m in token.finditer(text):
            s = m.group(0)
            if s.startswith("/"):
                continue
            if m.group(1):
                stack.append((m.group(1), m.group(2)))
            elif s == "{":
                stack.append(("", ""))
            elif s == "}":
                if stack:
                    stack.pop()
            elif m.group(3):
                msgs = [n for k, n in stack if k == "message"]
                if msgs and stack and stack[-1][0] in ("message", "oneof"):
                    names[("".join(msgs), int(m.group(4)))] = m.group(3)
    return names


@cache
def _fields(cls: type) -> list[tuple[str, str, Any]]:
    """(python name, proto name, metadata) of ``cls``'s fields in field-number order."""
    names = _proto_names()
    meta = cls._betterproto.meta_by_field_name  # type: ignore[attr-defined]
    out = [(py, names.get((cls.__name__, m.number), py), m) for py, m in meta.items()]
    return sorted(out, key=lambda f: f[2].number)


@cache
def _by_json_name(cls: type) -> dict[str, tuple[str, Any]]:
    """Accepted input names (proto and lowerCamel) → (python name, metadata)."""
    out: dict[str, tuple[str, Any]] = {}
    for py, proto, meta in _fields(cls):
        out[proto] = (py, meta)
        head, *rest = proto.split("_")
        out.setdefault(head + "".join(p[:1].upper() + p[1:] for p in rest), (py, meta))
    return out


# --- out ------------------------------------------------------------------------------


def to_json(msg: betterproto2.Message) -> dict[str, Any]:
    """``msg`` as jsonpb writes it (a dict for ``json.dumps``)."""
    out: dict[str, Any] = {}
    for py, proto, meta in _fields(type(msg)):
        value = getattr(msg, py)
        if value is None:
            continue
        if meta.repeated:
            if value:
                out[proto] = [_value(v, meta.proto_type) for v in value]
        elif meta.group is not None or meta.proto_type == "message" or value:
            out[proto] = _value(value, meta.proto_type)
    return out


def _value(v: Any, kind: str) -> Any:
    if kind == "message":
        return to_json(v)
    if kind in _INT64:
        return str(int(v))
    if kind == "bytes":
        return base64.b64encode(v).decode()
    if kind == "enum":
        return v.name if hasattr(v, "name") and v.name is not None else int(v)
    return v


# --- out, straight from protobuf bytes ---------------------------------------------------

_SIGNED = frozenset({"int64", "int32", "sfixed64", "sfixed32"})
#: number → (proto name, kind, repeated, message class or enum, in a oneof)
_Spec = dict[int, tuple[str, str, bool, Any, bool]]


@cache
def _wire_spec(cls: type) -> tuple[_Spec, dict[str, int]]:
    spec: _Spec = {}
    order: dict[str, int] = {}
    sub = cls._betterproto.cls_by_field  # type: ignore[attr-defined]
    for i, (py, proto, meta) in enumerate(_fields(cls)):
        kind = meta.proto_type
        target = sub.get(py) if kind in ("message", "enum") else None
        spec[meta.number] = (proto, kind, meta.repeated, target, meta.group is not None)
        order[proto] = i
    return spec, order


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    result, shift = b & 0x7F, 7
    while True:
        pos += 1
        b = data[pos]
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos + 1
        shift += 7


def wire_to_json(cls: type, data: bytes) -> dict[str, Any]:
    """The jsonpb rendering of ``data``, an encoded ``cls`` message, without building the
    betterproto2 objects (parsing a 100-key RangeResponse with betterproto2 costs ~8× this).
    """
    spec, order = _wire_spec(cls)
    out: dict[str, Any] = {}
    pos, end = 0, len(data)
    last = -1
    ordered = True
    b64 = base64.b64encode
    while pos < end:
        tag, pos = _varint(data, pos)
        num, wire = tag >> 3, tag & 7
        raw: Any
        if wire == 0:
            raw, pos = _varint(data, pos)
        elif wire == 2:
            n, pos = _varint(data, pos)
            raw = data[pos : pos + n]
            pos += n
        elif wire == 1:
            raw = int.from_bytes(data[pos : pos + 8], "little")
            pos += 8
        elif wire == 5:
            raw = int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        field = spec.get(num)
        if field is None:
            continue
        name, kind, repeated, target, oneof = field
        if kind == "message":
            if target is _KeyValue:
                value: Any = _KV_JSON.get(raw)
                if value is None:
                    value = _kv_json(raw)
            else:
                value = wire_to_json(target, raw)
        elif kind == "bytes":
            if not raw and not repeated and not oneof:
                continue
            value = b64(raw).decode()
        elif kind == "string":
            value = raw.decode()
        elif repeated and wire == 2:  # packed numbers
            values, p = [], 0
            while p < len(raw):
                v, p = _varint(raw, p)
                values.append(_number(v, kind, target))
            out.setdefault(name, []).extend(values)
            continue
        else:
            if not raw and not repeated and not oneof:
                continue
            value = _number(raw, kind, target)
        if repeated:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
        i = order[name]
        if i < last:
            ordered = False
        last = i
    if not ordered:
        out = dict(sorted(out.items(), key=lambda kv: order[kv[0]]))
    return out


_KeyValue: type = mvccpb.KeyValue
#: Rendered KeyValues by their bytes: a range or a watch fan-out renders the same ones
#: again and again (the dicts are shared: never mutate a rendering).
_KV_JSON: dict[bytes, dict[str, Any]] = {}
_KV_JSON_MAX = 8192


_KV_JSON_MAX_BYTES = 4096  # larger ones are rendered each time (the cache stays small)


def _kv_json(raw: bytes) -> dict[str, Any]:
    value = wire_to_json(_KeyValue, raw)
    if len(raw) <= _KV_JSON_MAX_BYTES:
        if len(_KV_JSON) >= _KV_JSON_MAX:
            _KV_JSON.clear()
        _KV_JSON[raw] = value
    return value


def _number(v: int, kind: str, target: Any) -> Any:
    if kind == "bool":
        return bool(v)
    if kind == "enum":
        try:
            return target(v).name
        except ValueError:
            return v
    if kind in _SIGNED and v >= 1 << 63:
        v -= 1 << 64
    if kind in _INT64:
        return str(v)
    if kind in _INT32:
        return v - (1 << 32) if kind in _SIGNED and v >= 1 << 31 else v
    return v


# --- in -------------------------------------------------------------------------------


def message_from_json(cls: type, body: bytes) -> Any:
    """The request message of a unary route's body (no body: an empty message)."""
    if not body.strip():
        return cls()
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as e:
        raise JsonError(go_json_error(e, body)) from None
    except UnicodeDecodeError:
        raise JsonError("invalid character looking for beginning of value") from None
    return from_json(cls, obj)


def go_json_error(e: json.JSONDecodeError, body: bytes | str) -> str:
    """Go's encoding/json text for a syntax error (the common cases)."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    if e.pos >= len(text.rstrip()):
        return "unexpected EOF"
    ch = text[e.pos]
    return f"invalid character {ch!r} looking for beginning of value".replace('"', "'")


_GO_KIND = {"bool": "bool", "string": "string"}


def from_json(cls: type, obj: Any) -> Any:
    """A ``cls`` message from a decoded JSON object, as jsonpb reads it."""
    if obj is None:
        return cls()
    if not isinstance(obj, dict):
        raise JsonError(
            f"json: cannot unmarshal {_json_kind(obj)} into Go value of type "
            f"map[string]json.RawMessage"
        )
    names = _by_json_name(cls)
    kwargs: dict[str, Any] = {}
    for key, raw in obj.items():
        found = names.get(key)
        if found is None or raw is None:
            continue  # AllowUnknownFields; null means the default
        py, meta = found
        if meta.repeated:
            if not isinstance(raw, list):
                raise JsonError(
                    f"json: cannot unmarshal {_json_kind(raw)} into Go value of "
                    f"type []json.RawMessage"
                )
            kwargs[py] = [_parse(cls, py, meta, v) for v in raw]
        else:
            kwargs[py] = _parse(cls, py, meta, raw)
    return cls(**kwargs)


def _json_kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _parse(cls: type, py: str, meta: Any, raw: Any) -> Any:
    kind = meta.proto_type
    if kind == "message":
        return from_json(cls._betterproto.cls_by_field[py], raw)  # type: ignore[attr-defined]
    if kind in _INT64 or kind in _INT32:
        if isinstance(raw, str):
            if raw == "":
                raise JsonError("unexpected end of JSON input")
            try:
                return int(raw)
            except ValueError:
                raise JsonError(
                    f"invalid character {raw[0]!r} looking for beginning of value".replace('"', "'")
                ) from None
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise JsonError(
                f"json: cannot unmarshal {_json_kind(raw)} into Go value of "
                f"type {'int64' if kind in _INT64 else 'int32'}"
            )
        return int(raw)
    if kind == "bytes":
        if not isinstance(raw, str):
            raise JsonError(
                f"json: cannot unmarshal {_json_kind(raw)} into Go value of type []uint8"
            )
        return _b64(raw)
    if kind == "enum":
        enum = cls._betterproto.cls_by_field[py]  # type: ignore[attr-defined]
        if isinstance(raw, int) and not isinstance(raw, bool):
            return enum(raw)
        try:
            return enum[raw]
        except (KeyError, TypeError):
            raise JsonError(
                f"unknown value {json.dumps(raw)} for enum {_enum_go_name(cls, enum)}"
            ) from None
    expected = _GO_KIND.get(kind)
    if expected == "bool" and not isinstance(raw, bool):
        raise JsonError(f"json: cannot unmarshal {_json_kind(raw)} into Go value of type bool")
    if expected == "string" and not isinstance(raw, str):
        raise JsonError(f"json: cannot unmarshal {_json_kind(raw)} into Go value of type string")
    return raw


def _enum_go_name(cls: type, enum: type) -> str:
    """``etcdserverpb.Compare_CompareTarget`` for betterproto2's ``CompareCompareTarget``."""
    package = cls.__module__.rsplit(".", 1)[-1]
    name = enum.__name__
    if name.startswith(cls.__name__) and name != cls.__name__:
        name = f"{cls.__name__}_{name[len(cls.__name__) :]}"
    return f"{package}.{name}"


def _b64(s: str) -> bytes:
    """Go's ``base64.StdEncoding.DecodeString``: padded, standard alphabet."""
    for i, ch in enumerate(s):
        if not (ch.isascii() and (ch.isalnum() or ch in "+/=")):
            raise JsonError(f"illegal base64 data at input byte {i}")
    if len(s) % 4:
        raise JsonError(f"illegal base64 data at input byte {len(s) - len(s) % 4}")
    try:
        return base64.b64decode(s, validate=True)
    except binascii.Error:
        raise JsonError(f"illegal base64 data at input byte {max(s.find('='), 0)}") from None
