#!/bin/sh
# Container entrypoint: facegan subcommands go to the facegan CLI, anything else runs as given.
# exec keeps the command as PID 1's replacement, so SIGTERM reaches it directly.
set -eu
case "${1:-}" in
  prepare|train|sample|synth) exec facegan "$@" ;;
  *) exec "$@" ;;
esac
