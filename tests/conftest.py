"""Shared pytest fixtures."""
import os
from pathlib import Path

# As main.py does, before anything imports TensorFlow (see model/__init__.py).
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest

# ../shared/data/omniglot beside the checkout (read-only; tests read the zips by path).
SHARED_OMNIGLOT_DIR = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'omniglot'


@pytest.fixture(scope='session')
def shared_omniglot_dir():
    """The folder holding the real Omniglot subsets images_background_small{1,2}.zip."""
    if not SHARED_OMNIGLOT_DIR.is_dir() or not any(SHARED_OMNIGLOT_DIR.glob('images_background*.zip')):
        pytest.skip('needs ../shared/data/omniglot beside the checkout')
    return SHARED_OMNIGLOT_DIR
