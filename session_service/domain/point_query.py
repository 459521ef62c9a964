"""``POST /sessions/{id}/points/query``: the request and answer (API.md section C).

The filter is the subset of Qdrant's JSON filter syntax that both vector backends
translate: ``must`` / ``should`` / ``must_not`` of ``match`` (``value`` or ``any``)
and ``range`` conditions on payload keys, and nested filters. Anything else is
refused here (422), so a backend never sees a condition it can't honour.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_validator,
)

from session_service.domain.models import MAX_VECTOR_SIZE, StrictBody

MAX_QUERY_LIMIT = 100
MAX_FILTER_DEPTH = 8
MAX_FILTER_CONDITIONS = 256
MAX_MATCH_ANY = 1000
MAX_HNSW_EF = 4096

Key = Annotated[str, Field(min_length=1, max_length=256)]
Keyword = Annotated[str, Field(max_length=1024)]


def _finite(value: float | None, where: str) -> None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number")


class _Strict(StrictBody):
    """The query body and its parts: unknown keys, NUL characters and numbers out of
    range are refused like in every other request body."""


class Match(_Strict):
    """``{"value": v}`` (a keyword, integer or boolean) or ``{"any": [...]}``."""

    value: Keyword | StrictInt | StrictBool | None = None
    any: Annotated[list[Keyword] | list[StrictInt], Field(max_length=MAX_MATCH_ANY)] | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.value is None) == (self.any is None):
            raise ValueError("match takes exactly one of 'value' or 'any'")
        for v in [self.value, *(self.any or [])]:
            if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**63:
                raise ValueError("match integers must fit in 64 bits")
        return self


class Range(_Strict):
    gt: StrictFloat | StrictInt | None = None
    gte: StrictFloat | StrictInt | None = None
    lt: StrictFloat | StrictInt | None = None
    lte: StrictFloat | StrictInt | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        bounds = {"gt": self.gt, "gte": self.gte, "lt": self.lt, "lte": self.lte}
        if all(v is None for v in bounds.values()):
            raise ValueError("range needs at least one of gt, gte, lt, lte")
        for name, v in bounds.items():
            _finite(None if v is None else float(v), f"range.{name}")
        return self


class FieldCondition(_Strict):
    key: Key
    match: Match | None = None
    range: Range | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.match is None) == (self.range is None):
            raise ValueError(f"condition on {self.key!r} takes exactly one of 'match' or 'range'")
        return self


class QueryFilter(_Strict):
    must: list[FieldCondition | QueryFilter] | None = None
    should: list[FieldCondition | QueryFilter] | None = None
    must_not: list[FieldCondition | QueryFilter] | None = None

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        depth, conditions = _measure(self)
        if depth > MAX_FILTER_DEPTH:
            raise ValueError(f"filters nest {depth} deep; the limit is {MAX_FILTER_DEPTH}")
        if conditions > MAX_FILTER_CONDITIONS:
            raise ValueError(
                f"the filter has {conditions} conditions; the limit is {MAX_FILTER_CONDITIONS}"
            )
        return self

    def clauses(self) -> list[tuple[str, list[FieldCondition | QueryFilter]]]:
        return [
            (name, conds)
            for name, conds in (
                ("must", self.must),
                ("should", self.should),
                ("must_not", self.must_not),
            )
            if conds
        ]


def _measure(f: QueryFilter) -> tuple[int, int]:
    depth, count = 1, 0
    for _, conds in f.clauses():
        for c in conds:
            if isinstance(c, QueryFilter):
                d, n = _measure(c)
                depth, count = max(depth, d + 1), count + n
            else:
                count += 1
    return depth, count


class SearchParams(_Strict):
    """Qdrant's search ``params``: ``hnsw_ef`` (how wide the index search looks: higher is
    more exact and slower) or ``exact`` (scan every point, ignoring the index)."""

    hnsw_ef: StrictInt | None = Field(default=None, ge=1, le=MAX_HNSW_EF)
    exact: bool = False


class PointQuery(_Strict):
    vector: Annotated[
        list[StrictFloat | StrictInt], Field(min_length=1, max_length=MAX_VECTOR_SIZE)
    ]
    limit: StrictInt = Field(default=10, ge=1, le=MAX_QUERY_LIMIT)
    filter: QueryFilter | None = None
    score_threshold: StrictFloat | StrictInt | None = None
    with_payload: bool = True
    with_vectors: bool = False
    params: SearchParams | None = None

    @model_validator(mode="after")
    def _finite_numbers(self) -> Self:
        if not all(math.isfinite(v) for v in self.vector):
            raise ValueError("vector values must be finite numbers (no NaN or infinity)")
        _finite(
            None if self.score_threshold is None else float(self.score_threshold), "score_threshold"
        )
        return self


class ScoredPointOut(BaseModel):
    id: int | str
    score: float
    payload: dict[str, Any] | None = None
    vector: list[float] | None = None


class QueryResult(BaseModel):
    points: list[ScoredPointOut]


__all__ = [
    "FieldCondition",
    "Match",
    "PointQuery",
    "QueryFilter",
    "QueryResult",
    "Range",
    "ScoredPointOut",
    "SearchParams",
]
