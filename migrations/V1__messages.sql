-- Threads exist as rows so failover writes can serialise on the thread's row
-- lock (SELECT ... FOR UPDATE) to assign createdAt and check idempotency.
CREATE TABLE threads (
    id          text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Every table is keyed by thread_id first so the schema can be sharded by
-- thread (e.g. Citus distribution column).
CREATE TABLE messages (
    thread_id          text        NOT NULL,
    id                 uuid        NOT NULL,
    role               text        NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content            text        NOT NULL,
    metadata           jsonb,
    client_message_id  text,
    -- Microsecond precision, assigned by the single point that serialises
    -- the thread's writes (the Redis save script, or the failover transaction).
    created_at         timestamptz NOT NULL,
    persisted_at       timestamptz NOT NULL DEFAULT now(),
    -- Written straight to PostgreSQL while the Redis breaker was open and not
    -- yet reflected in Redis (idempotency keys, thread index, last createdAt).
    needs_reconcile    boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (thread_id, id)
);

-- Thread order. Not UNIQUE: across a failover transition two tiers may pick
-- the same microsecond, and a unique violation would drop an acknowledged
-- message under ON CONFLICT DO NOTHING. The id breaks such ties.
CREATE INDEX messages_thread_order ON messages (thread_id, created_at, id);

-- Idempotency: one message per (thread, clientMessageId), kept for good.
CREATE UNIQUE INDEX messages_thread_client_id ON messages (thread_id, client_message_id)
    WHERE client_message_id IS NOT NULL;

-- message(id) without a thread.
CREATE INDEX messages_id ON messages (id);

CREATE INDEX messages_needs_reconcile ON messages (thread_id) WHERE needs_reconcile;
