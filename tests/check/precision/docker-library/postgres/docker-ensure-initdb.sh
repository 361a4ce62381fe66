#!/usr/bin/env bash
# docker-ensure-initdb.sh (not the entrypoint; present so the COPY resolves)
set -Eeo pipefail
