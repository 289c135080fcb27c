#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this machine, for tests/test_slurm.py.
#
#   sudo .ci/slurm/setup.sh      # idempotent: a healthy cluster it started before is left alone
#   sudo .ci/slurm/teardown.sh   # stops, by PID, only the daemons this script started
#
# What it does (Debian 12, root, no systemd needed; see docs/slurm.md):
#   1. apt-get install slurm-wlm munge mariadb-server slurmdbd if any is missing;
#   2. writes /etc/slurm/{slurm,gres,slurmdbd}.conf (node line from `slurmd -C`; two fake GPUs,
#      gres.conf File=/dev/null; partitions `debug` (default) and `gpu`; accounting via slurmdbd);
#   3. starts munged, mariadbd, slurmdbd, slurmctld, slurmd; registers cluster, account, user;
#   4. waits until `sinfo` shows the node idle and `sacct` answers, then runs a smoke job.
# PIDs of the daemons it started go to $MINIALBERT_SLURM_STATE/pids ("name pid" per line);
# daemons that were already running (say, a munged of the machine) are used and left alone.
# Exit status 0: cluster ready. Non-zero: a one-line reason on stderr (and the logs to look at).
#
# Environment: MINIALBERT_SLURM_STATE (default /tmp/minialbert-slurm), MINIALBERT_SLURM_SMOKE=0
# skips the smoke jobs, MINIALBERT_SLURM_USERS (extra users to put in the test account),
# MINIALBERT_SLURM_FORCE=1 overwrites a /etc/slurm/slurm.conf this script did not write.
set -euo pipefail

STATE=${MINIALBERT_SLURM_STATE:-/tmp/minialbert-slurm}
PIDS=$STATE/pids
LOGDIR=/var/log/slurm
CLUSTER=minialbert
ACCOUNT=testacct
MARKER="# managed by minialbert .ci/slurm/setup.sh"
T0=$(date +%s)

say() { echo "[slurm-setup +$(($(date +%s) - T0))s] $*"; }
die() {
    echo "slurm-setup: ERROR: $*" >&2
    echo "slurm-setup: logs: $LOGDIR/*.log, $STATE/*.log" >&2
    exit 1
}

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        exec sudo -n --preserve-env=MINIALBERT_SLURM_STATE,MINIALBERT_SLURM_SMOKE,MINIALBERT_SLURM_USERS,MINIALBERT_SLURM_FORCE \
            bash "$0" "$@"
    fi
    die "needs root (or passwordless sudo) to install and start SLURM daemons"
fi
mkdir -p "$STATE"
touch "$PIDS"

