-- Operations as a durable record: a row per operation (its Temporal workflow id), written
-- by the API when it starts one and by the workflow's own activities when it starts and
-- ends, so listing reads one table and a record outlives Temporal's namespace retention.
CREATE TABLE operations (
    id                text        PRIMARY KEY,   -- the workflow id
    kind              text        NOT NULL,
    status            text        NOT NULL
                      CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    session_ids       uuid[]      NOT NULL DEFAULT '{}',
    owner_id          text,
    started_by        text,                      -- the acting user (null: a trusted service)
    cancel_permission text,                      -- what cancelling needs (null: the starter)
    cancel_ids        uuid[]      NOT NULL DEFAULT '{}',
    summary           text,
    run_id            text,                      -- first run id of the chain that ran it
    progress          jsonb,                     -- the last progress, written at the end
    result            jsonb,                     -- the final body of a succeeded operation
    error_type        text,
    error_message     text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,               -- the workflow's first activity ran
    finished_at       timestamptz
);
-- GET /operations: newest first, keyset on (created_at, id); filters by kind, status, session
CREATE INDEX operations_created_idx ON operations (created_at DESC, id DESC);
CREATE INDEX operations_kind_idx ON operations (kind, created_at DESC, id DESC);
CREATE INDEX operations_status_idx ON operations (status, created_at DESC, id DESC);
CREATE INDEX operations_sessions_idx ON operations USING gin (session_ids);
-- the idempotency-key sweep deletes by age
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
