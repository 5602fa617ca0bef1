-- Runs, their steps, the audit log, cooldown marks and leases.
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    playbook TEXT NOT NULL,
    trigger_kind TEXT NOT NULL,
    who TEXT NOT NULL,
    agent TEXT NOT NULL,
    -- The scheduled tick this run claimed (ms since the epoch); the unique key makes a tick run
    -- once however many agents share the store.
    tick_at BIGINT,
    params TEXT NOT NULL,
    dry_run BIGINT NOT NULL,
    target TEXT NOT NULL,
    lease_key TEXT,
    lease_token BIGINT,
    outcome TEXT NOT NULL,
    error TEXT,
    changes TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    UNIQUE (playbook, tick_at)
);
CREATE INDEX runs_by_playbook ON runs (playbook, started_at);

CREATE TABLE steps (
    run_id BIGINT NOT NULL REFERENCES runs (id),
    idx BIGINT NOT NULL,
    step TEXT NOT NULL,
    uses TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    log TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (run_id, idx)
);

CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    agent TEXT NOT NULL,
    run_id BIGINT,
    event TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

CREATE TABLE cooldowns (
    playbook TEXT NOT NULL,
    target TEXT NOT NULL,
    until_at BIGINT NOT NULL,
    PRIMARY KEY (playbook, target)
);

CREATE TABLE leases (
    lease_key TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
