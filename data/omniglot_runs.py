"""Lake et al.'s 20 one-shot classification runs (brendenlake/omniglot,
python/one-shot-classification/all_runs.zip): Omniglot's own benchmark, the one its human
error rate (4.5%, Lake et al. 2015) was measured on.

Files under <data_root>/omniglot_runs/: all_runs.zip, or its extracted folders (run01 ...
run20 directly there or in one subfolder, e.g. all_runs/). The zip is preferred when both
are present, since a folder may be a partial extraction. Each run is one fixed 20-way
1-shot episode with 20 queries, drawn within one evaluation alphabet:

    runNN/training/classNN.png   20 images, one per class: the support set
    runNN/test/itemNN.png        20 images: the queries
    runNN/class_labels.txt       20 lines "runNN/test/itemXX.png runNN/training/classYY.png":
                                 the class (training image) of each query

The labels follow the official demo (demo_classification.py): the training images sorted by
file name are classes 0..19, and each query's answer is the training image its line names.
The queries are sorted by file name too; each query is paired with its answer on its own line
of class_labels.txt. Images are preprocessed exactly as data/omniglot.py preprocesses
Omniglot (its decode_png: 105x105 1-bit PNG -> 28x28, inverted so strokes are 1, read as
x / 255), with the same `resize` option. The 800 small PNGs are decoded in about a second,
so nothing is cached.

`python -m data.get_data --dataset omniglot_runs` fetches all_runs.zip. No checksum is
published, so the download is checked for the layout above. The zip is then extracted beside
itself and verified by reading it with load_runs.
"""
import io
import os
import re
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from .base import DatasetError, DatasetSpec, Download, RemoteFile, Source, show_progress
from .episodes import Episode
from .omniglot import IMAGE_SIZE, OMNIGLOT_BASE_URL, check_resize, decode_png

RUNS_DIR = 'omniglot_runs'       # under data_root
ZIP_NAME = 'all_runs.zip'
LABELS_FILE = 'class_labels.txt'
N_RUNS = 20
WAY = 20                         # classes per run, one training image each; also 20 queries
HUMAN_ERROR_PERCENT = 4.5        # Lake et al. (2015), people on these 20 runs
RUN_NAMES = tuple(f'run{r:02d}' for r in range(1, N_RUNS + 1))
ALL_RUNS_URL = f'{OMNIGLOT_BASE_URL}/one-shot-classification/{ZIP_NAME}'
# A member of the zip: optional top folder, runNN, then one of the files above.
_MEMBER = re.compile(r'^(?P<prefix>(?:[^/]+/)*?)(?P<run>run\d\d)/(?P<rel>class_labels\.txt|'
                     r'training/[^/]+\.png|test/[^/]+\.png)$')


class Run(NamedTuple):
    """One official run: a 20-way 1-shot episode with 20 queries, as float32 28x28x1 images
    (strokes 1, background 0) and int32 labels."""
    name: str                # 'run01' ... 'run20'
    support_x: np.ndarray    # float32 [20, 28, 28, 1]: training/class01.png ... class20.png
    support_y: np.ndarray    # int32 [20]: 0..19, the sorted training images' order
    query_x: np.ndarray      # float32 [20, 28, 28, 1]: test/item01.png ... item20.png
    query_y: np.ndarray      # int32 [20]: the class of each query, from class_labels.txt

    def episode(self) -> Episode:
        """The run as a metabatch of one task (data.episodes.Episode: [1, 20, 28, 28, 1])."""
        return Episode(self.support_x[None], self.support_y[None], self.query_x[None], self.query_y[None])


def get_data_command(data_root):
    return f'python data/get_data.py --dataset {RUNS_DIR} --data_root {data_root}'


def _zip_layout(names):
    """(prefix, {run: set of relative paths}) of a zip's member names; prefix is the folder the
    runs sit in ('' or e.g. 'all_runs/'). DatasetError when the runs sit in several folders."""
    prefixes, runs = set(), {}
    for name in names:
        if '__MACOSX' in name:
            continue
        m = _MEMBER.match(name)
        if m:
            prefixes.add(m['prefix'])
            runs.setdefault(m['run'], set()).add(m['rel'])
    if len(prefixes) > 1:
        raise DatasetError(f'the runs sit in several folders ({", ".join(sorted(prefixes))}), not in one')
    return (prefixes.pop() if prefixes else ''), runs


