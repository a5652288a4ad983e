#!/bin/sh
# How demo-tsc-v7-nocomp.dat.gz and demo-tsc.trace.txt.gz were made: one run of demo.guest.json
# recorded by a tracefs instance whose trace_clock is x86-tsc, its `trace` text read, then the
# instance taken by `trace-cmd extract -B` (trace-cmd 3.1.6, which removes the instance) and
# written without compression by `trace-cmd convert --compression none`.  Root, under
# `unshare -m` (private tracefs mount; an empty file over /proc/kallsyms and a scratch file
# over /proc/sys/kernel/ftrace_enabled, which trace-cmd writes).  Global tracing is untouched.
set -eu
OUT=${1:-.}
HERE=$(cd "$(dirname "$0")" && pwd)
SCRATCH=$(mktemp -d)
TFS=/sys/kernel/tracing
mount -t tracefs nodev $TFS
I=$TFS/instances/pykvmmu-tsc-$$
mkdir $I
cleanup() {
    if [ -d $I ]; then
        echo 0 > $I/tracing_on; echo 0 > $I/events/enable; echo > $I/set_event_pid; rmdir $I
    fi
    umount $TFS; rm -rf "$SCRATCH"
}
trap cleanup EXIT
echo 0 > $I/tracing_on; echo 4096 > $I/buffer_size_kb
echo x86-tsc > $I/trace_clock
echo 1 > $I/options/event-fork; echo $$ > $I/set_event_pid
echo 1 > $I/events/kvmmmu/enable
echo 1 > $I/tracing_on
python3 -m pykvmmu guest run "$HERE/demo.guest.json" > /dev/null
echo 0 > $I/tracing_on
cat $I/trace > "$OUT/demo-tsc.trace.txt"
touch "$SCRATCH/ftrace_enabled" "$SCRATCH/kallsyms"
mount --bind "$SCRATCH/ftrace_enabled" /proc/sys/kernel/ftrace_enabled
mount --bind "$SCRATCH/kallsyms" /proc/kallsyms
trace-cmd extract -B "$(basename $I)" -o "$SCRATCH/tsc.dat" > /dev/null
umount /proc/kallsyms; umount /proc/sys/kernel/ftrace_enabled
trace-cmd convert -i "$SCRATCH/tsc.dat" -o "$OUT/demo-tsc-v7-nocomp.dat" --file-version 7 --compression none
