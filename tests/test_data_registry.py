"""The dataset registry (data/datasets.py): every dataset main.py offers is declared once, next to
its reader, with the flags it reads and how they become reader options."""
import os
import subprocess
import sys

import pytest

import main
from data import get_data
from data.base import DatasetSpec, Download
from data.datasets import (DATASETS, KNOWN_DATASETS, DatasetError, dataset_names, dataset_options,
                           dataset_spec, load_dataset)
from model import runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(*argv):
    """main.py's run configuration for these flags (parsed, the method's defaults applied; the
    checks that need a --savedir and the like are main.py's tests' business)."""
    main.FLAGS.unparse_flags()
    main.FLAGS(['main.py', *argv])
    return main.config_from_flags()


@pytest.fixture(autouse=True)
def fresh_flags():
    yield
    main.FLAGS.unparse_flags()


def test_every_dataset_of_main_is_declared():
    assert set(main.DATASETS) <= set(DATASETS)
    for name, spec in DATASETS.items():
        assert isinstance(spec, DatasetSpec) and spec.name == name
        assert spec.kind in ('images', 'embeddings')


def test_declared_flags_exist_in_main():
    for spec in DATASETS.values():
        for flag in spec.flags:
            assert flag in main.FLAGS, f'{spec.name} declares --{flag}, which main.py does not define'


# What model/runner.py's dataset_options(cfg) returned before the registry (its if/elif over
# names), for the same command lines; plus --omniglot_resize, which the Omniglot readers take
# since (issue 23), and omniglot_runs, which is new.
BEFORE = [
    (('--dataset', 'omniglot'),
     dict(source='auto', test_alphabets=None, val_alphabets=None, resize='nearest')),
    (('--dataset', 'omniglot', '--omniglot_source', 'small', '--test_alphabets', 'Korean, Tagalog,',
      '--val_alphabets', 'Latin', '--omniglot_resize', 'lanczos'),
     dict(source='small', test_alphabets=['Korean', 'Tagalog'], val_alphabets=['Latin'], resize='lanczos')),
    (('--dataset', 'mimgnet'), dict(mimgnet_layout='auto')),
    (('--dataset', 'mimgnet', '--mimgnet_layout', 'csv'), dict(mimgnet_layout='csv')),
    (('--dataset', 'folder'), dict(folder_dir=None, image_size=84, channels=3)),
    (('--dataset', 'folder', '--folder_dir', '/x', '--image_size', '32', '--channels', '1'),
     dict(folder_dir='/x', image_size=32, channels=1)),
    (('--dataset', 'synthetic', '--data_seed', '3'), dict(seed=3)),
    (('--dataset', 'tiered'), {}),
    (('--dataset', 'cifar'), {}),
    (('--dataset', 'fc100'), {}),
    (('--dataset', 'svhn', '--mode', 'meta_test'), {}),
    (('--dataset', 'cub', '--mode', 'meta_test'), {}),
    (('--model', 'leo', '--dataset', 'leo_mini'),
     dict(embedding_crop='center', data_path=None, train_on_val=False)),
    (('--model', 'leo', '--dataset', 'leo_mini', '--embedding_crop', 'multiview', '--data_path', '/p',
      '--train_on_val'),
     dict(embedding_crop='multiview', data_path='/p', train_on_val=True)),
    (('--model', 'leo', '--dataset', 'leo_tiered'),
     dict(embedding_crop='center', data_path=None, train_on_val=False)),
    (('--model', 'leo', '--dataset', 'leo_custom', '--data_path', '/e'),
     dict(embedding_crop='center', data_path='/e', train_on_val=False)),
    (('--dataset', 'omniglot_runs', '--mode', 'meta_test', '--omniglot_resize', 'lanczos'),
     dict(resize='lanczos')),
]


@pytest.mark.parametrize('argv,expected', BEFORE, ids=[' '.join(a) for a, _ in BEFORE])
def test_options_are_what_the_runner_gave(argv, expected):
    cfg = config(*argv)
    assert dataset_options(cfg.dataset, cfg) == expected
    assert runner.dataset_options(cfg) == expected


def test_every_dataset_of_main_has_an_options_case():
    assert {a[a.index('--dataset') + 1] for a, _ in BEFORE} >= set(main.DATASETS)


def test_names_by_kind_and_method():
    assert dataset_names() == KNOWN_DATASETS
    assert dataset_names(kind='embeddings') == ('leo_mini', 'leo_tiered', 'leo_custom')
    images = dataset_names(kind='images')
    assert 'omniglot' in images and 'leo_mini' not in images
    assert set(images) | set(dataset_names(kind='embeddings')) == set(KNOWN_DATASETS)
    # A dataset restricted to some methods is offered to those only.
    restricted = [s for s in DATASETS.values() if s.methods is not None]
    for spec in restricted:
        assert spec.name not in dataset_names(kind=spec.kind, method='no_such_method')
        assert spec.name in dataset_names(kind=spec.kind, method=spec.methods[0])
    assert dataset_names(kind='images', method='maml')[:3] == ('omniglot', 'folder', 'synthetic')


def test_out_of_distribution_datasets_have_no_train_split():
    assert [n for n, s in DATASETS.items() if not s.has_train and not s.fixed_episodes] == ['svhn', 'cub']
    assert [n for n, s in DATASETS.items() if s.fixed_episodes] == ['omniglot_runs']


def test_unknown_names_and_options_are_refused():
    with pytest.raises(DatasetError, match="unknown dataset 'omniglott'; known datasets: omniglot, folder"):
        dataset_spec('omniglott')
    with pytest.raises(DatasetError, match='unknown dataset'):
        dataset_options('nope', object())
    with pytest.raises(DatasetError, match="unknown option.*seeed.*it accepts: seed"):
        load_dataset('synthetic', seeed=1)


def test_get_data_offers_every_declared_download():
    declared = {s.download.name for s in DATASETS.values() if s.download is not None}
    assert set(get_data.DATASETS) == declared == {'omniglot', 'mimgnet', 'tiered', 'cifar', 'fc100', 'svhn',
                                                  'leo', 'cub', 'omniglot_runs'}
    for name, download in get_data.DATASETS.items():
        assert isinstance(download, Download) and download.name == name
        assert download.default_source in download.sources
    # Datasets with nothing to fetch say so (no download), rather than pointing at a wrong one.
    assert DATASETS['folder'].download is None and DATASETS['synthetic'].download is None
    assert DATASETS['leo_mini'].download is DATASETS['leo_tiered'].download is get_data.DATASETS['leo']


def test_a_spec_checks_its_kind():
    with pytest.raises(ValueError, match='kind'):
        DatasetSpec(name='x', loader=print, kind='pictures')
    with pytest.raises(ValueError, match='methods'):
        DatasetSpec(name='x', loader=print, methods='maml')


def test_registry_imports_without_tensorflow():
    code = ("import data.datasets, data.get_data, sys; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    done = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
