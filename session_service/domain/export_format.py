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
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, BinaryIO

import numpy as np
import orjson
from isal import igzip, isal_zlib
from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter, ValidationError

from session_service.domain.models import (
    MAX_VECTOR_SIZE,
    Metadata,
    Name,
    SessionCreate,
    check_point_id,
)
from session_service.settings import (
    DEFAULT_IMPORT_INFLATED_BYTES,
    DEFAULT_IMPORT_LINE_BYTES,
    Settings,
)

FORMAT = "tab-organizer-session-export"
VERSION = 1
GZIP_MAGIC = b"\x1f\x8b"
MAX_DEPTH = 64  # nesting of lists and objects in a session or a payload
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
class Limits:
    """How far reading an import may go (``MAX_IMPORT_INFLATED_BYTES``,
    ``MAX_IMPORT_LINE_BYTES``): every line is read with a bound, so memory stays flat
    whatever the input holds, a gzip bomb included."""

    inflated_bytes: int = DEFAULT_IMPORT_INFLATED_BYTES
    line_bytes: int = DEFAULT_IMPORT_LINE_BYTES

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.max_import_inflated_bytes, settings.max_import_line_bytes)


DEFAULT_LIMITS = Limits()


class Stopped(Exception):  # noqa: N818 - a signal, not a failure
    """The reader was told to stop: its activity was cancelled (a worker shutting down)."""


class Lines:
    """The lines of an artifact, each and all together within ``limits``."""

    def __init__(self, raw: BinaryIO, limits: Limits, stop: threading.Event | None = None) -> None:
        self.stream = open_lines(raw)
        self.limits = limits
        self.stop = stop
        self.number = 0
        self.inflated = 0

    def next(self) -> bytes:
        """The next line, or ``b""`` at the end."""
        if self.stop is not None and self.stop.is_set():
            raise Stopped
        line = self.stream.readline(self.limits.line_bytes + 1)
        self.number += 1
        if len(line) > self.limits.line_bytes:
            raise InvalidArtifact(
                f"line {self.number} is longer than {self.limits.line_bytes} bytes "
                "(MAX_IMPORT_LINE_BYTES)"
            )
        self.inflated += len(line)
        if self.inflated > self.limits.inflated_bytes:
            raise InvalidArtifact(
                f"the artifact inflates to more than {self.limits.inflated_bytes} bytes "
                "(MAX_IMPORT_INFLATED_BYTES)"
            )
        return line


@dataclass(frozen=True)
class Header:
    session: dict[str, Any]
    vector_size: int
    distance: str
    points: int
    sha256: str


