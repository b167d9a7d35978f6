-- The schema `db init` created before migrations existed (release 0.1.0, SQLite).
-- Dumped from sqlite_master after `authz db init`; tests load it to check the upgrade path.
CREATE TABLE audit_log (
	id INTEGER NOT NULL, 
	at DATETIME NOT NULL, 
	actor VARCHAR(255) NOT NULL, 
	source VARCHAR(16) NOT NULL, 
	action VARCHAR(64) NOT NULL, 
	added TEXT NOT NULL, 
	removed TEXT NOT NULL, 
	forced BOOLEAN NOT NULL, 
	revision INTEGER NOT NULL, 
	detail TEXT NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE casbin_rule (
	id INTEGER NOT NULL, 
	ptype VARCHAR(255), 
	v0 VARCHAR(255), 
	v1 VARCHAR(255), 
	v2 VARCHAR(255), 
	v3 VARCHAR(255), 
	v4 VARCHAR(255), 
	v5 VARCHAR(255), 
	PRIMARY KEY (id)
);
CREATE TABLE login_failures (
	id INTEGER NOT NULL, 
	"key" VARCHAR(300) NOT NULL, 
	at DATETIME NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE policy_revision (
	id INTEGER NOT NULL, 
	revision INTEGER NOT NULL, 
	changed_at DATETIME NOT NULL, 
	accounts INTEGER DEFAULT '0' NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE users (
	id INTEGER NOT NULL, 
	email VARCHAR(255) NOT NULL, 
	password_hash VARCHAR(255) NOT NULL, 
	active BOOLEAN NOT NULL, 
	session_token VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	last_login_at DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE (email), 
	UNIQUE (session_token)
);
CREATE INDEX ix_audit_log_actor ON audit_log (actor);
CREATE INDEX ix_audit_log_at ON audit_log (at);
CREATE INDEX ix_login_failures_at ON login_failures (at);
CREATE INDEX ix_login_failures_key ON login_failures ("key");
