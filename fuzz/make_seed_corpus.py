"""Regenerate the seed corpus: run the built-in engine on each target for a few seconds,
then keep a small set of inputs that together cover every feature seen (greedy).

Usage: python fuzz/make_seed_corpus.py [--time 5] [--max 16] [TARGET ...]
"""
import argparse
import hashlib
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pykvmmu import fuzz as F  # noqa: E402


def distill(name, inputs, limit):
    """Greedy set cover of the features, smallest inputs first among equals."""
    t = F.TARGETS[name]
    feats = {}
    for d in inputs:
        f, fail = F.run_one(t, d)
        if fail is None:
            feats[d] = f
    chosen, covered = [], set()
    while len(chosen) < limit:
        best = max(feats, key=lambda d: (len(feats[d] - covered), -len(d)), default=None)
        if best is None or not feats[best] - covered:
            break
        chosen.append(best)
        covered |= feats.pop(best)
    return chosen, covered


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("targets", nargs="*")
    ap.add_argument("--time", type=float, default=5.0)
    ap.add_argument("--max", type=int, default=16)
    a = ap.parse_args()
    root = F.SEED_CORPUS
    for name in a.targets or list(F.TARGETS):
        tmp = tempfile.mkdtemp()
        try:
            F.fuzz_random(name, seconds=a.time, seed=1, save_corpus=tmp, out_dir=tmp + "/crashes",
                          quiet=True)
            inputs = F.load_corpus(name, root) + F.load_corpus("", tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        chosen, covered = distill(name, inputs, a.max)
        d = os.path.join(root, name)
        os.makedirs(d, exist_ok=True)
        for fn in os.listdir(d):
            os.remove(os.path.join(d, fn))
        for data in chosen:
            with open(os.path.join(d, hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
                f.write(data)
        print(f"{name}: {len(chosen)} files covering {len(covered)} features")


if __name__ == "__main__":
    main()
