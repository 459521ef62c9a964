"""The export artifact: gzip'd NDJSON with a header line, a line per point, a trailer.

The trailer holds the point count and the SHA-256 of every byte before it (the
uncompressed header and point lines), so a truncated or altered artifact is
caught before anything is imported. Pure functions, no I/O of their own.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import orjson
from isal import igzip, isal_zlib

from session_service.models import MAX_VECTOR_SIZE, check_point_id

FORMAT = "tab-organizer-session-export"
VERSION = 1
GZIP_MAGIC = b"\x1f\x8b"
# ISA-L's inflate error (its stub types it as an instance, not a class)
_ISAL_ERROR: type[Exception] = isal_zlib.error  # type: ignore[assignment]


class InvalidArtifact(ValueError):
    """The input can't be imported; the message says why (it becomes a 422)."""


_NUMBERS = frozenset((float, int))


def _finite(obj: Any) -> bool:
    """No NaN or infinity anywhere in ``obj``: orjson would write those as ``null``."""
    if type(obj) is float:
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return all(_finite(v) for v in obj)
    return True


def _json_line(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _line(obj: Any) -> bytes:
    """Compact JSON and a newline. orjson writes floats ten times faster than ``json``, in
    the same shortest round-trip form; what it refuses (integers past 64 bits) or would
    change (NaN and infinities, which it writes as ``null``) goes through ``json``."""
    if not _finite(obj):
        return _json_line(obj)
    try:
        return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        return _json_line(obj)


def loads(line: bytes) -> Any:
    """orjson first; ``json`` for what only it accepts (NaN, huge integers) in older files."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


def header_line(
    session: dict[str, Any], vector_size: int, distance: str, exported_at: str
) -> bytes:
    return _line(
        {
            "format": FORMAT,
            "version": VERSION,
            "exported_at": exported_at,
            "vector_size": vector_size,
            "distance": distance,
            "session": session,
        }
    )


def point_line(point_id: int | str, vector: list[float] | None, payload: Any) -> bytes:
    return _line({"id": point_id, "vector": vector, "payload": payload or {}})


_NUMPY = orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY


def point_lines(ids: Sequence[Any], vectors: Iterable[Any], payloads: Sequence[Any]) -> bytes:
    """The lines of a page of points whose vectors may be float32 numpy rows: written as
    float32 (``-1.4284534``, not ``-1.4284534454345703``), they round-trip exactly to
    what Qdrant stores, in about half the bytes to encode, compress and parse."""
    all_finite = not isinstance(vectors, np.ndarray) or bool(np.isfinite(vectors).all())
    out = []
    for point_id, vector, payload in zip(ids, vectors, payloads, strict=True):
        obj = {"id": point_id, "vector": vector, "payload": payload or {}}
        if isinstance(vector, np.ndarray):
            finite = all_finite or bool(np.isfinite(vector).all())
        else:
            finite = _finite(vector)
        if finite and _finite(payload):
            try:
                out.append(orjson.dumps(obj, option=_NUMPY))
                continue
            except orjson.JSONEncodeError:
                pass  # what orjson refuses goes through ``json`` below
        if isinstance(vector, np.ndarray):
            vector = [float(v) for v in vector.tolist()]
        out.append(point_line(point_id, vector, payload))
    return b"".join(out)


def trailer_line(points: int, sha256: str) -> bytes:
    return _line({"trailer": {"points": points, "sha256": sha256}})


def open_lines(raw: BinaryIO) -> BinaryIO:
    """A line reader over gzip (any number of members) or plain NDJSON, told by magic bytes."""
    start = raw.read(2)
    raw.seek(0)
    if start == GZIP_MAGIC:  # ISA-L inflates plain gzip 1.6x faster than zlib
        return igzip.IGzipFile(fileobj=raw, mode="rb")  # type: ignore[no-untyped-call,return-value]
    return raw


@dataclass(frozen=True)
class Header:
    session: dict[str, Any]
    vector_size: int
    distance: str
    points: int
    sha256: str


def _parse(line: bytes, where: str) -> dict[str, Any]:
    try:
        obj = loads(line)
    except ValueError as exc:
        raise InvalidArtifact(f"{where} is not valid JSON") from exc
    if not isinstance(obj, dict):
        raise InvalidArtifact(f"{where} is not a JSON object")
    return obj


def _check_header(obj: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
    if obj.get("format") != FORMAT:
        raise InvalidArtifact(f"line 1 is not a {FORMAT} header")
    if obj.get("version") != VERSION:
        raise InvalidArtifact(
            f"format version {obj.get('version')!r} is not supported (this service reads {VERSION})"
        )
    size = obj.get("vector_size")
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_VECTOR_SIZE:
        raise InvalidArtifact("header vector_size must be an integer from 1 to 65536")
    distance = obj.get("distance")
    if distance not in ("Cosine", "Dot", "Euclid", "Manhattan"):
        raise InvalidArtifact(
            f"header distance {distance!r} is not Cosine, Dot, Euclid or Manhattan"
        )
    session = obj.get("session")
    if not isinstance(session, dict):
        raise InvalidArtifact("header has no session object")
    return size, distance, session


def check_point(obj: dict[str, Any], size: int, where: str) -> tuple[int | str, list[float], Any]:
    try:
        point_id = check_point_id(obj.get("id"))  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise InvalidArtifact(f"{where}: {exc}") from exc
    vector = obj.get("vector")
    if not isinstance(vector, list) or len(vector) != size:
        got = len(vector) if isinstance(vector, list) else type(vector).__name__
        raise InvalidArtifact(f"{where}: vector has {got} values; vector_size is {size}")
    kinds = set(map(type, vector))  # one C-level pass; bool is a type of its own
    if not kinds <= _NUMBERS:
        raise InvalidArtifact(f"{where}: vector holds something other than numbers")
    if int in kinds:  # Qdrant takes floats only; our own exports hold nothing else
        vector = [float(v) for v in vector]
    payload = obj.get("payload") or {}
    if not isinstance(payload, dict):
        raise InvalidArtifact(f"{where}: payload must be an object")
    return point_id, vector, payload


def validate(raw: BinaryIO) -> Header:
    """Read the whole artifact once; return its header or raise InvalidArtifact."""
    digest = hashlib.sha256()
    try:
        lines = open_lines(raw)
        first = lines.readline()
        if not first:
            raise InvalidArtifact("the artifact is empty")
        size, distance, session = _check_header(_parse(first, "line 1"))
        digest.update(first)
        count = 0
        number = 1
        for line in lines:
            number += 1
            obj = _parse(line, f"line {number}")
            if "trailer" in obj:
                trailer = obj["trailer"]
                if not isinstance(trailer, dict):
                    raise InvalidArtifact(f"line {number}: the trailer must be an object")
                if lines.readline():
                    raise InvalidArtifact(f"line {number}: data follows the trailer")
                if trailer.get("points") != count:
                    raise InvalidArtifact(
                        f"the trailer counts {trailer.get('points')} points; "
                        f"the artifact holds {count}"
                    )
                if trailer.get("sha256") != digest.hexdigest():
                    raise InvalidArtifact("the SHA-256 in the trailer does not match: corrupted")
                return Header(session, size, distance, count, digest.hexdigest())
            check_point(obj, size, f"line {number}")
            digest.update(line)
            count += 1
    except (EOFError, OSError, zlib.error, _ISAL_ERROR) as exc:
        raise InvalidArtifact(f"truncated or corrupted gzip data: {exc}") from exc
    raise InvalidArtifact("truncated: the artifact ends without its trailer line")


def iter_points(raw: BinaryIO, skip: int = 0) -> Iterator[tuple[int | str, list[float], Any]]:
    """Points of a validated artifact, after the first ``skip``.

    The skipped lines are not parsed (a resume far into a big artifact stays quick):
    validation has seen that every line before the trailer is a point.
    """
    lines = open_lines(raw)
    size = int(loads(lines.readline())["vector_size"])
    number = 1
    for _ in range(skip):
        if not lines.readline():
            return
        number += 1
    for line in lines:
        number += 1
        obj = loads(line)
        if "trailer" in obj:
            return
        yield check_point(obj, size, f"line {number}")


def document_to_artifact(doc: dict[str, Any], out: BinaryIO) -> None:
    """Write an inline export document (API.md section A) as an artifact, to import it the
    same way. Raises InvalidArtifact for what doesn't fit."""
    session = doc.get("session")
    if not isinstance(session, dict):
        raise InvalidArtifact("the document has no session object")
    config = session.get("configuration") or {}
    data = doc.get("collection_data") or {}
    points = data.get("points") or [] if isinstance(data, dict) else []
    if not isinstance(points, list):
        raise InvalidArtifact("collection_data.points must be a list")
    size = config.get("vector_size")
    if size is None and points and isinstance(points[0], dict):
        size = len(points[0].get("vector") or [])
    size = size or 384
    distance = config.get("distance") or "Cosine"
    digest = hashlib.sha256()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1) as gz:
        head = header_line(session, size, distance, str(doc.get("export_timestamp") or ""))
        _check_header(loads(head))
        gz.write(head)
        digest.update(head)
        for i, p in enumerate(points):
            if not isinstance(p, dict):
                raise InvalidArtifact(f"collection_data.points[{i}] is not an object")
            pid, vector, payload = check_point(p, size, f"collection_data.points[{i}]")
            line = point_line(pid, vector, payload)
            gz.write(line)
            digest.update(line)
        gz.write(trailer_line(len(points), digest.hexdigest()))


__all__ = ["FORMAT", "VERSION", "Header", "InvalidArtifact", "io"]