# ---------------------------------------------------------------- helpers
# alive NAME PIDFILE: the pid in PIDFILE runs the binary NAME.
alive() {
    local pid
    pid=$(cat "$2" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$1" ]
}
# record NAME PIDFILE: remember a daemon we started (teardown.sh stops exactly these).
record() {
    local pid
    pid=$(cat "$2")
    grep -v "^$1 " "$PIDS" >"$PIDS.tmp" || true
    echo "$1 $pid" >>"$PIDS.tmp"
    mv "$PIDS.tmp" "$PIDS"
    say "started $1 (pid $pid)"
}
# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.5 s.
wait_for() {
    local limit=$1 what=$2 i
    shift 2
    for ((i = 0; i < limit * 2; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    die "timed out after ${limit}s waiting for $what"
}
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

cluster_healthy() {
    local node
    node=$(hostname -s)
    [ "$(sinfo -h -n "$node" -o %t 2>/dev/null | head -1)" = idle ] || return 1
    sacct -n -X -S now-1minutes >/dev/null 2>&1 || return 1
    grep -q "^slurmd " "$PIDS" # started by us, so that teardown.sh can stop it
}

# ---------------------------------------------------------------- 0. already up?
if command -v sinfo >/dev/null && alive slurmctld /run/slurmctld.pid && alive slurmd /run/slurmd.pid \
    && alive slurmdbd /run/slurmdbd.pid && cluster_healthy; then
    say "cluster already running and healthy; nothing to do"
    sinfo
    exit 0
fi

# ---------------------------------------------------------------- 1. packages
PACKAGES=(slurm-wlm munge mariadb-server slurmdbd)
missing=()
for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian/Ubuntu only"
    # No daemon may start from a maintainer script (no systemd here; we start them ourselves).
    policy_rc=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e $policy_rc ]; then
        printf '#!/bin/sh\nexit 101\n' >$policy_rc && chmod 755 $policy_rc && own_policy=1
    fi
    apt_install() {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
            >"$STATE/apt.log" 2>&1
    }
    if ! apt_install; then
        say "apt-get install failed; running apt-get update and retrying"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$STATE/apt.log" 2>&1 || true
        apt_install || {
            [ $own_policy = 1 ] && rm -f $policy_rc
            die "apt-get install ${missing[*]} failed (see $STATE/apt.log)"
        }
    fi
    [ $own_policy = 1 ] && rm -f $policy_rc
    say "packages installed"
fi
for b in slurmctld slurmd slurmdbd munged mariadbd sinfo sacct sacctmgr sbatch srun; do
    command -v $b >/dev/null || [ -x /usr/sbin/$b ] || die "$b not found after installing ${PACKAGES[*]}"
done

# ---------------------------------------------------------------- 2. configuration
if [ -e /etc/slurm/slurm.conf ] && ! grep -qF "$MARKER" /etc/slurm/slurm.conf \
    && [ "${MINIALBERT_SLURM_FORCE:-0}" != 1 ]; then
    die "/etc/slurm/slurm.conf exists and was not written by this script (a real cluster?); \
set MINIALBERT_SLURM_FORCE=1 to overwrite it"
fi
mkdir -p /etc/slurm $LOGDIR /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /run/munge /run/mysqld
chown slurm:slurm $LOGDIR /var/lib/slurm/slurmctld
chown munge:munge /run/munge
chown mysql:mysql /run/mysqld

NODE=$(hostname -s)
HW=$(/usr/sbin/slurmd -C | head -1) || die "slurmd -C failed"
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$HW"; }
CPUS=$(field CPUs)
BOARDS=$(field Boards)
SOCKETS=$(field SocketsPerBoard)
CORES=$(field CoresPerSocket)
THREADS=$(field ThreadsPerCore)
MEM=$(field RealMemory)
[ -n "$CPUS" ] && [ -n "$MEM" ] || die "could not parse 'slurmd -C': $HW"
MEM=$((MEM * 9 / 10)) # headroom: a node configured with more memory than it has goes INVAL
say "node $NODE: CPUs=$CPUS RealMemory=$MEM (from slurmd -C)"

# A password for the accounting database, kept so that a re-run keeps working with it.
[ -s "$STATE/dbpass" ] || (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$STATE/dbpass")
DBPASS=$(cat "$STATE/dbpass")

cat >/etc/slurm/slurm.conf <<EOF
$MARKER
# A single-node test cluster: do not use for anything else. Regenerated on every run.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=10
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
# sacct -o Comment shows the plugin's rule_<name>_wildcards_<...> comment
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
GresTypes=gpu
ReturnToService=2
# squeue keeps finished jobs for 10 min, so the plugin's squeue status command would work too.
MinJobAge=600
# SIGTERM, then SIGKILL 10 s later on time limit or scancel: the window to write a checkpoint.
KillWait=10
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS Boards=$BOARDS SocketsPerBoard=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$MEM Gres=gpu:fake:2 State=UNKNOWN
# Preemption as on shared university clusters: a job in partition urgent (higher PriorityTier) requeues
# the jobs it needs room from (they get SIGTERM, KillWait, SIGKILL, then start again).
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=gpu Nodes=$NODE MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes=$NODE MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF
# Two fake GPUs: SLURM only needs a file per device; jobs get CUDA_VISIBLE_DEVICES=0[,1].
cat >/etc/slurm/gres.conf <<EOF
$MARKER
NodeName=$NODE Name=gpu Type=fake File=/dev/null
NodeName=$NODE Name=gpu Type=fake File=/dev/zero
EOF
(
    umask 077
    cat >/etc/slurm/slurmdbd.conf <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=/run/slurmdbd.pid
LogFile=$LOGDIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
EOF
)
chown slurm:slurm /etc/slurm/slurmdbd.conf
chmod 600 /etc/slurm/slurmdbd.conf
# slurmctld refuses to start when its saved state belongs to another cluster name.
if [ -e /var/lib/slurm/slurmctld/clustername ] \
    && [ "$(cat /var/lib/slurm/slurmctld/clustername)" != $CLUSTER ]; then
    rm -f /var/lib/slurm/slurmctld/clustername
fi

# ---------------------------------------------------------------- 3. daemons
# munge
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munged already answers"
else
    if [ ! -s /etc/munge/munge.key ]; then
        runuser -u munge -- /usr/sbin/mungekey --create >/dev/null 2>&1 || die "cannot create /etc/munge/munge.key"
    fi
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged >"$STATE/munged.log" 2>&1 || die "munged failed to start (see $STATE/munged.log)"
    wait_for 10 "munged to write its pid file" alive munged /run/munge/munged.pid
    record munged /run/munge/munged.pid
    wait_for 10 "munge" bash -c 'munge -n | unmunge'
fi

# MariaDB (socket only: no TCP port to collide with)
if mariadb-admin ping >/dev/null 2>&1; then
    say "mariadbd already answers"
else
    if [ ! -d /var/lib/mysql/mysql ]; then
        mariadb-install-db --user=mysql --skip-test-db >"$STATE/mariadb-install.log" 2>&1 \
            || die "mariadb-install-db failed (see $STATE/mariadb-install.log)"
    fi
    setsid /usr/sbin/mariadbd --user=mysql --skip-networking --pid-file=/run/mysqld/mysqld.pid \
        --socket=/run/mysqld/mysqld.sock --log-error="$STATE/mariadbd.log" \
        --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
    echo $! >"$STATE/mariadbd.pid"
    record mariadbd "$STATE/mariadbd.pid"
    wait_for 60 "mariadbd (see $STATE/mariadbd.log)" mariadb-admin ping
fi
mariadb -u root <<EOF || die "cannot create the slurm database and user in MariaDB"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF

# slurmdbd, then the cluster must be known to it before slurmctld registers
if ! alive slurmdbd /run/slurmdbd.pid; then
    rm -f /run/slurmdbd.pid # a stale one from a killed daemon would be read as ours
    /usr/sbin/slurmdbd || die "slurmdbd failed to start (see $LOGDIR/slurmdbd.log)"
    wait_for 15 "slurmdbd to write /run/slurmdbd.pid" alive slurmdbd /run/slurmdbd.pid
    record slurmdbd /run/slurmdbd.pid
fi
wait_for 60 "slurmdbd to answer sacctmgr (see $LOGDIR/slurmdbd.log)" sacctmgr -n show cluster
if ! sacctmgr -n -P show cluster format=cluster | grep -qx $CLUSTER; then
    sacctmgr -i add cluster $CLUSTER >/dev/null || die "sacctmgr add cluster $CLUSTER failed"
fi

if ! alive slurmctld /run/slurmctld.pid; then
    rm -f /run/slurmctld.pid # a stale one from a killed daemon would be read as ours
    /usr/sbin/slurmctld || die "slurmctld failed to start (see $LOGDIR/slurmctld.log)"
    wait_for 15 "slurmctld to write /run/slurmctld.pid" alive slurmctld /run/slurmctld.pid
    record slurmctld /run/slurmctld.pid
else
    scontrol reconfigure >/dev/null 2>&1 || true
fi
wait_for 30 "slurmctld to answer (see $LOGDIR/slurmctld.log)" scontrol ping
if ! alive slurmd /run/slurmd.pid; then
    rm -f /run/slurmd.pid # a stale one from a killed daemon would be read as ours
    /usr/sbin/slurmd || die "slurmd failed to start (see $LOGDIR/slurmd.log)"
    wait_for 15 "slurmd to write /run/slurmd.pid" alive slurmd /run/slurmd.pid
    record slurmd /run/slurmd.pid
fi

# account and users (the user who runs the tests must be in the account)
if ! sacctmgr -n -P show account format=account | grep -qx $ACCOUNT; then
    sacctmgr -i add account $ACCOUNT Cluster=$CLUSTER Description=minialbert-ci Organization=ci >/dev/null \
        || die "sacctmgr add account $ACCOUNT failed"
fi
for u in root ${SUDO_USER:-} ${MINIALBERT_SLURM_USERS:-}; do
    id "$u" >/dev/null 2>&1 || continue
    if ! sacctmgr -n -P show assoc where user="$u" account=$ACCOUNT format=user | grep -qx "$u"; then
        sacctmgr -i add user "$u" Account=$ACCOUNT DefaultAccount=$ACCOUNT >/dev/null \
            || die "sacctmgr add user $u failed"
    fi
done

# ---------------------------------------------------------------- 4. ready?
node_idle() {
    local st
    st=$(sinfo -h -n "$NODE" -o %t 2>/dev/null | head -1)
    case $st in
    idle) return 0 ;;
    down* | drain* | inval* | fail*)
        scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
        return 1
        ;;
    *) return 1 ;;
    esac
}
wait_for 60 "node $NODE to become idle (sinfo: $(sinfo -h -o '%P %t' 2>/dev/null | tr '\n' ' '); see $LOGDIR/slurmd.log)" node_idle
wait_for 30 "sacct to answer" sacct -n -X -S now-1minutes
say "cluster up: $(sinfo -h -o '%P %t %G' | tr '\n' ';')"

if [ "${MINIALBERT_SLURM_SMOKE:-1}" != 0 ]; then
    out=$(srun -N1 -t 1 -A $ACCOUNT hostname 2>&1) || die "smoke test 'srun -N1 hostname' failed: $out"
    out=$(srun -N1 -t 1 -A $ACCOUNT -p gpu --gpus=1 bash -c 'echo $CUDA_VISIBLE_DEVICES' 2>&1) \
        || die "smoke test 'srun --gpus=1' failed: $out"
    [ "$out" = 0 ] || die "smoke test: a --gpus=1 job saw CUDA_VISIBLE_DEVICES='$out', expected 0"
    jobid=$(sbatch --parsable -t 1 -A $ACCOUNT --gpus=1 -o /dev/null --wrap true) || die "smoke test: sbatch failed"
    # the job is in the accounting database at once, even before it ran
    wait_for 30 "sacct to list smoke job $jobid" bash -c "sacct -n -X -j $jobid -o jobid | grep -q $jobid"
    say "smoke jobs ok (srun, srun --gpus=1, sbatch --gpus=1 -> sacct)"
fi
say "ready in $(($(date +%s) - T0))s; daemons started by this script: $(tr '\n' ' ' <"$PIDS")"
