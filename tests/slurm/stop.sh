#!/usr/bin/env bash
# Stop the single-node SLURM cluster that start.sh started, and remove its files.
DIR=${LTC_SLURM_DIR:-/tmp/ltc-slurm}
for daemon in slurmd slurmctld; do
  [ -f "$DIR/$daemon.pid" ] && kill "$(cat "$DIR/$daemon.pid")" 2>/dev/null
done
sleep 1
pkill -x slurmd 2>/dev/null; pkill -x slurmctld 2>/dev/null
[ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$DIR/slurm.conf" ] && rm -f /etc/slurm/slurm.conf
rm -rf "$DIR"
exit 0
