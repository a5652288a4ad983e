#!/bin/sh
# How the tests/data/tracefmt sched fixtures were made (root, a mounted tracefs at $TFS).
# Uses its own tracefs instance, leaves global tracing untouched, removes the instance after.
set -eu
TFS=${TFS:-/sys/kernel/tracing}
OUT=${1:-.}
I=$TFS/instances/trace-helper-$$
mkdir "$I"
trap 'echo 0 > "$I/tracing_on"; echo 0 > "$I/events/enable"; rmdir "$I"' EXIT
echo 0 > "$I/tracing_on"
echo 16 > "$I/buffer_size_kb"
for e in sched/sched_switch sched/sched_wakeup sched/sched_process_exec sched/sched_process_exit; do
    echo 1 > "$I/events/$e/enable"
done
echo 1 > "$I/tracing_on"
sh -c 'ls / >/dev/null; /bin/true; sleep 0.05; /bin/true'
echo 0 > "$I/tracing_on"
cat "$I/trace" > "$OUT/sched_print.txt"
echo 1 > "$I/options/fields"
cat "$I/trace" > "$OUT/sched_fields.txt"
echo 0 > "$I/options/fields"
echo 1 > "$I/options/stacktrace"
echo 1 > "$I/tracing_on"
sh -c '/bin/true'
echo 0 > "$I/tracing_on"
cat "$I/trace" > "$OUT/sched_stack.txt"
echo 0 > "$I/options/stacktrace"
mkdir -p "$OUT/raw/events/sched" "$OUT/raw/per_cpu"
cp "$TFS/events/header_page" "$TFS/events/header_event" "$OUT/raw/"
for e in sched_switch sched_wakeup sched_process_exec sched_process_exit; do
    mkdir -p "$OUT/raw/events/sched/$e"; cp "$TFS/events/sched/$e/format" "$OUT/raw/events/sched/$e/"
done
mkdir -p "$OUT/raw/events/ftrace/kernel_stack"
cp "$TFS/events/ftrace/kernel_stack/format" "$OUT/raw/events/ftrace/kernel_stack/"
cat /proc/version > "$OUT/raw/proc_version"
for c in "$I"/per_cpu/cpu*; do
    n=$(basename "$c"); mkdir -p "$OUT/raw/per_cpu/$n"
    python3 - "$c/trace_pipe_raw" "$OUT/raw/per_cpu/$n/trace_pipe_raw" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
with open(sys.argv[2], "wb") as out:
    while True:
        try:
            b = os.read(fd, 4096)
        except BlockingIOError:
            break
        if not b:
            break
        out.write(b)
os.close(fd)
PY
    cat "$c/stats" > "$OUT/raw/per_cpu/$n/stats"
done
