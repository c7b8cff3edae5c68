-- Soft deletes (SPEC §7): a tombstone keeps id, thread, author, createdAt
-- and order; content becomes '' and metadata NULL; deleted_at says when.
-- The pre-delete version stays in message_versions.
ALTER TABLE messages ADD COLUMN deleted_at timestamptz;
