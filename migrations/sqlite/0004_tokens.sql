-- Bearer tokens of the HTTP server. Only the SHA-256 of a token is kept: the
-- token itself is printed once, when it is made. A token acts for one tenant
-- and one agent; a revoked token stays (with `revoked_at`) so lists and audit
-- records can still name it.
CREATE TABLE api_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant      TEXT    NOT NULL,
    agent       TEXT    NOT NULL,
    hash        TEXT    NOT NULL UNIQUE,  -- hex SHA-256 of the whole token
    prefix      TEXT    NOT NULL,         -- its first characters, to tell tokens apart
    created_at  INTEGER NOT NULL,         -- unix seconds, UTC
    revoked_at  INTEGER
);

-- Tenants other than `default` (the served workspace): each has its own
-- workspace, whose `.arbiter/` holds its own store and audit journal.
CREATE TABLE tenants (
    name        TEXT    PRIMARY KEY,
    workspace   TEXT    NOT NULL UNIQUE,  -- absolute, canonical
    policy      TEXT,                     -- absolute policy file, or NULL: the workspace's own / built-in
    created_at  INTEGER NOT NULL
);
