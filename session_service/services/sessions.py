"""The quick half of the service: session reads and writes that need no workflow.

Routes stay HTTP-only and call this; this calls the Postgres repositories (SQL) and the
vector store (Qdrant) and enforces access and the business rules.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from session_service.domain.access import Actor, require
from session_service.domain.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Locked,
    Offloaded,
    Unprocessable,
)
from session_service.domain.models import (
    CollectionInfo,
    ModelType,
    Permission,
    PointIn,
    PointOut,
    PointsPage,
    SessionConfiguration,
    SessionCreate,
    SessionRecord,
    SessionStatus,
    SessionUpdate,
    StatsUpdate,
    Storage,
)
from session_service.domain.point_query import PointQuery, QueryResult
from session_service.services.counter_coalescing import StatsCoalescer
from session_service.stores.database import Postgres
from session_service.stores.postgres import PageCursor
from session_service.stores.session_rows import SessionFilter
from session_service.stores.vector_store import StoredPoint, VectorStore, collection_name_for


def request_hash(body: Any, actor: Actor) -> str:
    canonical = json.dumps([actor.user_id, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class SessionService:
    def __init__(self, pg: Postgres, vectors: VectorStore) -> None:
        self.pg = pg  # the other services take their repositories from it
        self.rows = pg.sessions
        self.collaborators = pg.collaborators
        self.keys = pg.keys
        self.locks = pg.locks
        self.vectors = vectors
        # late-bound, so the repository can be swapped or wrapped (fault injection)
        self._stats = StatsCoalescer(lambda *args: self.rows.increment_stats(*args))

    async def load(self, actor: Actor, session_id: str, needed: Permission) -> SessionRecord:
        session = await self.rows.get(session_id)
        require(session, actor, needed)
        return session

    # sessions

    async def create(
        self, actor: Actor, body: SessionCreate, idempotency_key: str | None = None
    ) -> SessionRecord:
        """Insert the row and create the collection in one transaction.

        The collection is created before the commit: if it fails, the row is
        rolled back; if the commit fails, the collection is dropped again.
        """
        owner = body.owner_id
        if actor.user_id is not None:
            if owner is not None and owner != actor.user_id:
                raise Forbidden("owner_id must be the acting user (X-User-Id) or left out")
            owner = actor.user_id
        session_id = str(uuid.uuid4())
        config = body.configuration or SessionConfiguration()
        collection = collection_name_for(session_id)
        created_collection = False
        try:
            async with self.rows.pool.acquire() as conn, conn.transaction():
                if idempotency_key is not None:
                    earlier = await self.keys.claim_in(
                        conn,
                        actor.key_scope("create-session"),
                        idempotency_key,
                        request_hash(body.model_dump(mode="json"), actor),
                        session_id,
                    )
                    if earlier is not None:
                        return await self.rows.get(earlier, conn)
                record = await self.rows.insert(
                    conn,
                    session_id=session_id,
                    name=body.name,
                    description=body.description,
                    owner_id=owner,
                    configuration=config,
                    tags=body.tags,
                    metadata=body.metadata,
                    collection_name=collection,
                )
                await self.vectors.ensure_collection(
                    collection, config.vector_size, config.distance.value
                )
                created_collection = True
            return record
        except BaseException:
            if created_collection:
                await self.vectors.drop_collection(collection)
            raise

    async def list_sessions(
        self,
        actor: Actor,
        *,
        status: SessionStatus | None,
        owner_id: str | None,
        tags: Sequence[str],
        limit: int,
        page_token: str | None,
    ) -> tuple[list[SessionRecord], str | None]:
        after = PageCursor.decode(page_token) if page_token else None
        flt = SessionFilter(status=status, owner_id=owner_id, tags=tags, visible_to=actor.user_id)
        rows = await self.rows.search(flt, limit + 1, after)
        next_token = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_token = PageCursor(last.updated_at, last.id).encode()
        return rows, next_token

    async def update(
        self, actor: Actor, session_id: str, body: SessionUpdate, if_version: int | None
    ) -> SessionRecord:
        session = await self.load(actor, session_id, Permission.write)
        if body.status is not None and body.status is not session.status:
            require(session, actor, Permission.admin)  # the same act as archive/restore/delete
        fields: dict[str, Any] = {}
        sent = body.model_fields_set
        for name in ("name", "description", "tags"):
            if name in sent:
                value = getattr(body, name)
                if value is None and name != "description":
                    raise Unprocessable(f"{name} may not be null")
                fields[name] = value
        if body.status is not None:
            fields["status"] = body.status.value
        config: dict[str, Any] | None = None
        if body.configuration is not None:
            config = body.configuration.model_dump(mode="json", exclude_unset=True)
            current = {
                "vector_size": session.configuration.vector_size,
                "distance": session.configuration.distance.value,
            }
            for key, now in current.items():
                if key in config and config[key] != now:
                    raise Conflict(
                        f"configuration.{key} is fixed when the session's collection is "
                        f"created (it is {now}); create a new session to change it"
                    )
        return await self.rows.update(
            session_id,
            fields=fields,
            configuration=config,
            metadata=body.metadata,
            if_version=if_version,
        )

    async def set_status(self, actor: Actor, session_id: str, status: SessionStatus) -> None:
        await self.load(actor, session_id, Permission.admin)
        await self.rows.set_status(session_id, status)

    async def share(
        self,
        actor: Actor,
        session_id: str,
        user_ids: Sequence[str],
        permissions: Sequence[Permission],
    ) -> SessionRecord:
        session = await self.load(actor, session_id, Permission.admin)
        if session.status is SessionStatus.deleted:
            raise Conflict(f"session {session_id} is deleted; restore it before sharing")
        others = [u for u in user_ids if u != session.owner_id]
        if not others:
            raise Unprocessable("user_ids holds only the owner, who already has every right")
        return await self.collaborators.share(session_id, others, permissions)

    async def unshare(self, actor: Actor, session_id: str, user_id: str) -> None:
        await self.load(actor, session_id, Permission.admin)
        await self.collaborators.unshare(session_id, user_id)

    # stats and models

    async def add_stats(self, actor: Actor, session_id: str, body: StatsUpdate) -> None:
        if not actor.trusted:
            await self.load(actor, session_id, Permission.write)
        deltas = body.model_dump(exclude={"metadata"}, exclude_none=True)
        await self._stats.add(session_id, deltas, body.metadata)

    async def record_model(
        self, actor: Actor, session_id: str, model_type: ModelType, model_name: str
    ) -> None:
        if not actor.trusted:
            await self.load(actor, session_id, Permission.write)
        await self.rows.record_model_usage(session_id, model_type, model_name)

    async def stats(self, actor: Actor, session_id: str) -> dict[str, Any]:
        session = await self.load(actor, session_id, Permission.read)
        now = datetime.now(UTC)
        return {
            "session_id": session.id,
            "session_stats": session.processing_stats.model_dump(mode="json"),
            "model_usage": session.model_usage_history.model_dump(mode="json"),
            "collection_stats": await self._collection_stats(session),
            "session_age_days": (now - session.created_at).days,
            "last_activity": session.updated_at.isoformat(),
            "collaboration_info": {
                "is_shared": bool(session.shared_with),
                "collaborator_count": len(session.shared_with),
            },
        }

    async def _collection_stats(self, session: SessionRecord) -> dict[str, Any]:
        if session.storage is Storage.offloaded:
            info = await self._collection_info(session)
            return {"collection_name": info.name, **info.model_dump(exclude={"name"})}
        params = await self.vectors.collection_params(session.qdrant_collection_name)
        return {
            "collection_name": session.qdrant_collection_name,
            "exists": params is not None,
            "points_count": params.points_count if params else 0,
            "vector_size": params.vector_size if params else None,
            "distance": params.distance if params else None,
        }

    async def compare(self, actor: Actor, session_ids: Sequence[str]) -> dict[str, Any]:
        ids = list(dict.fromkeys(s.strip() for s in session_ids if s.strip()))
        if len(ids) < 2:
            raise BadRequest("session_ids must name at least two different sessions")
        sessions = await self.rows.get_many(ids)
        for s in sessions:
            require(s, actor, Permission.read)
        llm = [set(s.model_usage_history.llm_models_used) for s in sessions]
        emb = [set(s.model_usage_history.embedding_models_used) for s in sessions]
        differences: dict[str, Any] = {}
        for counter in (
            "urls_processed",
            "content_analyzed",
            "clusters_generated",
            "embeddings_created",
        ):
            values = [getattr(s.processing_stats, counter) for s in sessions]
            differences[counter] = {
                "min": min(values),
                "max": max(values),
                "avg": sum(values) / len(values),
                "by_session": {s.id: v for s, v in zip(sessions, values, strict=True)},
            }
        return {
            "sessions": [s.public().model_dump(mode="json") for s in sessions],
            "comparison_summary": {
                "total_sessions": len(sessions),
                "status_distribution": dict(Counter(s.status.value for s in sessions)),
                "model_usage_overlap": {
                    "common_llm_models": sorted(set.intersection(*llm)),
                    "common_embedding_models": sorted(set.intersection(*emb)),
                    "all_llm_models": sorted(set.union(*llm)),
                    "all_embedding_models": sorted(set.union(*emb)),
                },
                "processing_differences": differences,
            },
        }

    # points (section C)

    async def upsert_points(self, actor: Actor, session_id: str, points: list[PointIn]) -> int:
        session = await self.load(actor, session_id, Permission.write)
        self._writable(session, joining_reload=True)
        self._live(session)
        size = session.configuration.vector_size
        for i, p in enumerate(points):
            if len(p.vector) != size:
                raise Unprocessable(
                    f"points[{i}].vector has {len(p.vector)} values; "
                    f"this session's vector_size is {size}"
                )
        ids = [p.id for p in points]
        if len(set(map(str, ids))) != len(ids):
            raise Unprocessable("point ids must be unique within one call")
        stored = [
            StoredPoint(id=p.id, vector=[float(v) for v in p.vector], payload=p.payload)
            for p in points
        ]
        # checked again under the row lock: an offload may have held the session since
        async with self.locks.points_write(session_id) as conn:
            await self.vectors.ensure_collection(
                session.qdrant_collection_name, size, session.configuration.distance.value
            )
            n = await self.vectors.upsert(session.qdrant_collection_name, stored)
            await self.rows.touch(session_id, conn)
        return n

    async def list_points(
        self,
        actor: Actor,
        session_id: str,
        *,
        limit: int,
        offset: int | str | None,
        with_vectors: bool,
    ) -> PointsPage:
        session = await self.load(actor, session_id, Permission.read)
        await self._readable(session)
        if await self.vectors.collection_params(session.qdrant_collection_name) is None:
            await self.still_readable(session_id)
            return PointsPage(points=[], next_offset=None)
        points, nxt = await self.vectors.scroll(
            session.qdrant_collection_name, limit=limit, offset=offset, with_vectors=with_vectors
        )
        if not points:
            await self.still_readable(session_id)
        return PointsPage(
            points=[PointOut(id=p.id, payload=p.payload, vector=p.vector) for p in points],
            next_offset=nxt,
        )

    async def delete_points(self, actor: Actor, session_id: str, ids: Sequence[int | str]) -> int:
        session = await self.load(actor, session_id, Permission.write)
        self._writable(session, joining_reload=True)
        self._live(session)
        async with self.locks.points_write(session_id) as conn:
            if await self.vectors.collection_params(session.qdrant_collection_name) is None:
                return 0
            n = await self.vectors.delete_points(session.qdrant_collection_name, list(ids))
            await self.rows.touch(session_id, conn)
        return n

    async def query_points(self, actor: Actor, session_id: str, query: PointQuery) -> QueryResult:
        session = await self.load(actor, session_id, Permission.read)
        size = session.configuration.vector_size
        await self._readable(session)
        if len(query.vector) != size:
            raise Unprocessable(
                f"vector has {len(query.vector)} values; this session's vector_size is {size}"
            )
        found = await self.vectors.query(session.qdrant_collection_name, query)
        if not found:
            await self.still_readable(session_id)
        return QueryResult(points=found)

    async def collection(self, actor: Actor, session_id: str) -> CollectionInfo:
        session = await self.load(actor, session_id, Permission.read)
        return await self._collection_info(session)

    async def _collection_info(self, session: SessionRecord) -> CollectionInfo:
        """The live collection's figures; for an offloaded session, the artifact's count,
        without bringing the points back (a metadata read never waits)."""
        config = session.configuration
        if session.storage is Storage.offloaded and session.artifact is not None:
            return CollectionInfo(
                name=session.qdrant_collection_name,
                exists=False,
                points_count=session.artifact.points,
                vector_size=config.vector_size,
                distance=config.distance.value,
                offloaded=True,
                artifact_points=session.artifact.points,
                artifact_size_bytes=session.artifact.size_bytes,
            )
        params = await self.vectors.collection_params(session.qdrant_collection_name)
        return CollectionInfo(
            name=session.qdrant_collection_name,
            exists=params is not None,
            points_count=params.points_count if params else 0,
            vector_size=params.vector_size if params else config.vector_size,
            distance=params.distance if params else config.distance.value,
        )

    @staticmethod
    def _live(session: SessionRecord) -> None:
        """Requests that need the points of an offloaded session bring them back first."""
        if session.storage is Storage.offloaded:
            raise Offloaded(session.id)

    async def _readable(self, session: SessionRecord) -> None:
        """Reads see the points until an offload drops them: between its mark and its drop
        the collection is still whole (the offload holds the session: nobody writes)."""
        if session.storage is not Storage.offloaded:
            return
        holder = session.locked_by or ""
        if holder.startswith("offload-") and await self.vectors.exists(
            session.qdrant_collection_name
        ):
            return
        raise Offloaded(session.id)

    async def still_readable(self, session_id: str) -> None:
        """After an empty answer: an offload may have dropped the collection since the
        session was read. Then the request brings the points back like any request for an
        offloaded session (Offloaded: first use), rather than answer "no points"."""
        await self._readable(await self.rows.get(session_id))

    @staticmethod
    def _writable(session: SessionRecord, *, joining_reload: bool = False) -> None:
        """409 while an operation holds the session; a write that brings an offloaded
        session back may find it held by the session's own reload, which it joins."""
        holder = session.locked_by
        if holder is not None and not (joining_reload and holder.startswith("reload-")):
            raise Locked(session.id, holder)
