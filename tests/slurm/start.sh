#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine for the tests marked `slurm`: munge and
# slurm-wlm (installed with apt where missing, as root), a minimal slurm.conf in a temp folder
# (/etc/slurm/slurm.conf points to it), then munged, slurmctld and slurmd. Stop it with stop.sh.
set -euo pipefail
DIR=${LTC_SLURM_DIR:-/tmp/ltc-slurm}
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  if [ "$(id -u)" != 0 ]; then echo "slurm-wlm and munge are missing and only root can install them" >&2; exit 1; fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi
mkdir -p "$DIR/state" "$DIR/slurmd" /run/munge /var/log/munge /var/lib/munge /etc/slurm
[ -s /etc/munge/munge.key ] || { mkdir -p /etc/munge; dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
chmod 400 /etc/munge/munge.key
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
pgrep -x munged >/dev/null || (munged --force 2>/dev/null || sudo -u munge munged)
HOST=$(hostname -s)
MEMORY=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
cat > "$DIR/slurm.conf" <<CONF
ClusterName=ltc
SlurmctldHost=$HOST
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
KillWait=2
MinJobAge=600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/slurmd
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
NodeName=$HOST CPUs=$(nproc) RealMemory=$MEMORY State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
ln -sf "$DIR/slurm.conf" /etc/slurm/slurm.conf
slurmctld -c -f "$DIR/slurm.conf"
slurmd -c -f "$DIR/slurm.conf"
for _ in $(seq 50); do
  if sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed|alloc"; then echo "slurm up: $(sinfo -h -o '%P %D %c %T')"; exit 0; fi
  sleep 0.2
done
echo "slurm did not come up; see $DIR/slurmctld.log and $DIR/slurmd.log" >&2
exit 1
