#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine, for tests/test_slurm.py and for trying the slurm profile.
#   node localhost (all CPUs and memory of this machine, 2 fake GPUs), partition "debug", account "omicsgen",
#   accounting (sacct) through slurmdbd and a local MariaDB; jobs run as the submitting user (root here).
# No systemd needed: munged, mariadbd, slurmdbd, slurmctld and slurmd are started directly and their PID files
# kept in $OMICSGEN_SLURM_DIR/run (default /var/lib/omicsgen-slurm) for scripts/slurm/stop.sh.
# Needs root and the packages of scripts/slurm/install.sh. Running it again restarts the SLURM daemons.
# Writes /etc/slurm/{slurm,slurmdbd,gres}.conf, so SLURM commands find the cluster without SLURM_CONF; it refuses
# to overwrite a slurm.conf it did not write. Never use it on a machine that is part of a real cluster.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "start.sh: needs root" >&2; exit 1; }
for cmd in munged mariadbd slurmdbd slurmctld slurmd sacctmgr; do
  command -v "$cmd" >/dev/null || { echo "start.sh: $cmd missing: run scripts/slurm/install.sh" >&2; exit 1; }
done

HERE="$(cd "$(dirname "$0")" && pwd)"
DIR="${OMICSGEN_SLURM_DIR:-/var/lib/omicsgen-slurm}"
CLUSTER=omicsgen ACCOUNT=omicsgen PARTITION=debug NODE=localhost
MARK="# written by omicsgen scripts/slurm/start.sh"
CONF=/etc/slurm/slurm.conf
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
  echo "start.sh: $CONF exists and was not written by this script: refusing to touch a real cluster" >&2; exit 1
fi

"$HERE/stop.sh" >/dev/null 2>&1 || true   # a restart starts from a clean slate (drops only what we started)
mkdir -p "$DIR"/{run,log,state,spool,dev} /etc/slurm
t0=$(date +%s)
wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll until COMMAND succeeds
  local limit=$1 what=$2; shift 2
  for _ in $(seq $((limit * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  echo "start.sh: $what did not come up in ${limit}s; logs in $DIR/log" >&2; return 1
}

# --- munge: SLURM's authentication, as the munge user ---
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
[ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null || \
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
if ! (munge -n | unmunge) >/dev/null 2>&1; then
  runuser -u munge -- munged --pid-file=/run/munge/munged.pid
  wait_for 10 munged sh -c 'munge -n | unmunge'
  cp /run/munge/munged.pid "$DIR/run/munged.pid"
fi

# --- MariaDB: the accounting database behind slurmdbd (sacct) ---
install -d -o mysql -g mysql -m 0755 /run/mysqld
if ! mariadb -e 'select 1' >/dev/null 2>&1; then
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$DIR/log/mariadb-install.log" 2>&1
  mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock --skip-networking \
    --pid-file=/run/mysqld/omicsgen-slurm.pid --log-error="$DIR/log/mariadb.log" >/dev/null 2>&1 &
  wait_for 30 mariadb mariadb -e 'select 1'
  cat /run/mysqld/omicsgen-slurm.pid >"$DIR/run/mariadb.pid"
fi
mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'omicsgen-slurm';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

# --- fake GPUs: gres.conf needs character devices (regular files drain the node) ---
for i in 0 1; do [ -c "$DIR/dev/gpu$i" ] || { rm -f "$DIR/dev/gpu$i"; mknod "$DIR/dev/gpu$i" c 1 3; }; done

# --- configuration ---
read -r CPUS MEM < <(slurmd -C | awk '{for(i=1;i<=NF;i++){split($i,kv,"="); if(kv[1]=="CPUs")c=kv[2]; if(kv[1]=="RealMemory")m=kv[2]}} END{print c, m}')
MEM=$((MEM - 512))   # leave some memory to the system
cat >"$CONF" <<CONF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# no systemd or cgroups here
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=300
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$NODE
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
GresTypes=gpu
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM Gres=gpu:2 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
cat >/etc/slurm/gres.conf <<CONF
$MARK
AutoDetect=off
NodeName=$NODE Name=gpu File=$DIR/dev/gpu[0-1]
CONF
cat >/etc/slurm/slurmdbd.conf <<CONF
$MARK
AuthType=auth/munge
DbdHost=$NODE
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=omicsgen-slurm
StorageLoc=slurm_acct_db
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
CONF
chmod 0600 /etc/slurm/slurmdbd.conf

# --- SLURM daemons (each forks and writes its PID file) ---
slurmdbd
wait_for 30 slurmdbd sacctmgr -n list cluster
sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
sacctmgr -i -Q add account "$ACCOUNT" cluster="$CLUSTER" description="omicsgen tests" >/dev/null 2>&1 || true
sacctmgr -i -Q add user "$(id -un)" account="$ACCOUNT" cluster="$CLUSTER" >/dev/null 2>&1 || true
slurmctld
wait_for 30 slurmctld scontrol ping
slurmd -N "$NODE"
# wait for the node to register; a saved node state can keep it drained or down after a restart: resume it
state=""
for _ in $(seq 120); do
  state="$(sinfo -h -n "$NODE" -o %t 2>/dev/null || true)"
  case "$state" in
    idle) break ;;
    drain*|drng*|down*|fail*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
  esac
  sleep 0.25
done
[ "$state" = idle ] || { echo "start.sh: node $NODE is '$state', not idle; logs in $DIR/log" >&2; sinfo -R >&2; exit 1; }
echo "start.sh: SLURM cluster '$CLUSTER' up in $(( $(date +%s) - t0 ))s: partition $PARTITION, account $ACCOUNT," \
     "node $NODE ($CPUS CPUs, ${MEM} MB, 2 fake GPUs); stop with scripts/slurm/stop.sh"
