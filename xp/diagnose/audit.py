"""The data audit: what the splits a run reads hold, and what is wrong with them, before training.

For train / validation / test: sizes; class counts and the imbalance ratio (classification) or the
target's range (regression); exact duplicates inside a split; inputs shared between splits after
normalisation (text: case and whitespace; arrays: the bytes of a row); the same input with
different labels; and near-duplicates across splits for text: candidates from MinHash LSH
(datasketch) over character 3-grams at an estimated Jaccard of 0.5, kept where the 3-grams' exact
Jaccard similarity is >= 0.8 and the two are not exact copies; for images (arrays of 2-D rows), a
perceptual hash (imagehash's pHash, 64 bits) within 2 bits of another split's image.

`audit()` is a pure function of the splits; `cached_audit()` keeps its result per data version
(the splits' DVC md5s), so a repeat of 20 seeds audits once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

VERSION = 1  # of the audit's JSON: a cached audit of another version is made again
PAIRS = (("test", "train"), ("validation", "train"), ("test", "validation"))  # (inputs of, in)
NEAR_JACCARD = 0.8  # a near-duplicate text: the 3-grams' Jaccard similarity at least this
NEAR_CANDIDATES = 0.5  # the LSH's threshold: lower, so that few pairs above 0.8 are missed
NEAR_PERMUTATIONS = 64
EXAMPLES = 10  # inputs quoted per finding in the JSON
NEAR_BITS = 2  # a near-duplicate image: pHashes at most this many bits apart (of 64)


def normalise_text(text: str) -> str:
    """Case and whitespace do not make two inputs different."""
    return " ".join(str(text).lower().split())


def _keys(inputs: Any) -> list[str]:
    """One key per row: the normalised text, or the md5 of an array row's bytes."""
    if isinstance(inputs, np.ndarray):
        rows = np.ascontiguousarray(inputs)
        return [hashlib.md5(row.tobytes()).hexdigest() for row in rows]
    return [normalise_text(t) for t in inputs]


def _shown(inputs: Any, index: int) -> Any:
    """How an input is quoted in the JSON: the text itself, or the row's index for an array."""
    return index if isinstance(inputs, np.ndarray) else str(inputs[index])


def audit(splits: dict[str, Any], task: str) -> dict[str, Any]:
    """Audit the splits (`{"train": Split, ...}`, each with `inputs` and `targets`).

    Returns:
        The audit as plain data: `splits` (per split: rows, duplicates, classes or target range),
        `imbalance_ratio`, `shared` (per pair `test_in_train`, ...: count, fraction of the first
        split's rows, examples), `conflicting_labels`, `near_duplicates` (text only),
        `leakage` (the fraction of test inputs that are also in train: what `xp promote`'s
        `data_audit` gate reads) and `findings` (one sentence per problem).
    """
    keys = {name: _keys(s.inputs) for name, s in splits.items()}
    out: dict[str, Any] = {"version": VERSION, "task": task, "splits": {}}
    for name, s in splits.items():
        entry: dict[str, Any] = {"rows": len(s.targets)}
        entry["duplicates"] = len(keys[name]) - len(set(keys[name]))
        targets = np.asarray(s.targets)
        if task == "classification":
            entry["classes"] = {str(k): v for k, v in sorted(Counter(targets.tolist()).items())}
        elif len(targets):
            entry["target"] = {"min": float(targets.min()), "max": float(targets.max()),
                               "mean": float(targets.mean())}  # fmt: skip
        out["splits"][name] = entry
    train_classes = out["splits"].get("train", {}).get("classes")
    if train_classes:
        counts = list(train_classes.values())
        out["imbalance_ratio"] = max(counts) / min(counts)
    out["shared"] = {}
    for first, second in PAIRS:
        if first not in keys or second not in keys:
            continue
        other = set(keys[second])
        hits = [i for i, k in enumerate(keys[first]) if k in other]
        rows = len(keys[first])
        out["shared"][f"{first}_in_{second}"] = {
            "count": len(hits), "fraction": len(hits) / rows if rows else 0.0,
            "examples": [_shown(splits[first].inputs, i) for i in hits[:EXAMPLES]],
        }  # fmt: skip
    out["conflicting_labels"] = _conflicts(splits, keys) if task == "classification" else None
    arrays = [s.inputs for s in splits.values() if isinstance(s.inputs, np.ndarray)]
    if not arrays:
        out["near_duplicates"] = _near_duplicates(splits, keys)
    elif len(arrays) == len(splits) and all(a.ndim in (3, 4) for a in arrays):
        out["near_duplicates"] = _near_images(splits, keys)
    else:
        out["near_duplicates"] = None  # (feature vectors: no perceptual hash means anything)
    out["leakage"] = out["shared"].get("test_in_train", {}).get("fraction", 0.0)
    out["findings"] = findings(out)
    return out


