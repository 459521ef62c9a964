-- Sessions, their collaborators, the retention policy and idempotency keys.
CREATE TABLE sessions (
    id                      uuid PRIMARY KEY,
    name                    text        NOT NULL,
    description             text,
    status                  text        NOT NULL
                            CHECK (status IN ('active', 'archived', 'shared', 'deleted')),
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    owner_id                text,
    qdrant_collection_name  text        NOT NULL UNIQUE,
    configuration           jsonb       NOT NULL,
    urls_processed          bigint      NOT NULL DEFAULT 0,
    content_analyzed        bigint      NOT NULL DEFAULT 0,
    clusters_generated      bigint      NOT NULL DEFAULT 0,
    embeddings_created      bigint      NOT NULL DEFAULT 0,
    last_processing_time    timestamptz,
    llm_models_used         text[]      NOT NULL DEFAULT '{}',
    embedding_models_used   text[]      NOT NULL DEFAULT '{}',
    model_switches          integer     NOT NULL DEFAULT 0,
    last_model_switch       timestamptz,
    tags                    text[]      NOT NULL DEFAULT '{}',
    metadata                jsonb       NOT NULL DEFAULT '{}',
    version                 bigint      NOT NULL DEFAULT 1,
    -- id of the unfinished operation that holds this session (saga rule 4)
    locked_by               text
);

-- GET /sessions pages newest-updated first with a keyset on (updated_at, id).
CREATE INDEX sessions_updated_idx ON sessions (updated_at DESC, id DESC);
CREATE INDEX sessions_owner_idx ON sessions (owner_id, updated_at DESC);
CREATE INDEX sessions_tags_idx ON sessions USING gin (tags);

CREATE TABLE collaborators (
    session_id  uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id     text        NOT NULL,
    permissions text[]      NOT NULL,
    added_seq   bigserial,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, user_id)
);
CREATE INDEX collaborators_user_idx ON collaborators (user_id);

CREATE TABLE retention_policy (
    id          integer     PRIMARY KEY CHECK (id = 1),
    policy      jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE idempotency_keys (
    scope        text        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    resource_id  text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

-- Merged metadata is bounded too (requests are checked at 64 KiB of compact
-- JSON; jsonb's text form is a little longer, hence the margin).
ALTER TABLE sessions ADD CONSTRAINT sessions_metadata_size
    CHECK (octet_length(metadata::text) <= 98304);
