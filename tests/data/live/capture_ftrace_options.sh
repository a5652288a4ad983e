#!/bin/sh
# How the demo-opt-*.trace.txt fixtures were made: one run of demo.guest.json recorded at once by
# tracefs instances that differ in one trace option or clock each (root; run under `unshare -m`
# so the tracefs mount is private: `unshare -m sh capture_ftrace_options.sh OUTDIR`).
# Global tracing is untouched; every instance is removed and tracefs unmounted at the end.
set -eu
OUT=${1:-.}
HERE=$(cd "$(dirname "$0")" && pwd)
TFS=/sys/kernel/tracing
mount -t tracefs nodev "$TFS"
NAMES="plain fields irqinfo0 tgid latency counter x86tsc noctx"
cleanup() {
    for n in $NAMES; do
        I=$TFS/instances/pykvmmu-opt-$n
        [ -d "$I" ] || continue
        echo 0 > "$I/tracing_on"; echo 0 > "$I/events/enable"; echo > "$I/set_event_pid"
        rmdir "$I"
    done
    umount "$TFS"
}
trap cleanup EXIT
for n in $NAMES; do
    I=$TFS/instances/pykvmmu-opt-$n
    mkdir "$I"
    echo 0 > "$I/tracing_on"
    echo 4096 > "$I/buffer_size_kb"
    case $n in
        fields) echo 1 > "$I/options/fields" ;;
        irqinfo0) echo 0 > "$I/options/irq-info" ;;
        tgid) echo 1 > "$I/options/record-tgid" ;;
        latency) echo 1 > "$I/options/latency-format" ;;
        counter) echo counter > "$I/trace_clock" ;;
        x86tsc) echo x86-tsc > "$I/trace_clock" ;;
        noctx) echo 0 > "$I/options/context-info" ;;
    esac
    echo 1 > "$I/options/event-fork"
    echo $$ > "$I/set_event_pid"
    echo 1 > "$I/events/kvmmmu/enable"
    echo 1 > "$I/tracing_on"
done
python3 -m pykvmmu guest run "$HERE/demo.guest.json" > /dev/null
for n in $NAMES; do
    I=$TFS/instances/pykvmmu-opt-$n
    echo 0 > "$I/tracing_on"
    cat "$I/trace" > "$OUT/demo-opt-$n.trace.txt"
done
