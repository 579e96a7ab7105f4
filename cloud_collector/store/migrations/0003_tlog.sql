-- The collector's transparency log (DESIGN §6.1; cloud_collector/tlog, store/tlog.py).
-- tlog_queue: checkpoints accepted by ingest, waiting for the next batch integration (same
-- transaction as the checkpoint itself, so nothing accepted is ever left out of the log).
CREATE TABLE IF NOT EXISTS tlog_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dev TEXT NOT NULL, cp BIGINT NOT NULL, hash BLOB NOT NULL, received_ms BIGINT NOT NULL
);
-- One row per leaf; the entry bytes are rebuilt from these columns (agent/core/tlog.py).
CREATE TABLE IF NOT EXISTS tlog_leaves (
    idx BIGINT PRIMARY KEY,
    dev TEXT NOT NULL, cp BIGINT NOT NULL, hash BLOB NOT NULL, received_ms BIGINT NOT NULL
);
-- Not unique: a device enrolled again starts at cp 0 and is logged again (the log only grows).
CREATE INDEX IF NOT EXISTS tlog_leaves_by_cp ON tlog_leaves (dev, cp);
-- tlog-tiles hash tiles, as they are now: a full tile has 256 hashes, the right edge fewer.
CREATE TABLE IF NOT EXISTS tlog_tiles (
    level INTEGER NOT NULL, idx BIGINT NOT NULL, hashes BLOB NOT NULL,
    PRIMARY KEY (level, idx)
);
-- Every signed checkpoint (signed note text) the log produced.
CREATE TABLE IF NOT EXISTS tlog_heads (
    size BIGINT PRIMARY KEY, root BLOB NOT NULL, note TEXT NOT NULL, created_ms BIGINT NOT NULL
);
-- Witness cosignatures received for a checkpoint (note signature lines).
CREATE TABLE IF NOT EXISTS tlog_cosigs (
    size BIGINT NOT NULL, witness TEXT NOT NULL, line TEXT NOT NULL, received_ms BIGINT NOT NULL,
    PRIMARY KEY (size, witness)
);
CREATE INDEX IF NOT EXISTS tlog_cosigs_by_witness ON tlog_cosigs (witness, size);
-- One row (id 1): the integrated size and the log's identity. Integrations lock this row.
CREATE TABLE IF NOT EXISTS tlog_state (
    id INTEGER PRIMARY KEY, size BIGINT NOT NULL, origin TEXT NOT NULL, vkey TEXT NOT NULL
);
