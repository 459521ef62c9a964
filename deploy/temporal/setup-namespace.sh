#!/bin/sh
# One-shot job (temporalio/admin-tools), run before the API and the workers start:
# the namespace with its retention, and the custom search attributes every operation
# is started with. Without them an API that starts before any worker fails each
# long-running request with "no mapping defined for search attribute SessionIds".
# Safe to run again: what exists is kept (an existing namespace's retention is
# updated to the stated one), what is missing is added, and the end state is checked.
#
# TEMPORAL_ADDRESS      frontend host:port (the temporal CLI reads it too)
# TEMPORAL_NAMESPACE    namespace of the service (its TEMPORAL_NAMESPACE)
# TEMPORAL_NAMESPACE_RETENTION
#                       how long closed operations stay readable (GET /operations/{id})
# SEARCH_ATTRIBUTES     space-separated Name=Type pairs (session_service/temporal/registry.py)
set -eu

: "${TEMPORAL_ADDRESS:?}" "${TEMPORAL_NAMESPACE:?}" "${TEMPORAL_NAMESPACE_RETENTION:?}"
: "${SEARCH_ATTRIBUTES:?}"
ns=$TEMPORAL_NAMESPACE
attempts=${SETUP_ATTEMPTS:-30}

# The frontend answers its port before it serves: wait for SERVING.
i=0
until temporal operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -ge "$attempts" ]; then
        echo "temporal at $TEMPORAL_ADDRESS not serving after $attempts attempts" >&2
        exit 1
    fi
    sleep 2
done

if temporal operator namespace describe --namespace "$ns" --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; then
    temporal operator namespace update --namespace "$ns" --address "$TEMPORAL_ADDRESS" \
        --retention "$TEMPORAL_NAMESPACE_RETENTION"
    echo "namespace $ns exists: retention $TEMPORAL_NAMESPACE_RETENTION"
else
    temporal operator namespace create --namespace "$ns" --address "$TEMPORAL_ADDRESS" \
        --retention "$TEMPORAL_NAMESPACE_RETENTION"
    echo "namespace $ns created: retention $TEMPORAL_NAMESPACE_RETENTION"
fi

# A namespace just created can take a moment to reach every frontend: retry the listing.
i=0
until have=$(temporal operator search-attribute list --namespace "$ns" --address "$TEMPORAL_ADDRESS" 2>/dev/null); do
    i=$((i + 1))
    if [ "$i" -ge "$attempts" ]; then
        echo "could not list search attributes of $ns" >&2
        exit 1
    fi
    sleep 2
done

for pair in $SEARCH_ATTRIBUTES; do
    name=${pair%%=*}
    type=${pair#*=}
    if printf '%s\n' "$have" | grep -Eq "^[[:space:]]*$name[[:space:]]+$type[[:space:]]*$"; then
        echo "search attribute $name ($type) exists"
    elif printf '%s\n' "$have" | grep -Eq "^[[:space:]]*$name[[:space:]]"; then
        echo "search attribute $name exists with another type than $type: fix it by hand" >&2
        exit 1
    else
        temporal operator search-attribute create --namespace "$ns" \
            --address "$TEMPORAL_ADDRESS" --name "$name" --type "$type"
        echo "search attribute $name ($type) created"
    fi
done

# The end state, read back: every attribute with its type.
have=$(temporal operator search-attribute list --namespace "$ns" --address "$TEMPORAL_ADDRESS")
for pair in $SEARCH_ATTRIBUTES; do
    name=${pair%%=*}
    type=${pair#*=}
    if ! printf '%s\n' "$have" | grep -Eq "^[[:space:]]*$name[[:space:]]+$type[[:space:]]*$"; then
        echo "search attribute $name ($type) missing from namespace $ns after setup" >&2
        exit 1
    fi
done
echo "namespace $ns ready"