def _conflicts(splits: dict[str, Any], keys: dict[str, list[str]]) -> dict[str, Any]:
    """Inputs that carry more than one label, over every split."""
    labels: dict[str, set] = defaultdict(set)
    shown: dict[str, Any] = {}
    for name, s in splits.items():
        for i, (k, y) in enumerate(zip(keys[name], np.asarray(s.targets).tolist())):
            labels[k].add(y)
            shown.setdefault(k, _shown(s.inputs, i) if name == "train" else f"{name}:{i}")
    bad = [k for k, ys in labels.items() if len(ys) > 1]
    return {"count": len(bad), "examples": [shown[k] for k in bad[:EXAMPLES]]}


def _shingles(text: str) -> set[bytes]:
    padded = f" {text} "
    return {padded[i : i + 3].encode() for i in range(max(1, len(padded) - 2))}


def _near_duplicates(splits: dict[str, Any], keys: dict[str, list[str]]) -> dict[str, Any]:
    """Per pair, the rows of the first split that have a near-duplicate (not an exact copy) in the
    second: MinHash LSH over character 3-grams."""
    from datasketch import MinHash, MinHashLSH

    def signature(shingles: set[bytes]) -> MinHash:
        m = MinHash(num_perm=NEAR_PERMUTATIONS, seed=1)
        m.update_batch(list(shingles))
        return m

    def similar(a: set[bytes], b: set[bytes]) -> bool:
        return len(a & b) / len(a | b) >= NEAR_JACCARD

    grams = {name: [_shingles(k) for k in ks] for name, ks in keys.items()}
    sigs = {name: [signature(g) for g in gs] for name, gs in grams.items()}
    out: dict[str, Any] = {"method": f"MinHash LSH (datasketch) candidates, character 3-grams, "
                                     f"Jaccard >= {NEAR_JACCARD}"}  # fmt: skip
    for first, second in PAIRS:
        if first not in keys or second not in keys:
            continue
        lsh = MinHashLSH(threshold=NEAR_CANDIDATES, num_perm=NEAR_PERMUTATIONS)
        for i, m in enumerate(sigs[second]):
            lsh.insert(str(i), m)
        exact = set(keys[second])
        hits = []
        for i, (k, m) in enumerate(zip(keys[first], sigs[first])):
            if k in exact:
                continue
            mine = grams[first][i]
            found = sorted(int(j) for j in lsh.query(m))
            near = [j for j in found if keys[second][j] != k and similar(mine, grams[second][j])]
            if near:
                hits.append((i, near[0]))
        rows = len(keys[first])
        out[f"{first}_in_{second}"] = {
            "count": len(hits), "fraction": len(hits) / rows if rows else 0.0,
            "examples": [[str(splits[first].inputs[i]), str(splits[second].inputs[j])]
                         for i, j in hits[:EXAMPLES]],
        }  # fmt: skip
    return out


def _inputs(n: int, what: str) -> str:
    return f"{n} {what} input{'' if n == 1 else 's'}"


