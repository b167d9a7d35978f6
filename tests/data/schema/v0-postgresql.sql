-- The schema `db init` created before migrations existed (release 0.1.0, PostgreSQL).
-- The DDL SQLAlchemy's create_all emitted for these tables; tests load it to check the upgrade path.
CREATE TABLE audit_log (
	id SERIAL NOT NULL, 
	at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
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
CREATE INDEX ix_audit_log_actor ON audit_log (actor);
CREATE INDEX ix_audit_log_at ON audit_log (at);
CREATE TABLE casbin_rule (
	id SERIAL NOT NULL, 
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
	id SERIAL NOT NULL, 
	key VARCHAR(300) NOT NULL, 
	at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_login_failures_at ON login_failures (at);
CREATE INDEX ix_login_failures_key ON login_failures (key);
CREATE TABLE policy_revision (
	id SERIAL NOT NULL, 
	revision INTEGER NOT NULL, 
	changed_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	accounts INTEGER DEFAULT '0' NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE users (
	id SERIAL NOT NULL, 
	email VARCHAR(255) NOT NULL, 
	password_hash VARCHAR(255) NOT NULL, 
	active BOOLEAN NOT NULL, 
	session_token VARCHAR(64) NOT NULL, 
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	last_login_at TIMESTAMP WITHOUT TIME ZONE, 
	PRIMARY KEY (id), 
	UNIQUE (email), 
	UNIQUE (session_token)
);
