"""Corpus directories (the seed corpus ships as package data), reproducer files and replay."""
from __future__ import annotations

import hashlib
import os
from typing import Optional

from .base import TARGETS, UnknownTarget, get_target
from .shrinker import Failure, run_one


# ---------------------------------------------------------------------- corpus and files
def repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


#: The seed corpus ships inside the package (package data), so an installed pykvmmu finds it.
SEED_CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                           "fuzz_corpus")


def corpus_dir(name: str, root: Optional[str] = None) -> str:
    """The corpus directory of target ``name`` under ``root`` (default: the shipped seed
    corpus, SEED_CORPUS); ``name=""`` is ``root`` itself when a root is given."""
    if name or root is None:
        get_target(name)
    return os.path.join(root or SEED_CORPUS, name)


def load_corpus(name: str, root: Optional[str] = None) -> list:
    d = corpus_dir(name, root)
    out = []
    if os.path.isdir(d):
        for fn in sorted(os.listdir(d)):
            p = os.path.join(d, fn)
            if os.path.isfile(p) and not fn.startswith("."):
                with open(p, "rb") as f:
                    out.append(f.read())
    return out


def target_for_file(path: str) -> Optional[str]:
    """The target a reproducer or corpus file belongs to: its parent directory if that is a
    target name, else the file name prefix before the first '-' or '.'."""
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    if parent in TARGETS:
        return parent
    base = os.path.basename(path)
    for sep in ("-", "."):
        head = base.split(sep)[0]
        if head in TARGETS:
            return head
    return None


def write_reproducer(fail: Failure, name: str, out_dir: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    h = hashlib.sha1(fail.data).hexdigest()[:12]
    path = os.path.join(out_dir, f"{name}-{fail.kind}-{h}.bin")
    with open(path, "wb") as f:
        f.write(fail.data)
    with open(path + ".txt", "w") as f:
        f.write(f"target: {name}\nsignature: {fail.signature}\n{fail.message}\n\n{fail.tb}")
    return path


def replay(path: str, name: Optional[str] = None, emit=print) -> Optional[Failure]:
    """Replay one file (or every file of a directory); returns the first failure or None."""
    paths = ([os.path.join(path, p) for p in sorted(os.listdir(path)) if not p.endswith(".txt")]
             if os.path.isdir(path) else [path])
    first = None
    for p in paths:
        tname = name or target_for_file(p)
        if tname not in TARGETS:
            raise UnknownTarget(f"{p}: cannot tell the target; name it (pykvmmu fuzz TARGET --replay "
                           f"FILE); known: {', '.join(TARGETS)}")
        with open(p, "rb") as f:
            data = f.read()
        _, fail = run_one(TARGETS[tname], data)
        if fail is None:
            emit(f"{p}: {tname}: ok ({len(data)} bytes)")
        else:
            emit(f"{p}: {tname}: FAILED ({fail.kind}) {fail.message}\n{fail.tb}")
            first = first or fail
    return first