def _layout_problem(runs):
    """None if `runs` ({run: relative paths}) holds the 20 runs of 20 + 20 images, else why not."""
    missing = [r for r in RUN_NAMES if r not in runs]
    if missing:
        return f'{len(missing)} of the {N_RUNS} runs are missing ({", ".join(missing[:3])}{" ..." if len(missing) > 3 else ""})'
    for run in RUN_NAMES:
        rels = runs[run]
        n_train = sum(r.startswith('training/') for r in rels)
        n_test = sum(r.startswith('test/') for r in rels)
        if LABELS_FILE not in rels or n_train != WAY or n_test != WAY:
            return (f'{run} holds {n_train} training and {n_test} test images'
                    f'{"" if LABELS_FILE in rels else " and no " + LABELS_FILE}, not {WAY} + {WAY} and '
                    f'{LABELS_FILE}')
    return None


def _folder(runs_dir: Path):
    """The folder holding run01 ... (runs_dir itself or one of its subfolders), or None."""
    if (runs_dir / RUN_NAMES[0]).is_dir():
        return runs_dir
    if runs_dir.is_dir():
        for sub in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
            if (sub / RUN_NAMES[0]).is_dir():
                return sub
    return None


def _parse_labels(text, run, where):
    """[(query path, training path)] relative to the run, from class_labels.txt's lines."""
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        rels = []
        for field in fields:
            parts = field.replace('\\', '/').split('/')
            if len(parts) >= 3 and parts[-3] == run:
                rels.append('/'.join(parts[-2:]))
        if len(fields) != 2 or len(rels) != 2 or not rels[0].startswith('test/') or \
                not rels[1].startswith('training/'):
            raise DatasetError(f'{where} line {number} is {line.strip()!r}, not "{run}/test/itemXX.png '
                               f'{run}/training/classYY.png"; the file is damaged: delete it and '
                               f'download the runs again')
        pairs.append((rels[0], rels[1]))
    queries, answers = [q for q, _ in pairs], [a for _, a in pairs]
    if len(pairs) != WAY or len(set(queries)) != WAY or len(set(answers)) != WAY:
        raise DatasetError(f'{where} pairs {len(set(queries))} distinct queries with {len(set(answers))} '
                           f'distinct training images in {len(pairs)} lines, not {WAY} with {WAY}; the file '
                           f'is damaged: delete it and download the runs again')
    return pairs


def _read_run(run, read, where, resize):
    """One Run from `read(relative path) -> bytes` (a zip's or a folder's files)."""
    def fetch(rel):
        try:
            return read(f'{run}/{rel}')
        except (KeyError, FileNotFoundError):
            raise DatasetError(f'{where}: {run}/{rel} is missing; the runs are incomplete: delete them and '
                               f'download them again') from None

    pairs = _parse_labels(fetch(LABELS_FILE).decode('utf-8', 'replace'), run, f'{where}: {run}/{LABELS_FILE}')
    support_files = sorted(a for _, a in pairs)
    query_files = sorted(q for q, _ in pairs)
    label_of, answer = {f: i for i, f in enumerate(support_files)}, dict(pairs)

    def images(files):
        u8 = np.stack([decode_png(io.BytesIO(fetch(f)), f'{where}: {run}/{f}', resize) for f in files])
        # What ClassSplit does with Omniglot's uint8 storage: float32 x / 255.
        return u8.reshape(len(files), IMAGE_SIZE, IMAGE_SIZE, 1).astype(np.float32) / np.float32(255.0)

    return Run(run, images(support_files), np.arange(WAY, dtype=np.int32), images(query_files),
               np.array([label_of[answer[q]] for q in query_files], dtype=np.int32))


def load_runs(data_root='./data', resize='nearest', progress=True):
    """The 20 official one-shot runs as a list of Run (run01 first), read from
    <data_root>/omniglot_runs/all_runs.zip or its extracted folders.

    Args:
      resize: 'nearest' (the default, and what cbfinn/maml's preprocessing does to Omniglot) or
        'lanczos', as data/omniglot.py's option of the same name: use the value the checkpoint
        was trained with (main.py's --omniglot_resize).
      progress: draw a progress bar (also off inside load_dataset(..., progress=False)).

    Every run is a 20-way 1-shot episode: support_x [20, 28, 28, 1] float32 in [0, 1] (strokes
    1) with support_y = 0..19 (the training images sorted by file name), and query_x
    [20, 28, 28, 1] with query_y their classes. A run's error rate, as the official demo reports
    it, is 100 * mean(prediction != query_y); the benchmark's figure is the mean over the runs.
    `run.episode()` gives it as a data.episodes.Episode of one task. Raises DatasetError with
    the fix when the files are missing or malformed.
    """
    check_resize(resize)
    runs_dir = Path(data_root) / RUNS_DIR
    zpath = runs_dir / ZIP_NAME
    progress = progress and show_progress()
    if zpath.is_file():
        try:
            with zipfile.ZipFile(zpath) as zf:
                prefix, found = _zip_layout(zf.namelist())
                problem = _layout_problem(found)
                if problem:
                    raise DatasetError(f'{zpath} is not the one-shot runs archive: {problem}. Delete it and '
                                       f'download it again: {get_data_command(data_root)}')
                return _read_runs(lambda rel: zf.read(prefix + rel), str(zpath), resize, progress)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise DatasetError(f'{zpath} is not a readable zip ({type(e).__name__}: {e}); delete it and '
                               f'download it again: {get_data_command(data_root)}') from None
    folder = _folder(runs_dir)
    if folder is None:
        raise DatasetError(f'no Omniglot one-shot runs in {runs_dir}: expected {ZIP_NAME} (brendenlake/omniglot, '
                           f'python/one-shot-classification/) or its extracted folders run01 ... run20. Get it '
                           f'with: {get_data_command(data_root)}')
    return read_folder(folder, resize, progress)


