"""The Python API: what `python main.py` does, from Python and on data already in memory.

    from model import api
    cfg = api.make_config(model='maml', savedir='runs/a', way=5, shot=1, n_train_iters=1000)
    data = api.dataset_from_arrays(train=x_train, val=x_val, test=x_test)
    runner = api.make_runner(cfg, data)
    runner.meta_train()           # checkpoints, logs and TensorBoard summaries in savedir
    record = runner.meta_test()   # {'accuracy': ..., 'ci95': ..., ...}, also meta_test.json

A configuration is checked exactly as the command line's (model/config.py); a runner is the
method's own (model/methods/), so every mode, checkpoint and log is the command line's.
docs/api.md has runnable examples (tests/test_api.py runs them).
"""
import types

import numpy as np

from data.datasets import FewShotDataset
from data.episodes import ClassSplit
from model import build_model, methods  # noqa: F401  (build_model: part of the API)
from model.config import make_config  # noqa: F401  (part of the API)


def dataset_from_arrays(train, test, val=None, name='arrays', rotations=False):
    """A dataset from arrays [n_classes, n_per_class, H, W, C] (or lists of [n_i, H, W, C]
    arrays; [n_i, D] for vectors, LEO's inputs): uint8 images are scaled by 1/255, floats used
    as given. Without `val`, validation uses the test split (metadrop's behaviour).
    rotations: each class also as its 90/180/270-degree rotations (the Omniglot protocol)."""
    splits = {}
    for which, images in (('train', train), ('val', val), ('test', test)):
        if images is not None:
            splits[which] = ClassSplit(images, rotations=rotations, name=which, dataset=name)
    val_split = splits.get('val', splits['test'])
    shape = tuple(splits['test'].image_shape)
    counts = ', '.join(f'{w} {s.n_classes} classes' for w, s in splits.items())
    return FewShotDataset(name, splits.get('train'), val_split, splits['test'], shape,
                          'val' not in splits, f'{name} ({"x".join(map(str, shape))}): {counts}')


def make_runner(cfg, dataset=None, log=print):
    """The runner of cfg.model for cfg.mode, on `dataset` (a FewShotDataset, e.g. from
    dataset_from_arrays) or, when None, on the --dataset the configuration names. The run
    records the dataset's name in its config.json."""
    if dataset is not None:
        cfg = types.SimpleNamespace(**vars(cfg))
        cfg.dataset = dataset.name
    return methods.get(cfg.model).runner(cfg)(cfg, log=log, dataset=dataset)


def class_prototypes(n_classes, per_class, side=28, noise=0.3, seed=0):
    """Toy images for examples and tests: each class a random binary pattern, its images that
    pattern with Gaussian noise, clipped to [0, 1]; float32 [n_classes, per_class, side,
    side, 1]."""
    rng = np.random.default_rng(seed)
    patterns = (rng.random((n_classes, 1, side, side, 1)) > 0.5).astype(np.float32)
    images = patterns + noise * rng.standard_normal((n_classes, per_class, side, side, 1))
    return np.clip(images, 0., 1.).astype(np.float32)
