"""Installs the few-shot meta-learning reproductions (TF2 / Sonnet 2)."""
from setuptools import setup

setup(
    name='metalearn-tf2',
    version='0.1.0',
    description=('Faithful TF2 / Sonnet 2 reproductions of MAML, FOMAML, Meta-SGD, '
                 'Meta-Dropout, Bayesian TAML, LEO and Meta-Transfer Learning'),
    python_requires='>=3.9',
    packages=['model', 'model.methods', 'data'],
    py_modules=['main', 'plot'],
    install_requires=[
        'tensorflow>=2.16,<3',
        'tensorflow-probability>=0.24,<1',
        'tensorboard>=2.16',
        'tf-keras>=2.16,<3',
        'dm-sonnet>=2.0.2,<3',
        'absl-py>=1.0',
        'numpy>=1.23',
        'tqdm>=4.60',
        'requests>=2.25',
        'scipy>=1.8',
        'pillow>=9.0',
    ],
    extras_require={
        'plot': ['matplotlib>=3.5', 'scikit-learn>=1.0'],
        # The golden tests (tests/golden/) run fmu2/PyTorch-MAML's own code beside ours and
        # read its YAML configs. torch pinned: 2.13.0 is the CPU build on the project's
        # machines; an open range would pull a multi-GB CUDA build from the registry.
        'golden': ['torch==2.13.0', 'pyyaml>=5.1'],
        'dev': ['pytest>=7', 'matplotlib>=3.5', 'scikit-learn>=1.0', 'torch==2.13.0',
                'pyyaml>=5.1'],
    },
    entry_points={'console_scripts': ['metalearn=main:run']},
)