def too_deep(obj: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``obj`` nests lists and objects more than ``limit`` levels deep (checked
    level by level: recursive encoders and validators further on would overflow)."""
    level = [obj]
    depth = 0
    while containers := [o for o in level if isinstance(o, dict | list)]:
        depth += 1
        if depth > limit:
            return True
        level = [c for o in containers for c in (o.values() if isinstance(o, dict) else o)]
    return False


def _parse(line: bytes, where: str) -> dict[str, Any]:
    try:
        obj = loads(line)
    except (ValueError, RecursionError) as exc:
        raise InvalidArtifact(f"{where} is not valid JSON (or is nested too deeply)") from exc
    if not isinstance(obj, dict):
        raise InvalidArtifact(f"{where} is not a JSON object")
    return obj


Counter = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]  # a bigint column


class ImportedStats(BaseModel):
    urls_processed: Counter = 0
    content_analyzed: Counter = 0
    clusters_generated: Counter = 0
    embeddings_created: Counter = 0
    last_processing_time: datetime | None = None


class ImportedUsage(BaseModel):
    llm_models_used: list[Name] = Field(default_factory=list)
    embedding_models_used: list[Name] = Field(default_factory=list)
    model_switches: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] = 0  # an integer column
    last_model_switch: datetime | None = None


class ImportedSession(SessionCreate):
    """A header's session: what ``POST /sessions`` accepts, with the same limits, plus the
    counters and model history an import carries over. The rest of the exported shape
    (status, dates, collaborators) is not imported, so not checked."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    processing_stats: ImportedStats = Field(default_factory=ImportedStats)
    model_usage_history: ImportedUsage = Field(default_factory=ImportedUsage)


_METADATA: TypeAdapter[dict[str, Any]] = TypeAdapter(Metadata)


def _problems(exc: ValidationError) -> str:
    out = []
    for err in exc.errors()[:5]:
        where = ".".join(["session", *(str(p) for p in err["loc"])])
        out.append(f"{where}: {err['msg']}")
    return "; ".join(out)


def check_session(session: Any, vector_size: int, distance: str) -> dict[str, Any]:
    """Refuse a session the import could not create, before anything is created: the
    fields and limits of ``POST /sessions``, counters that fit their columns, and room
    in the metadata for ``imported_from``."""
    if not isinstance(session, dict):
        raise InvalidArtifact("the header has no session object")
    if too_deep(session):
        raise InvalidArtifact(f"the session is nested more than {MAX_DEPTH} levels deep")
    fields = dict(session)
    config = session.get("configuration")
    if config is None or isinstance(config, dict):
        fields["configuration"] = {
            **(config or {}),
            "vector_size": vector_size,
            "distance": distance,
        }
    try:
        model = ImportedSession.model_validate(fields)
    except ValidationError as exc:
        raise InvalidArtifact(f"the session can't be imported: {_problems(exc)}") from exc
    try:
        _METADATA.validate_python({**model.metadata, "imported_from": model.id})
    except ValidationError as exc:
        raise InvalidArtifact(
            "the session's metadata leaves no room for imported_from: "
            + exc.errors()[0]["msg"].removeprefix("Value error, ")
        ) from exc
    return session


def _check_vectors(size: Any, distance: Any) -> tuple[int, str]:
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_VECTOR_SIZE:
        raise InvalidArtifact(f"vector_size must be an integer from 1 to {MAX_VECTOR_SIZE}")
    if distance not in ("Cosine", "Dot", "Euclid", "Manhattan"):
        raise InvalidArtifact(f"distance {distance!r} is not Cosine, Dot, Euclid or Manhattan")
    return size, distance


def _check_header(obj: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
    if obj.get("format") != FORMAT:
        raise InvalidArtifact(f"line 1 is not a {FORMAT} header")
    if obj.get("version") != VERSION:
        raise InvalidArtifact(
            f"format version {obj.get('version')!r} is not supported (this service reads {VERSION})"
        )
    size, distance = _check_vectors(obj.get("vector_size"), obj.get("distance"))
    return size, distance, check_session(obj.get("session"), size, distance)


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
    if too_deep(payload):
        raise InvalidArtifact(f"{where}: payload is nested more than {MAX_DEPTH} levels deep")
    return point_id, vector, payload


_GZIP_ERRORS = (EOFError, OSError, zlib.error, _ISAL_ERROR)


def read_header(raw: BinaryIO, limits: Limits) -> tuple[int, str, dict[str, Any]]:
    """Check the header line alone (a quick look before an import starts)."""
    try:
        first = Lines(raw, limits).next()
    except _GZIP_ERRORS as exc:
        raise InvalidArtifact(f"truncated or corrupted gzip data: {exc}") from exc
    if not first:
        raise InvalidArtifact("the artifact is empty")
    return _check_header(_parse(first, "line 1"))


class CheckedPoints:
    """The points of an artifact, each line checked as it is read, and the whole checked
    against the trailer (count and SHA-256) when it is reached: one pass that imports
    and validates at once. Raises InvalidArtifact (or Stopped once ``stop`` is set).

    The first ``skip`` points (imported by an earlier attempt) are hashed and counted but
    not parsed, so a resume far into a big artifact stays quick. After the loop, the
    attributes hold what the artifact was.
    """

    def __init__(
        self,
        raw: BinaryIO,
        limits: Limits = DEFAULT_LIMITS,
        stop: threading.Event | None = None,
        skip: int = 0,
    ) -> None:
        self.lines = Lines(raw, limits, stop)
        self.skip = skip
        self.digest = hashlib.sha256()
        self.count = 0
        self.header: Header | None = None

    def __iter__(self) -> Iterator[tuple[int | str, list[float], Any]]:
        try:
            yield from self._points()
        except _GZIP_ERRORS as exc:
            raise InvalidArtifact(f"truncated or corrupted gzip data: {exc}") from exc

    def _points(self) -> Iterator[tuple[int | str, list[float], Any]]:
        lines, digest = self.lines, self.digest
        first = lines.next()
        if not first:
            raise InvalidArtifact("the artifact is empty")
        size, distance, session = _check_header(_parse(first, "line 1"))
        digest.update(first)
        while self.count < self.skip and (line := lines.next()):
            digest.update(line)
            self.count += 1
        while line := lines.next():
            number = lines.number
            obj = _parse(line, f"line {number}")
            if "trailer" in obj:
                self._check_trailer(obj["trailer"], number)
                self.header = Header(session, size, distance, self.count, digest.hexdigest())
                return
            point = check_point(obj, size, f"line {number}")
            digest.update(line)
            self.count += 1
            yield point
        raise InvalidArtifact("truncated: the artifact ends without its trailer line")

    def _check_trailer(self, trailer: Any, number: int) -> None:
        if not isinstance(trailer, dict):
            raise InvalidArtifact(f"line {number}: the trailer must be an object")
        if self.lines.next():
            raise InvalidArtifact(f"line {number}: data follows the trailer")
        if trailer.get("points") != self.count:
            raise InvalidArtifact(
                f"the trailer counts {trailer.get('points')} points; "
                f"the artifact holds {self.count}"
            )
        if trailer.get("sha256") != self.digest.hexdigest():
            raise InvalidArtifact("the SHA-256 in the trailer does not match: corrupted")


def validate(
    raw: BinaryIO, limits: Limits = DEFAULT_LIMITS, stop: threading.Event | None = None
) -> Header:
    """Read the whole artifact once, line by line within ``limits``; return its header or
    raise InvalidArtifact (or Stopped once ``stop`` is set)."""
    checked = CheckedPoints(raw, limits, stop)
    for _ in checked:
        pass
    assert checked.header is not None
    return checked.header


def iter_points(
    raw: BinaryIO, skip: int = 0, limits: Limits = DEFAULT_LIMITS
) -> Iterator[tuple[int | str, list[float], Any]]:
    """Points of a validated artifact, after the first ``skip``.

    The skipped lines are not parsed (a resume far into a big artifact stays quick):
    validation has seen that every line before the trailer is a point.
    """
    lines = Lines(raw, limits)
    size = int(loads(lines.next())["vector_size"])
    for _ in range(skip):
        if not lines.next():
            return
    while line := lines.next():
        obj = loads(line)
        if "trailer" in obj:
            return
        yield check_point(obj, size, f"line {lines.number}")


def document_parts(doc: dict[str, Any]) -> tuple[dict[str, Any], int, str, list[Any], str]:
    """The session, vector parameters, points and date of an inline export document (API.md
    section A), checked before anything is written. Raises InvalidArtifact."""
    session = doc.get("session")
    if not isinstance(session, dict):
        raise InvalidArtifact("the document has no session object")
    config = session.get("configuration")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise InvalidArtifact("session.configuration must be an object")
    data = doc.get("collection_data")
    if data is not None and not isinstance(data, dict):
        raise InvalidArtifact("collection_data must be an object or null")
    points = (data or {}).get("points")
    if points is None:
        points = []
    if not isinstance(points, list):
        raise InvalidArtifact("collection_data.points must be a list")
    exported_at = doc.get("export_timestamp")
    if exported_at is not None and not isinstance(exported_at, str):
        raise InvalidArtifact("export_timestamp must be a string")
    size = config.get("vector_size")
    if size is None and points and isinstance(points[0], dict):
        first = points[0].get("vector")
        size = len(first) if isinstance(first, list) else None
    size, distance = _check_vectors(
        384 if size is None else size, config.get("distance") or "Cosine"
    )
    return check_session(session, size, distance), size, distance, points, exported_at or ""


def document_to_artifact(doc: dict[str, Any], out: BinaryIO) -> None:
    """Write an inline export document (API.md section A) as an artifact, to import it the
    same way. Raises InvalidArtifact for what doesn't fit."""
    session, size, distance, points, exported_at = document_parts(doc)
    digest = hashlib.sha256()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1) as gz:
        head = header_line(session, size, distance, exported_at)
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


__all__ = ["FORMAT", "VERSION", "Header", "InvalidArtifact", "Limits", "io"]
