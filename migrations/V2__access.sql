-- Who may use a thread. A thread is claimed by its first writer: a row here
-- with that writer as owner (NULL when the first writer was a service
-- principal: then only service principals manage it). No row: unclaimed,
-- nobody but service principals may read or watch it.
CREATE TABLE thread_acl (
    thread_id    text        PRIMARY KEY,
    owner        text,
    -- Bumped by every membership change, so a cache fill that read an
    -- older state never overwrites a newer one (see store/access.rs).
    version      bigint      NOT NULL DEFAULT 1,
    -- A membership change Redis has not seen yet (it was unreachable):
    -- the cache entry is dropped before Redis is used again.
    cache_dirty  boolean     NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE thread_members (
    thread_id  text        NOT NULL,
    user_id    text        NOT NULL,
    added_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (thread_id, user_id)
);

CREATE INDEX thread_acl_cache_dirty ON thread_acl (thread_id) WHERE cache_dirty;

-- The principal that wrote the message (the token's `sub`), never taken
-- from the client. NULL for messages saved without authentication.
ALTER TABLE messages ADD COLUMN author_id text;