def _phash(image: np.ndarray) -> int:
    """The 64-bit perceptual hash of one image (H x W, or H x W x C), scaled to 0-255 first."""
    import imagehash
    from PIL import Image

    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 3:
        x = x.mean(axis=-1)
    span = float(x.max() - x.min()) or 1.0
    pixels = (255 * (x - x.min()) / span).astype(np.uint8)
    bits = imagehash.phash(Image.fromarray(pixels)).hash.flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def _near_images(splits: dict[str, Any], keys: dict[str, list[str]]) -> dict[str, Any]:
    """Per pair, the images of the first split within NEAR_BITS of an image of the second (not
    an exact copy of it)."""
    hashes = {name: np.array([_phash(x) for x in s.inputs], dtype=np.uint64)
              for name, s in splits.items()}  # fmt: skip
    out: dict[str, Any] = {"method": f"pHash (imagehash), 64 bits, at most {NEAR_BITS} apart"}
    for first, second in PAIRS:
        if first not in keys or second not in keys:
            continue
        exact = set(keys[second])
        hits = []
        for i, h in enumerate(hashes[first]):
            if keys[first][i] in exact:
                continue
            near = np.flatnonzero(np.bitwise_count(hashes[second] ^ h) <= NEAR_BITS)
            if len(near):
                hits.append((i, int(near[0])))
        rows = len(keys[first])
        out[f"{first}_in_{second}"] = {
            "count": len(hits), "fraction": len(hits) / rows if rows else 0.0,
            "examples": [[i, j] for i, j in hits[:EXAMPLES]],
        }  # fmt: skip
    return out


def findings(result: dict[str, Any]) -> list[str]:
    """One sentence per problem the audit found, the leak of test data first (empty when the data
    looks clean)."""
    out = []
    for pair, found in result["shared"].items():
        if found["count"]:
            first, second = pair.split("_in_")
            verb = "is" if found["count"] == 1 else "are"
            out.append(f"{_inputs(found['count'], first)} ({found['fraction']:.1%}) {verb} also "
                       f"in {second}")  # fmt: skip
    near = result.get("near_duplicates") or {}
    pair = near.get("test_in_train")
    if pair and pair["count"]:
        verb = "has" if pair["count"] == 1 else "have"
        out.append(f"{_inputs(pair['count'], 'test')} ({pair['fraction']:.1%}) {verb} a "
                   "near-duplicate in train")  # fmt: skip
    conflicts = result.get("conflicting_labels")
    if conflicts and conflicts["count"]:
        out.append(f"{_inputs(conflicts['count'], 'distinct')} carry more than one label")
    for name, entry in result["splits"].items():
        if entry["duplicates"]:
            out.append(f"{entry['duplicates']} duplicate inputs inside {name}")
    ratio = result.get("imbalance_ratio")
    if ratio and ratio >= IMBALANCED:
        out.append(f"train classes are imbalanced {ratio:.1f}:1")
    return out


IMBALANCED = 3.0  # a largest-to-smallest class ratio worth a line
ARTIFACT = "audit/data_audit.json"


def warning(result: dict[str, Any]) -> str | None:
    """The one line printed at a run's start when the audit found something, or None."""
    found = result["findings"]
    if not found:
        return None
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return f"data audit: {found[0]}{more}; see {ARTIFACT}"


def tags(result: dict[str, Any]) -> dict[str, str]:
    """The audit's `xp.audit.*` tags (the whole audit is the run's `audit/data_audit.json`)."""
    shared = result["shared"].get("test_in_train", {"count": 0})
    conflicts = result.get("conflicting_labels") or {"count": 0}
    out = {
        "xp.audit.leakage": f"{result['leakage']:.6g}",
        "xp.audit.test_in_train": str(shared["count"]),
        "xp.audit.duplicates": str(sum(e["duplicates"] for e in result["splits"].values())),
        "xp.audit.conflicts": str(conflicts["count"]),
        "xp.audit.findings": "; ".join(result["findings"])[:500] or "none",
    }
    near = (result.get("near_duplicates") or {}).get("test_in_train")
    if near is not None:
        out["xp.audit.near_test_in_train"] = str(near["count"])
    if result.get("imbalance_ratio"):
        out["xp.audit.imbalance"] = f"{result['imbalance_ratio']:.3g}"
    return out


def version_key(md5s: Sequence[str], task: str, reader: str) -> str:
    """The cache key of an audit: the data version (every split's md5), the task, how the files
    were read, and the audit's own version."""
    text = json.dumps([sorted(md5s), task, reader, VERSION])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cached_audit(
    cache: Path,
    key: str,
    splits: dict[str, Any],
    task: str,
    before_write: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """The audit of this data version: read from `cache/<key>.json`, else made and written there
    (atomically: seeds auditing at once each write a whole file; `before_write` is a fault
    hook)."""
    path = cache / f"{key}.json"
    try:
        found = json.loads(path.read_text())
        if found.get("version") == VERSION:
            return found
    except (OSError, ValueError):
        pass
    result = audit(splits, task)
    if before_write is not None:
        before_write()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
    return result
