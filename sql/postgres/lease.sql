-- Tandem: the lead among several `tandem run` instances (PostgreSQL, side A only).
-- Run on a connection of its own (application_name "tandem lease"), never through the pool.
-- $1 is a fixed 64-bit key derived from tandem's schema name (FNV-1a of "tandem lease " and
-- the schema name, kept positive), so one lock per tandem installation. Nothing is installed
-- for this: advisory locks need no object and no privilege. Needs a direct connection or a
-- pooler in session mode (a transaction-mode pooler cannot hold a session lock).

-- name: session
-- Let the server notice a holder whose host died or whose network was cut in about 11 s,
-- instead of the operating system's default of hours: the lock goes with the session.
SET tcp_keepalives_idle = 5;
SET tcp_keepalives_interval = 2;
SET tcp_keepalives_count = 3;

-- name: try_lock
-- Never waits: true when this session holds the lock now.
SELECT pg_try_advisory_lock($1);

-- name: held
-- The check the active instance runs every half second: is the lock still this session's?
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
      AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = $1
);
