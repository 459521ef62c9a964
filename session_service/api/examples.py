"""Request and response examples of the OpenAPI document, keyed by operation id.

Kept in one table (applied by ``api.openapi``) so that ``tests/test_openapi.py``
can check each against its schema and send each request example to the live
service: an example that stopped being accepted fails a test.
"""

from __future__ import annotations

from typing import Any

SID = "6f1c2b9e-0d7a-4c55-9f0e-1b2c3d4e5f60"
OTHER = "0b5e8d3a-7c21-4e9f-a6b4-2d1f0e9c8b7a"
NOW = "2026-03-02T10:15:00+00:00"
OP = "merge-3a9e41d07c2b4f0c9d1e"

SESSION: dict[str, Any] = {
    "id": SID,
    "name": "Research",
    "description": "Tabs about vector search",
    "status": "active",
    "created_at": NOW,
    "updated_at": NOW,
    "owner_id": "user-42",
    "shared_with": [],
    "qdrant_collection_name": "session_" + SID.replace("-", ""),
    "configuration": {
        "clustering_params": {},
        "embedding_model": "all-MiniLM-L6-v2",
        "llm_model": None,
        "processing_options": {},
        "vector_size": 4,
        "distance": "Cosine",
    },
    "processing_stats": {
        "urls_processed": 12,
        "content_analyzed": 12,
        "clusters_generated": 3,
        "embeddings_created": 12,
        "last_processing_time": NOW,
    },
    "model_usage_history": {
        "llm_models_used": [],
        "embedding_models_used": ["all-MiniLM-L6-v2"],
        "model_switches": 1,
        "last_model_switch": NOW,
    },
    "tags": ["research"],
    "metadata": {"source": "web-ui"},
    "version": 7,
}

OPERATION: dict[str, Any] = {
    "id": OP,
    "kind": "merge",
    "status": "running",
    "done": False,
    "session_ids": [SID, OTHER],
    "progress": {"phase": "copying points", "points_total": 40000, "points_done": 12000},
    "result": None,
    "error": None,
    "created_at": NOW,
    "finished_at": None,
    "links": {
        "self": f"/operations/{OP}",
        "temporal_ui": f"http://127.0.0.1:8233/namespaces/default/workflows/{OP}",
    },
}

# operation id -> {"request": body, "response": body of the success status}
EXAMPLES: dict[str, dict[str, Any]] = {
    "create_session": {
        "request": {
            "name": "Research",
            "description": "Tabs about vector search",
            "configuration": {"vector_size": 4, "embedding_model": "all-MiniLM-L6-v2"},
            "tags": ["research"],
            "metadata": {"source": "web-ui"},
        },
        "response": SESSION,
    },
    "get_session": {"response": SESSION},
    "update_session": {
        "request": {"name": "Research (2026)", "tags": ["research", "2026"]},
        "response": {**SESSION, "name": "Research (2026)", "tags": ["research", "2026"]},
    },
    "put_stats": {
        "request": {"urls_processed": 5, "embeddings_created": 5, "metadata": {"batch": "b-17"}},
        "response": {"message": "Session statistics updated"},
    },
    "get_stats": {
        "response": {
            "session_id": SID,
            "session_stats": SESSION["processing_stats"],
            "model_usage": SESSION["model_usage_history"],
            "collection_stats": {"points_count": 12, "vector_size": 4, "distance": "Cosine"},
            "session_age_days": 3,
            "last_activity": NOW,
            "collaboration_info": {"is_shared": False, "collaborator_count": 0},
        }
    },
    "merge_sessions": {
        "request": {
            "source_session_ids": [SID, OTHER],
            "target_name": "Research, merged",
            "archive_sources": True,
        },
        "response": OPERATION,
        "status": "202",
    },
    "split_session": {
        "request": {
            "parts": [{"name": "Vector databases", "point_ids": [1, 2, 3]}],
            "remove_points": True,
        },
        "response": {**OPERATION, "kind": "split", "id": "split-7d02c4e1", "session_ids": [SID]},
        "status": "202",
    },
    "upsert_points": {
        "request": {
            "points": [
                {"id": 1, "vector": [0.1, 0.2, 0.3, 0.4], "payload": {"url": "https://a.example"}},
                {
                    "id": "5c56c793-69f3-4fbf-87e6-c4bf54c28c26",
                    "vector": [0.4, 0.3, 0.2, 0.1],
                    "payload": {"url": "https://b.example"},
                },
            ]
        },
        "response": {"upserted": 2},
    },
    "delete_points": {"request": {"ids": [1, 2]}, "response": {"deleted": 2}},
    "query_points": {
        "request": {
            "vector": [0.1, 0.2, 0.3, 0.4],
            "limit": 2,
            "filter": {"must": [{"key": "lang", "match": {"value": "en"}}]},
            "with_payload": True,
        },
        "response": {
            "points": [
                {"id": 1, "score": 0.998, "payload": {"lang": "en"}},
                {"id": 7, "score": 0.871, "payload": {"lang": "en"}},
            ]
        },
    },
    "get_operation": {"response": OPERATION},
    "cancel_operation": {"response": OPERATION, "status": "202"},
}
