#!/usr/bin/env bash
# Starts (or resumes) the background training chains of the DLF and PerCoV2 small defaults: one
# process per chain, one thread each, nice 10, checkpoints in ~/.cache/latentcodec/runs/NAME. Every stage
# runs with --resume, so calling this again after a reboot continues where each chain stopped (a
# finished stage returns at once and the next one starts). Logs: ~/.cache/latentcodec/runs/CONFIG.log,
# stage starts, ends and failures in chains.log.
#   bash scripts/train_defaults.sh            # both chains
#   bash scripts/train_defaults.sh dlf        # one of them: dlf | percov2
# Pause them (e.g. for the test suite): pkill -STOP -f "latentcodec train"; continue: pkill -CONT -f ...
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${HOME}/.cache/latentcodec/runs"
mkdir -p "$runs"

stages_of() {
    case "$1" in
        dlf) echo "dlf_small_align dlf_small_pixel" ;;
        percov2) echo "percov2_small_vae percov2_small_flow" ;;
        *) echo "unknown chain $1 (dlf | percov2)" >&2; return 2 ;;
    esac
}

run_chain() {  # runs the stages one after another; a failed stage stops its chain (the next would
    local name  # start from a missing or partial run)
    for name in "$@"; do
        echo "$(date -u +%FT%TZ) $name started" >> "$runs/chains.log"
        if ! OMP_NUM_THREADS=1 nice -n 10 latentcodec train "latentcodec/training/configs/$name.yaml" --resume \
                >> "$runs/$name.log" 2>&1; then
            echo "$(date -u +%FT%TZ) $name failed: see $runs/$name.log" >> "$runs/chains.log"
            return 1
        fi
        echo "$(date -u +%FT%TZ) $name finished" >> "$runs/chains.log"
    done
}

for chain in ${@:-dlf percov2}; do
    stages="$(stages_of "$chain")"
    pid_file="$runs/chain-$chain.pid"
    if [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2> /dev/null; then
        echo "the $chain chain is already running (pid $(cat "$pid_file"))"
        continue
    fi
    # shellcheck disable=SC2086  # the stage names are words
    run_chain $stages < /dev/null > /dev/null 2>&1 &
    echo $! > "$pid_file"
    disown
    echo "started the $chain chain ($stages), logs in $runs"
done
