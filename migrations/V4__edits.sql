-- Messages that change (SPEC §7): a version per message (1 when created, +1
-- per edit), when it was last edited, and the earlier versions. Rows are
-- applied by change_seq, never blindly, so batches committing out of order
-- cannot bring an older version back.
ALTER TABLE messages ADD COLUMN version integer NOT NULL DEFAULT 1;
ALTER TABLE messages ADD COLUMN edited_at timestamptz;

-- Earlier versions, once each (an edit carries the version it replaced, so
-- whichever order edits are applied in, every version lands here).
CREATE TABLE message_versions (
    thread_id   text        NOT NULL,
    message_id  uuid        NOT NULL,
    version     integer     NOT NULL,
    content     text        NOT NULL,
    metadata    jsonb,
    -- When this version was written: the message's createdAt for version 1.
    written_at  timestamptz NOT NULL,
    PRIMARY KEY (thread_id, message_id, version)
);
