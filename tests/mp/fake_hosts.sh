#!/bin/sh
# Used by hier.sh: MLRT_HOSTNAME=host<i> for groups of $PER local ranks.
# Lay out "hosts" of $PER ranks each on this machine.
MLRT_HOSTNAME=host$((MLRT_LOCAL_RANK / PER)) exec "$@"
