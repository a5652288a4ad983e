"""Write the base traces of the ``trace`` fuzz target (pykvmmu/data/fuzz_traces/*.gz) from the
test fixtures: real captures of the project's live KVM (tests/data/live/README.md,
tests/data/tracefmt) in every format the readers take.

Usage: python fuzz/make_trace_bases.py
"""
import gzip
import os
import shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "pykvmmu", "data", "fuzz_traces")
#: base name (without .gz) -> fixture (already gzip files are copied as they are)
BASES = {
    "demo.kvmcap": "tests/data/live/demo.kvmcap",                  # pykvmmu capture (gzip'd tar)
    "kfuzz-unsync-min.kvmcap": "tests/data/live/kfuzz-unsync-min.kvmcap",
    "demo-v6.dat": "tests/data/live/demo-v6.dat.gz",               # trace-cmd trace.dat v6
    "demo-v7-nocomp.dat": "tests/data/live/demo-v7-nocomp.dat.gz",  # trace.dat v7, no compression
    "demo.trace.txt": "tests/data/live/demo.trace.txt",            # kernel print format
    "demo.fields.txt": "tests/data/live/demo.fields.txt",          # ftrace options/fields
    "demo-dat.report.txt": "tests/data/live/demo-dat.report.txt",  # trace-cmd report (plugin_kvm)
    "demo-dat.report-R.txt": "tests/data/live/demo-dat.report-R.txt",  # trace-cmd report -R
    "sched_stack.txt": "tests/data/tracefmt/sched_stack.txt",      # print format + stack traces
    "old_plugin.txt": "tests/data/tracefmt/old_plugin.txt",        # old trace-cmd plugin
    "perf_prof_kvmmmu.txt": "tests/data/tracefmt/perf_prof_kvmmmu.txt",  # perf-prof kvmmmu
    "demo.perf.data": "tests/data/live/demo.perf.data.gz",         # Linux perf, perf.data file
    "demo.pipe.perf.data": "tests/data/live/demo.pipe.perf.data.gz",  # perf record -o - (pipe mode)
    "demo-g.perf.data": "tests/data/live/demo-g.perf.data.gz",     # perf record -g (callchains)
    "demo.z.perf.data": "tests/data/live/demo.z.perf.data.gz",     # perf record -z (zstd records)
    "demo.perf-script.txt": "tests/data/live/demo.perf-script.txt",  # perf script, default fields
    "demo.perf-script-F.txt": "tests/data/live/demo.perf-script-F.txt",  # perf script -F ... --ns
    "demo.perf-trace-T.txt": "tests/data/live/demo.perf-trace-T.txt.gz",  # perf trace -T
    "demo.ctf.tar": "tests/data/live/demo.ctf.tar.gz",             # perf data convert --to-ctf --all
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, src in BASES.items():
        src = os.path.join(ROOT, src)
        dst = os.path.join(OUT, name + ".gz")
        with open(src, "rb") as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":
            shutil.copyfile(src, dst)
        else:
            with open(dst, "wb") as f:
                f.write(gzip.compress(data, 9, mtime=0))
        print(f"{dst}: {os.path.getsize(dst)} bytes")


if __name__ == "__main__":
    main()
