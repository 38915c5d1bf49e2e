#!/usr/bin/env bash
# Stop the cluster started by .ci/slurm_up.sh: cancel its jobs, then TERM each daemon by its pid file
# (KILL after 10 s). `--purge` also deletes $SLURM_BASE.
set -uo pipefail
BASE=${SLURM_BASE:?set SLURM_BASE to the directory given to slurm_up.sh}
if [ -f "$BASE/etc/slurm.conf" ]; then
  SLURM_CONF="$BASE/etc/slurm.conf" scancel --user="$(id -un)" 2>/dev/null
fi
for pid_file in "$BASE/run/slurmd.pid" "$BASE/run/slurmctld.pid" "$BASE/munge/munged.pid"; do
  [ -f "$pid_file" ] || continue
  pid=$(cat "$pid_file")
  kill -TERM "$pid" 2>/dev/null || continue
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  rm -f "$pid_file"
done
if [ "${1:-}" = "--purge" ]; then
  rm -rf "$BASE"
fi
exit 0
