-- Cold sessions (API.md section G): where a session's points are, and, when they
-- were moved out of the vector engine, the artifact that holds them. An offloaded
-- session always names a verified artifact: the saga writes and checks it before
-- it marks the session, and drops the live collection only after that.
ALTER TABLE sessions
    ADD COLUMN storage text NOT NULL DEFAULT 'live'
        CHECK (storage IN ('live', 'offloaded')),
    ADD COLUMN artifact_key        text,
    ADD COLUMN artifact_points     bigint,
    ADD COLUMN artifact_sha256     text,
    ADD COLUMN artifact_size_bytes bigint,
    ADD COLUMN offloaded_at        timestamptz;

ALTER TABLE sessions ADD CONSTRAINT sessions_offloaded_artifact
    CHECK (storage = 'live' OR (artifact_key IS NOT NULL AND artifact_points IS NOT NULL
                                AND artifact_sha256 IS NOT NULL));

-- the operator's listing of offloaded sessions
CREATE INDEX sessions_offloaded_idx ON sessions (offloaded_at DESC, id) WHERE storage = 'offloaded';
