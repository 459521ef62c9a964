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
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from session_service.models import MAX_VECTOR_SIZE, check_point_id

FORMAT = "tab-organizer-session-export"
VERSION = 1
GZIP_MAGIC = b"\x1f\x8b"


class InvalidArtifact(ValueError):
    """The input can't be imported; the message says why (it becomes a 422)."""


def _line(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


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


def trailer_line(points: int, sha256: str) -> bytes:
    return _line({"trailer": {"points": points, "sha256": sha256}})


def open_lines(raw: BinaryIO) -> BinaryIO:
    """A line reader over gzip (any number of members) or plain NDJSON, told by magic bytes."""
    start = raw.read(2)
    raw.seek(0)
    if start == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
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
        obj = json.loads(line)
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
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in vector):
        raise InvalidArtifact(f"{where}: vector holds something other than numbers")
    payload = obj.get("payload") or {}
    if not isinstance(payload, dict):
        raise InvalidArtifact(f"{where}: payload must be an object")
    return point_id, [float(v) for v in vector], payload


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
    except (EOFError, OSError, zlib.error) as exc:
        raise InvalidArtifact(f"truncated or corrupted gzip data: {exc}") from exc
    raise InvalidArtifact("truncated: the artifact ends without its trailer line")


def iter_points(raw: BinaryIO, skip: int = 0) -> Iterator[tuple[int | str, list[float], Any]]:
    """Points of a validated artifact, after the first ``skip``."""
    lines = open_lines(raw)
    size = int(json.loads(lines.readline())["vector_size"])
    seen = 0
    for number, line in enumerate(lines, start=2):
        obj = json.loads(line)
        if "trailer" in obj:
            return
        if seen >= skip:
            yield check_point(obj, size, f"line {number}")
        seen += 1


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
        _check_header(json.loads(head))
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
