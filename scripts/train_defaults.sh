#!/usr/bin/env bash
# Starts (or resumes) the background training chains of the DLF and PerCoV2 small defaults: one
# process per chain, one thread each, nice 10, checkpoints in ~/.cache/latentcodec/runs/NAME. Every stage
# runs with --resume, so calling this again after a reboot continues where each chain stopped (a
# finished stage returns at once and the next one starts). Logs: ~/.cache/latentcodec/runs/CONFIG.log,
# stage starts, ends and failures in chains.log.
#   bash scripts/train_defaults.sh            # both chains
#   bash scripts/train_defaults.sh dlf        # one of them: dlf | percov2
# Pause them (e.g. for the test suite): pkill -STOP -f "latentcodec train"; continue: pkill -CONT -f ...
# When a chain's last stage has finished, the chain runs scripts/ship_default.sh on that run into a
# candidate folder outside the tree (~/.cache/latentcodec/ship/CHAIN/candidate, its Kodak evaluation in
# .../results), then measures its token prior on Kodak (DLF: semantic bits per token; PerCoV2: the
# Table-1 schedules), so the hours of fitting and evaluation pass before anyone looks; shipping it is a
# copy into latentcodec/zoo/weights/CHAIN-default and a commit. Resumable like the stages.
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

final_run_of() {  # the run folder the chain's last stage writes
    case "$1" in
        dlf) echo "$runs/dlf-small-pixel" ;;
        percov2) echo "$runs/percov2-small-flow" ;;
    esac
}

run_chain() {  # runs the stages one after another, then the candidate export; a failed stage stops its
    local chain=$1 name  # chain (the next would start from a missing or partial run)
    shift
    for name in "$@"; do
        echo "$(date -u +%FT%TZ) $name started" >> "$runs/chains.log"
        if ! OMP_NUM_THREADS=1 nice -n 10 latentcodec train "latentcodec/training/configs/$name.yaml" --resume \
                >> "$runs/$name.log" 2>&1; then
            echo "$(date -u +%FT%TZ) $name failed: see $runs/$name.log" >> "$runs/chains.log"
            return 1
        fi
        echo "$(date -u +%FT%TZ) $name finished" >> "$runs/chains.log"
    done
    local ship="${HOME}/.cache/latentcodec/ship/$chain"
    if [[ -f "$ship/results/done" ]] && [[ "$ship/results/done" -nt "$(final_run_of "$chain")/checkpoint.pt" ]]; then
        return 0  # the candidate of this very run exists
    fi
    echo "$(date -u +%FT%TZ) $chain candidate export started" >> "$runs/chains.log"
    if ! OMP_NUM_THREADS=1 SHIP_TO="$ship/candidate" RESULTS_TO="$ship/results" nice -n 10 \
            bash scripts/ship_default.sh "$chain" "$(final_run_of "$chain")" >> "$runs/ship-$chain.log" 2>&1; then
        echo "$(date -u +%FT%TZ) $chain candidate export failed: see $runs/ship-$chain.log" >> "$runs/chains.log"
        return 1
    fi
    touch "$ship/results/done"
    echo "$(date -u +%FT%TZ) $chain candidate in $ship (Kodak results in $ship/results)" >> "$runs/chains.log"
    # The token-prior figures of the closing notes, on the candidate's own Kodak tokens (both resumable).
    local measure
    if [[ "$chain" == dlf ]]; then
        measure=(benchmarks/dlf_semantic_bits.py --weights "$ship/candidate" --threads 1
                 --out "$ship/results/semantic_bits.json")
    else
        measure=(benchmarks/percov2_token_schedules.py --weights "$ship/candidate" --threads 1
                 --cache "$ship/schedules-cache" --out "$ship/results/token_schedules.json")
    fi
    if OMP_NUM_THREADS=1 nice -n 10 python "${measure[@]}" >> "$runs/ship-$chain.log" 2>&1; then
        echo "$(date -u +%FT%TZ) $chain candidate measured: ${measure[0]}" >> "$runs/chains.log"
    else
        echo "$(date -u +%FT%TZ) $chain candidate measurement failed: see $runs/ship-$chain.log" >> "$runs/chains.log"
    fi
}

for chain in ${@:-dlf percov2}; do
    stages="$(stages_of "$chain")"
    pid_file="$runs/chain-$chain.pid"
    if [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2> /dev/null; then
        echo "the $chain chain is already running (pid $(cat "$pid_file"))"
        continue
    fi
    # shellcheck disable=SC2086  # the stage names are words
    run_chain "$chain" $stages < /dev/null > /dev/null 2>&1 &
    echo $! > "$pid_file"
    disown
    echo "started the $chain chain ($stages), logs in $runs"
done
