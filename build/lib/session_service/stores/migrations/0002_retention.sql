-- What a retention run archived, with the status it had, so that a failed or
-- cancelled run can put it back and the same run never deletes it.
CREATE TABLE retention_archived (
    operation_id    text        NOT NULL,
    session_id      uuid        NOT NULL,
    previous_status text        NOT NULL,
    archived_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (operation_id, session_id)
);

-- Retention pages through sessions in id order.
CREATE INDEX sessions_status_updated_idx ON sessions (status, updated_at);
