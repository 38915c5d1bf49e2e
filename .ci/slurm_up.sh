#!/usr/bin/env bash
# Start a one-node Slurm cluster on localhost without systemd (CI and tests/ops/test_slurm_requeue.py).
#   SLURM_BASE=/tmp/slurm .ci/slurm_up.sh      then   export SLURM_CONF=$SLURM_BASE/etc/slurm.conf
# Everything (munge key and socket, slurm.conf, state, logs, the jobcomp file $SLURM_BASE/log/jobcomp.txt)
# lives under $SLURM_BASE; nothing is written to /etc or /run. Needs root and the Debian packages
# slurm-wlm slurmctld slurmd munge slurm-client. Stop it with .ci/slurm_down.sh.
# Optional: SLURM_CPUS (default: all cores), SLURMCTLD_PORT / SLURMD_PORT (default 6817 / 6818).
set -euo pipefail
BASE=${SLURM_BASE:?set SLURM_BASE to a directory for the cluster}
BASE=$(mkdir -p "$BASE" && cd "$BASE" && pwd)
CPUS=${SLURM_CPUS:-$(getconf _NPROCESSORS_ONLN)}   # not nproc: it honours OMP_NUM_THREADS
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)   # must not exceed real memory, or the node drains

for pid_file in "$BASE/munge/munged.pid" "$BASE/run/slurmctld.pid" "$BASE/run/slurmd.pid"; do
  if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    echo "slurm_up: a cluster is already running under $BASE (pid file $pid_file)" >&2
    exit 1
  fi
done
mkdir -p "$BASE"/{munge,etc,log,run,spool/ctld,spool/d}
chmod 700 "$BASE/munge"                                  # munged refuses a group/world-writable socket dir

# munge: own key, socket, pid, log and seed files (there is no systemd to start the system one)
dd if=/dev/urandom of="$BASE/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$BASE/munge/munge.key"
munged --force --key-file="$BASE/munge/munge.key" --socket="$BASE/munge/munge.socket.2" \
  --pid-file="$BASE/munge/munged.pid" --log-file="$BASE/munge/munged.log" --seed-file="$BASE/munge/munged.seed"

# cred_expire=5 and bf_interval=1: a requeued job starts again after ~6 s instead of ~2 min
cat > "$BASE/etc/slurm.conf" <<CONF
ClusterName=clapci
SlurmctldHost=localhost
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$BASE/munge/munge.socket.2,cred_expire=5
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
JobCompType=jobcomp/filetxt
JobCompLoc=$BASE/log/jobcomp.txt
JobRequeue=1
ReturnToService=2
KillWait=10
StateSaveLocation=$BASE/spool/ctld
SlurmdSpoolDir=$BASE/spool/d
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF

export SLURM_CONF="$BASE/etc/slurm.conf"
slurmctld -f "$SLURM_CONF" -i
slurmd -f "$SLURM_CONF" -N localhost

# `idle*` means slurmd does not answer yet: wait for exactly `idle`
for _ in $(seq 1 300); do
  if [ "$(sinfo -h -N -o %t 2>/dev/null)" = "idle" ]; then
    echo "slurm_up: node idle; export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.1
done
echo "slurm_up: node not idle after 30 s; see $BASE/log/" >&2
sinfo -N >&2 || true
exit 1
