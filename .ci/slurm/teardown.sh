#!/usr/bin/env bash
# Stop the single-node SLURM cluster that .ci/slurm/setup.sh started: cancel its jobs, then stop,
# by PID, exactly the daemons listed in $MINIALBERT_SLURM_STATE/pids (newest first). Daemons
# setup.sh found already running are not listed there and are left alone. Safe to run twice.
set -uo pipefail

STATE=${MINIALBERT_SLURM_STATE:-/tmp/minialbert-slurm}
PIDS=$STATE/pids

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        exec sudo -n --preserve-env=MINIALBERT_SLURM_STATE bash "$0" "$@"
    fi
    echo "slurm-teardown: needs root (or passwordless sudo)" >&2
    exit 1
fi
if [ ! -s "$PIDS" ]; then
    echo "slurm-teardown: nothing to stop ($PIDS is empty or missing)"
    rm -f "$PIDS"
    exit 0
fi

# Jobs first: their processes live under slurmstepd and would outlive slurmd.
if grep -q "^slurmctld " "$PIDS" && command -v squeue >/dev/null; then
    jobs=$(timeout 10 squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        echo "slurm-teardown: cancelling jobs $jobs"
        # shellcheck disable=SC2086
        timeout 10 scancel $jobs 2>/dev/null || true
        for _ in $(seq 30); do
            [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
fi

status=0
# reverse start order: slurmd, slurmctld, slurmdbd, mariadbd, munged
while read -r name pid; do
    [ -n "$pid" ] || continue
    if [ ! -r "/proc/$pid/comm" ] || [ "$(cat "/proc/$pid/comm")" != "$name" ]; then
        echo "slurm-teardown: $name (pid $pid) is not running"
        continue
    fi
    kill -TERM "$pid"
    for _ in $(seq 60); do
        [ -e "/proc/$pid" ] || break
        sleep 0.25
    done
    if [ -e "/proc/$pid" ]; then
        echo "slurm-teardown: $name (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 1
    fi
    if [ -e "/proc/$pid" ]; then
        echo "slurm-teardown: ERROR: $name (pid $pid) is still running" >&2
        status=1
        continue
    fi
    echo "slurm-teardown: stopped $name (pid $pid)"
    # daemons running as slurm cannot remove their own pid file from /run
    for f in /run/$name.pid /run/munge/$name.pid; do
        if [ "$(cat "$f" 2>/dev/null)" = "$pid" ]; then rm -f "$f"; fi
    done
done < <(tac "$PIDS")
rm -f "$PIDS"
exit $status
