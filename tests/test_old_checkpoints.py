"""Checkpoints saved by an earlier version of the project (tests/data/old_checkpoints/, made
by its make.py at the commit its argv.json names, before methods became plugins) still restore:
meta_test on a copy gives the accuracy that version measured, to float32 round-off. A change
that renames a variable, a module or a checkpoint key fails here instead of in a user's run."""
import json
import os
import shutil

import pytest

import main
from tests.data.old_checkpoints import make

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'old_checkpoints')


def results(folder, method):
    """The accuracy and episode count a meta_test wrote (TAML writes l2b's per-dataset file)."""
    if method == 'taml':
        with open(os.path.join(folder, 'test_step1_mc0.json')) as f:
            res = json.load(f)['results']['id/synthetic']
    else:
        with open(os.path.join(folder, 'meta_test.json')) as f:
            res = json.load(f)
    return res['accuracy'], res['n_episodes']


@pytest.mark.parametrize('method', sorted(make.RUNS))
def test_an_old_checkpoint_restores_and_scores_as_before(method, tmp_path):
    saved = os.path.join(HERE, method)
    folder = tmp_path / method
    shutil.copytree(saved, folder)
    with open(os.path.join(saved, 'argv.json')) as f:
        argv = json.load(f)['argv']
    if '{embeddings}' in ' '.join(argv):
        make.embeddings(str(tmp_path / 'emb'))
        argv = [a.replace('{embeddings}', str(tmp_path / 'emb')) for a in argv]
    for stale in ('meta_test.json', 'test_step1_mc0.json'):
        if os.path.exists(folder / stale):
            os.remove(folder / stale)
    main.cli(['main.py', '--mode', 'meta_test', '--savedir', str(folder), *argv])  # no exit
    accuracy, episodes = results(str(folder), method)
    old_accuracy, old_episodes = results(saved, method)
    assert episodes == old_episodes
    assert accuracy == pytest.approx(old_accuracy, abs=1e-4)
