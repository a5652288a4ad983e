"""Decode ``kvmmmu`` tracepoints from every real source, streamed.

``open_trace(path_or_file, era=None)`` detects the format (text print format with stack
traces, ftrace ``options/fields``, ``trace-cmd report``/``-R``, libtraceevent / old
trace-cmd plugin lines, ``perf script`` and ``perf trace`` text, a pykvmmu capture
``.kvmcap``, a saved tracefs tree with raw ``trace_pipe_raw`` pages, trace-cmd
``trace.dat`` v6/v7, perf.data and perf pipe streams, CTF from ``perf data convert
--to-ctf``; gzip/xz; ``-`` for stdin) and yields :class:`TraceRecord` objects one at a
time.  Binary sources give every field of every event (whole role words, SPTEs); text gives
what the line shows (``role_known`` is the mask of role bits it states).
``parse``/``parse_file`` keep the in-memory API.

Modules: ``record`` (record type, errors), ``text`` (line formats), ``tpformat`` (format
files), ``ringbuf`` (ring-buffer pages), ``raw`` (binary records), ``capture`` (capture file
and tracefs tree), ``tracedat`` (trace.dat), ``perfdata`` (perf.data), ``ctf`` (CTF),
``stream`` (detection, era), ``report`` (summary, JSON, SPTE decoder hook).
"""
from .record import (FULL_ROLE, PAGE_EVENTS, SPTE_FIELDS, TraceArgumentError, TraceEraError, TraceError,
                     TraceFormatError, TraceRecord, TraceResult, UnsupportedTraceError)
from .report import (ERA_TO_SPTE_PROFILE, Summary, default_spte_decoder, format_record,
                     spte_profile_for, summary, to_numpy, zap_reason)
from .stream import TraceStream, detect_format, era_arg, era_for_release, open_trace
from .text import ALL_EVENTS, EVENTS, parse, parse_file, parse_line

__all__ = ["TraceRecord", "TraceResult", "TraceStream", "TraceError", "TraceFormatError",
           "TraceEraError", "TraceArgumentError", "UnsupportedTraceError", "open_trace", "parse", "parse_file",
           "parse_line", "summary", "Summary", "format_record", "zap_reason", "to_numpy",
           "default_spte_decoder", "spte_profile_for", "era_for_release", "era_arg", "detect_format",
           "EVENTS", "ALL_EVENTS", "PAGE_EVENTS", "SPTE_FIELDS", "FULL_ROLE",
           "ERA_TO_SPTE_PROFILE"]
