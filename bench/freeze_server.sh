#!/usr/bin/env bash
# Stop every chorus server this machine runs for HOLD seconds every EVERY seconds, until killed: a VM whose host
# stops giving it CPU for a moment, which no reading of the machine's load can see coming. Used beside
# `chorus bench` (its servers run as `python -m chorus.cli serve`) for the lead A/B in bench/results/lead-ab.md:
#   bench/freeze_server.sh 0.3 4 & chorus bench --systems chorus --workloads live --live-streams 24,28 ...; kill %1
set -u
hold=${1:-0.3}
every=${2:-4}
pattern=${FREEZE_PATTERN:-chorus.cli serve}
trap 'pgrep -f "$pattern" | xargs -r kill -CONT; exit 0' INT TERM
while true; do
  sleep "$every"
  pids=$(pgrep -f "$pattern" || true)
  [ -z "$pids" ] && continue
  # shellcheck disable=SC2086
  kill -STOP $pids 2> /dev/null
  sleep "$hold"
  # shellcheck disable=SC2086
  kill -CONT $pids 2> /dev/null
done