def read_folder(folder, resize='nearest', progress=True):
    """The 20 runs from `folder`/run01 ... run20 (extracted files), as load_runs returns them."""
    folder = Path(folder)
    return _read_runs(lambda rel: (folder / rel).read_bytes(), str(folder), resize, progress)


def _read_runs(read, where, resize, progress):
    return [_read_run(run, read, where, resize)
            for run in tqdm(RUN_NAMES, desc='Omniglot one-shot runs', unit='run', disable=not progress)]


# ----------------------------------------------------------------------------- declaration

def check_zip(path):
    """Deletes `path` and raises DownloadError unless it is a readable zip holding the 20 runs
    (class_labels.txt, 20 training and 20 test PNGs each): no checksum is published."""
    from .download import DownloadError
    try:
        with zipfile.ZipFile(path) as zf:
            problem = _layout_problem(_zip_layout(zf.namelist())[1])
    except DatasetError as exc:
        problem = str(exc)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        with open(path, 'rb') as fh:
            head = fh.read(512).lstrip().lower()
        problem = ('it is a web page, not a zip' if head.startswith((b'<!doctype', b'<html'))
                   else f'it is not a readable zip ({exc})')
    if problem is not None:
        os.remove(path)
        raise DownloadError(f'{path} is not the Omniglot one-shot runs archive ({ZIP_NAME}): {problem}. '
                            'It was deleted; rerun to download it again, and if this repeats the source '
                            'is serving a different file.')


def preprocess(dataset_dir, paths, force, progress=True):
    """get_data's step: extracts all_runs.zip beside itself (the folders the official demo
    reads) and verifies the runs by reading them all."""
    from .download import preprocessing, safe_extract
    with preprocessing('the Omniglot one-shot runs', dataset_dir):
        with zipfile.ZipFile(paths[0]) as zf:
            prefix, _ = _zip_layout(zf.namelist())
        # A zip without a top folder is extracted into all_runs/, as one with it would be.
        target = Path(dataset_dir) / ('' if prefix else 'all_runs')
        folder = target / prefix
        if force or not (folder / RUN_NAMES[-1] / LABELS_FILE).is_file():
            safe_extract(paths[0], target)
        runs = read_folder(folder, progress=progress)
    n_queries = sum(len(r.query_y) for r in runs)
    return f'{len(runs)} runs of {WAY}-way 1-shot, {n_queries} queries in all, read and checked in {folder}'



DOWNLOAD = Download(
    name=RUNS_DIR,
    default_source='official',
    sources={
        'official': Source(
            description="Lake et al.'s 20 one-shot classification runs (all_runs.zip from "
                        'brendenlake/omniglot; no published checksum, so the zip is checked to hold '
                        'run01..run20 with class_labels.txt and 20 + 20 PNGs each), extracted and read',
            preprocess=preprocess, options=('progress',),
            files=(RemoteFile('all_runs', ZIP_NAME, ALL_RUNS_URL, check=check_zip),)),
    })


def options(cfg):
    """The reader options from main.py's flags."""
    return dict(resize=getattr(cfg, 'omniglot_resize', 'nearest'))


SPECS = (DatasetSpec(
    name=RUNS_DIR, loader=load_runs, kind='images', has_train=False, fixed_episodes=True,
    # 20-way 1-shot episodes of 28x28 grey characters: the methods that train such a network.
    methods=('maml', 'fomaml', 'metasgd', 'metadrop', 'anil'),
    flags=('omniglot_resize',), options=options,
    description="Lake et al.'s 20 official one-shot runs (20-way 1-shot, 20 queries each, 28x28 grey): "
                'meta-test only',
    download=DOWNLOAD),)
