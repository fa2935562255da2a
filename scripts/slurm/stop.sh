#!/usr/bin/env bash
# Stop the daemons that scripts/slurm/start.sh started, by the PID files it kept (newest first).
# A MariaDB or munged that start.sh found already running is left alone.
set -uo pipefail
DIR="${OMICSGEN_SLURM_DIR:-/var/lib/omicsgen-slurm}"
for name in slurmd slurmctld slurmdbd mariadb munged; do
  pidfile="$DIR/run/$name.pid"
  [ -s "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
  # only a process of that name: a stale PID file may name a PID that now belongs to something else
  if [ -n "$comm" ] && { [ "$comm" = "$name" ] || { [ "$name" = mariadb ] && [ "$comm" = mariadbd ]; }; }; then
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { echo "stop.sh: $name ($pid) ignored TERM, killing" >&2; kill -KILL "$pid"; }
    echo "stop.sh: stopped $name ($pid)"
  fi
  rm -f "$pidfile"
done
