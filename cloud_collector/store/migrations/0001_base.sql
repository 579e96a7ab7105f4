-- Collector schema. Portable SQL (SQLite and PostgreSQL); BLOB is BYTEA on PostgreSQL and
-- the alerts/audit id column becomes BIGINT GENERATED ALWAYS AS IDENTITY.
CREATE TABLE IF NOT EXISTS devices (
    dev           TEXT PRIMARY KEY,
    enrolled_ms   BIGINT NOT NULL,
    fs_k0         BLOB,
    next_seq      BIGINT NOT NULL,
    next_cp       BIGINT NOT NULL,
    prev_cp_hash  BLOB NOT NULL,
    boot          BIGINT NOT NULL,
    fs_key        BLOB,
    last_seen_ms  BIGINT,
    last_cp_ms    BIGINT,
    records       BIGINT NOT NULL DEFAULT 0,
    checkpoints   BIGINT NOT NULL DEFAULT 0,
    status        TEXT,
    status_ms     BIGINT
);
CREATE TABLE IF NOT EXISTS device_keys (
    dev TEXT NOT NULL, kid TEXT NOT NULL, alg TEXT NOT NULL, pub BLOB NOT NULL,
    first_cp BIGINT NOT NULL, last_cp BIGINT, revoked_from_cp BIGINT,
    PRIMARY KEY (dev, kid)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    dev TEXT NOT NULL, cp BIGINT NOT NULL, boot BIGINT NOT NULL,
    first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL, n INTEGER NOT NULL,
    hash BLOB NOT NULL, message BLOB NOT NULL, why TEXT, wall_ms BIGINT, received_ms BIGINT NOT NULL,
    PRIMARY KEY (dev, cp)
);
CREATE TABLE IF NOT EXISTS records (
    dev TEXT NOT NULL, seq BIGINT NOT NULL, cp BIGINT NOT NULL, kind TEXT, api TEXT, wall_ms BIGINT,
    data BLOB NOT NULL,
    PRIMARY KEY (dev, seq)
);
CREATE TABLE IF NOT EXISTS pending (
    dev TEXT NOT NULL, cp BIGINT NOT NULL, message BLOB NOT NULL, records BLOB NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (dev, cp)
);
CREATE TABLE IF NOT EXISTS bridges (
    dev TEXT NOT NULL, from_cp BIGINT NOT NULL, to_cp BIGINT NOT NULL,
    from_seq BIGINT NOT NULL, to_seq BIGINT NOT NULL, created_ms BIGINT NOT NULL,
    PRIMARY KEY (dev, from_cp)
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dev TEXT NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL, dedupe TEXT NOT NULL,
    first_ms BIGINT NOT NULL, last_ms BIGINT NOT NULL, count BIGINT NOT NULL DEFAULT 1,
    cp BIGINT, seq_first BIGINT, seq_last BIGINT, detail TEXT NOT NULL, evidence BLOB,
    UNIQUE (dev, kind, dedupe)
);
CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts (last_ms);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts_ms BIGINT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL
);
