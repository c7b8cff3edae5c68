-- The thread's change sequence (SPEC §7): every change of a thread takes
-- the next number at the point that serialises the thread's writes (the
-- Redis save script, or the failover transaction under the thread's row
-- lock). It is a logical clock in microseconds: max(now, previous + 1), so
-- it never goes back even when a thread's Redis state has expired, and
-- existing rows take their createdAt, the same clock.
ALTER TABLE messages ADD COLUMN change_seq bigint NOT NULL DEFAULT 0;
UPDATE messages SET change_seq = (extract(epoch FROM created_at) * 1000000)::bigint;

-- Changes of a thread in sequence order (threadEvents replay, eventCursor).
CREATE INDEX messages_thread_change ON messages (thread_id, change_seq);
