#!/bin/sh
# Runs once, when the postgres container initialises an empty data volume
# (docker-entrypoint-initdb.d). Temporal gets a role of its own that owns only its
# two databases: it can't read the sessions database, and the app's role isn't
# handed to a third-party server. The schema job (deploy/temporal/setup-schema.sh)
# then creates Temporal's tables as that role.
set -eu

: "${TEMPORAL_DB_PASSWORD:?TEMPORAL_DB_PASSWORD must be set for Temporal's database role}"
TEMPORAL_DB_USER=${TEMPORAL_DB_USER:-temporal}
TEMPORAL_DB_NAME=${TEMPORAL_DB_NAME:-temporal}
TEMPORAL_VISIBILITY_DB_NAME=${TEMPORAL_VISIBILITY_DB_NAME:-temporal_visibility}

# psql variables (:'x' quotes a literal, :"x" an identifier): no shell text reaches SQL.
psql -v ON_ERROR_STOP=1 --no-psqlrc \
    --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-$POSTGRES_USER}" \
    -v app_db="${POSTGRES_DB:-$POSTGRES_USER}" \
    -v role="$TEMPORAL_DB_USER" \
    -v password="$TEMPORAL_DB_PASSWORD" \
    -v db="$TEMPORAL_DB_NAME" \
    -v visibility_db="$TEMPORAL_VISIBILITY_DB_NAME" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"role";
CREATE DATABASE :"visibility_db" OWNER :"role";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
REVOKE ALL ON DATABASE :"visibility_db" FROM PUBLIC;
REVOKE ALL ON DATABASE :"app_db" FROM PUBLIC;
SQL
echo "temporal role $TEMPORAL_DB_USER owns $TEMPORAL_DB_NAME and $TEMPORAL_VISIBILITY_DB_NAME"
