#!/bin/sh
# One-shot job (temporalio/admin-tools): bring Temporal's two databases to the schema
# of this server version. Safe to run on every `docker compose up`: setup-schema skips
# a database that already has a version, update-schema applies only what is missing,
# which is also how a Temporal upgrade gets its schema changes.
# The databases and the role exist already (deploy/postgres/10-temporal-role.sh), so
# the role needs no CREATEDB.
# Connection from the environment: SQL_PLUGIN, SQL_HOST, SQL_PORT, SQL_USER, SQL_PASSWORD.
set -eu

: "${SQL_HOST:?}" "${SQL_USER:?}" "${SQL_PASSWORD:?}"
SCHEMA_DIR=${SCHEMA_DIR:-/etc/temporal/schema/postgresql/v12}
TEMPORAL_DB_NAME=${TEMPORAL_DB_NAME:-temporal}
TEMPORAL_VISIBILITY_DB_NAME=${TEMPORAL_VISIBILITY_DB_NAME:-temporal_visibility}

migrate() {
    db=$1
    dir=$2
    echo "temporal schema: $db from $SCHEMA_DIR/$dir"
    temporal-sql-tool --db "$db" setup-schema -v 0.0
    temporal-sql-tool --db "$db" update-schema -d "$SCHEMA_DIR/$dir/versioned"
}

migrate "$TEMPORAL_DB_NAME" temporal
migrate "$TEMPORAL_VISIBILITY_DB_NAME" visibility
echo "temporal schema: up to date"
