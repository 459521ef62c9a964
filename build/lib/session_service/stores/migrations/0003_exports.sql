-- Export artifacts: where they are and what they hold. The bytes live in the
-- artifact store (a directory, or later an object store).
CREATE TABLE exports (
    export_id    text        PRIMARY KEY,
    session_id   uuid        NOT NULL,
    owner_id     text,
    status       text        NOT NULL CHECK (status IN ('writing', 'ready')),
    operation_id text        NOT NULL,
    size_bytes   bigint,
    points       bigint,
    sha256       text,            -- of the NDJSON before the trailer, as the trailer says
    file_sha256  text,            -- of the gzip file as downloaded
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX exports_session_idx ON exports (session_id, created_at DESC);
CREATE INDEX exports_created_idx ON exports (created_at DESC, export_id DESC);
