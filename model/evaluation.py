"""Statistics of meta-test episodes and the per-episode files that let two evaluations be
paired (numpy only: tools/report.py reads them without building a model).

A per-episode file (`meta_test_episodes.csv`, `<stem>_episodes.csv`) has one row per test
episode: its index, a fingerprint of what was sampled (the class names and the image ids of
the task, hashed), and one column of query accuracy (a fraction) per scored checkpoint. Two
evaluations may be paired only if their fingerprints agree episode by episode: then the
per-episode differences share every source of episode-to-episode variance (which classes,
which images), and their interval is much narrower than the difference of two unpaired
intervals.
"""
import csv
import hashlib
import io

import numpy as np

EPISODE_COLUMNS = ('episode', 'fingerprint')


def confidence_interval(acc):
    """Mean and 95% half-width 1.96 * std / sqrt(n) of per-episode accuracies (metadrop
    and maml use this normal interval, with the population std)."""
    acc = np.asarray(acc, np.float64)
    return float(acc.mean()), float(1.96 * acc.std() / np.sqrt(len(acc)))


def paired_difference(acc, reference):
    """Mean and 95% half-width of the per-episode differences acc - reference (both measured
    on the same episodes), with the same normal interval as confidence_interval."""
    acc, reference = np.asarray(acc, np.float64), np.asarray(reference, np.float64)
    if acc.shape != reference.shape:
        raise ValueError(f'paired accuracies need the same episodes: {acc.shape} vs '
                         f'{reference.shape}')
    return confidence_interval(acc - reference)


def episode_fingerprints(class_names, *ids):
    """One short hex digest per task: class_names [T][way] (the names, so that two datasets
    whose class ids coincide do not pass for the same episodes) and any id arrays [T, ...]
    (the images drawn, shots, ...)."""
    out = []
    for t, names in enumerate(class_names):
        h = hashlib.sha1('\x1f'.join(str(n) for n in names).encode('utf-8'))
        for a in ids:
            row = np.ascontiguousarray(np.asarray(a)[t], dtype=np.int64)
            h.update(repr(row.shape).encode())
            h.update(row.tobytes())
        out.append(h.hexdigest()[:16])
    return out


def episodes_csv(fingerprints, columns):
    """The text of a per-episode file: columns is {label: per-episode accuracies}."""
    labels = list(columns)
    for label in labels:
        if len(columns[label]) != len(fingerprints):
            raise ValueError(f'{label}: {len(columns[label])} accuracies for '
                             f'{len(fingerprints)} episodes')
        if label in EPISODE_COLUMNS:
            raise ValueError(f'a checkpoint cannot be labelled {label!r}')
    out = io.StringIO()
    writer = csv.writer(out, lineterminator='\n')
    writer.writerow([*EPISODE_COLUMNS, *labels])
    for i, fp in enumerate(fingerprints):
        writer.writerow([i, fp, *(repr(float(columns[label][i])) for label in labels)])
    return out.getvalue()


def read_episodes_csv(path):
    """(fingerprints, {label: float64 accuracies}) of a per-episode file; ValueError (with
    the path) when it is not one."""
    with open(path, newline='') as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0][:2]) != EPISODE_COLUMNS or len(rows[0]) < 3:
        raise ValueError(f'{path} is not a per-episode file (its header must start with '
                         f'{",".join(EPISODE_COLUMNS)} and name at least one checkpoint)')
    labels = rows[0][2:]
    try:
        values = np.array([[float(v) for v in r[2:]] for r in rows[1:]], np.float64)
    except ValueError as e:
        raise ValueError(f'{path}: {e}') from None
    if values.shape != (len(rows) - 1, len(labels)):
        raise ValueError(f'{path}: every row must have {len(labels) + 2} fields')
    return [r[1] for r in rows[1:]], {label: values[:, j] for j, label in enumerate(labels)}


def first_mismatch(a, b):
    """Index of the first episode whose fingerprints differ (or where one list ends), or
    None if they are the same episodes."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))
