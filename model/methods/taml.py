"""Bayesian TAML, "Learning to Balance" (model/taml.py, model/taml_runner.py): l2b main.py's
flags and defaults, on l2b's Conv4 with a zero head."""
from absl import flags

from data.datasets import dataset_spec
from model import shared_flags as shared
from model.methods import Method, register

IMBALANCE_MODES = ('mixed', 'class', 'task', 'none')  # data/episodes.py IMBALANCE_MODES
OWN_FLAGS = ('id_dataset', 'ood_dataset', 'max_shot', 'imbalance', 'alpha_on', 'omega_on', 'gamma_on', 'z_on', 'n_mc_samples', 'l2b_padding', 'balance_freq')
flags.DEFINE_string('id_dataset', '', '--model taml: the in-distribution dataset, meta-'
                    'trained on and tested (cifar, mimgnet, omniglot, ...); default --dataset.')
flags.DEFINE_string('ood_dataset', '', '--model taml: the out-of-distribution dataset, '
                    'validated and tested only (svhn, cub); empty: none.')
flags.DEFINE_integer('max_shot', 50, '--model taml: shots are drawn from 1..max_shot per '
                     'class or per task; also normalises the set size the inference network '
                     'sees, (n_c - 1) / (max_shot - 1).')
flags.DEFINE_enum('imbalance', 'mixed', list(IMBALANCE_MODES), '--model taml: mixed = a coin '
                  'per task chooses class imbalance (a shot per class) or task imbalance (one '
                  'shot for all), l2b\'s mode 1; class / task = only one of them (modes 2 / '
                  '3); none = max_shot for every class (ours).')
flags.DEFINE_boolean('alpha_on', False, '--model taml: Meta-SGD step sizes alpha (0.01 '
                     'everywhere, the head\'s shared by classes) instead of --inner_lr.')
flags.DEFINE_boolean('omega_on', False, '--model taml: omega, class-imbalance weights of the '
                     'per-class inner losses (softmax over classes).')
flags.DEFINE_boolean('gamma_on', False, '--model taml: gamma, task-imbalance multipliers '
                     'exp(gamma_l) of each layer\'s inner step.')
flags.DEFINE_boolean('z_on', False, '--model taml: z, out-of-distribution modulation of the '
                     'initialisation (conv weights x (1 + z), biases + z).')
flags.DEFINE_integer('n_mc_samples', 0, '--model taml, meta_test: average the softmax '
                     'outputs of this many sampled passes (inner loop included; the TAML '
                     'runfiles use 10); 0 = the posterior mean.')
flags.DEFINE_boolean('l2b_padding', False, "--model taml: l2b's behaviour for the zero rows "
                     'that pad support sets to one length within a metabatch: they go through '
                     'the base network (its batch-norm statistics include them) and count in '
                     'the support size N of the inner-loss and KL scaling. Default: dropped.')
flags.DEFINE_integer('balance_freq', 1000, '--model taml: print the balancing variables of '
                     '10 validation tasks every this many iterations (omega or gamma on).')
flags.DEFINE_alias('n_test_episodes', 'n_test_iters')

# l2b main.py's defaults (dataset cifar, with svhn as OOD dataset; validation on 3000
# episodes), and the cadences its main.py fixes (log every 100, validate every 10000, keep 10
# checkpoints); the test-time inner steps default to n_steps as in l2b.
DEFAULTS = dict(dataset='cifar', way=5, max_shot=50, query=15, metabatch=4, meta_lr=1e-3,
                inner_lr=0.5, n_steps=5, n_train_iters=50000, save_freq=10000,
                n_test_iters=1000, print_freq=100, val_freq=10000, max_to_keep=10)


def configure(cfg, given):
    """--id_dataset is l2b's name for --dataset; validation on 3000 episodes in metabatches;
    svhn is l2b's OOD set for cifar."""
    if cfg.id_dataset:
        cfg.dataset = cfg.id_dataset
    if 'n_val_batches' not in given:
        # (a non-positive --metabatch is refused with its own message)
        cfg.n_val_batches = max(1, 3000 // max(1, cfg.metabatch))
    if 'ood_dataset' not in given and cfg.dataset == 'cifar':
        cfg.ood_dataset = 'svhn'


def validate(cfg):
    errors = []
    for n in ('max_shot', 'balance_freq'):
        if getattr(cfg, n) < 1:
            errors.append(f'--{n} must be a positive integer, got {getattr(cfg, n)}')
    if cfg.n_mc_samples < 0:
        errors.append(f'--n_mc_samples must be >= 0, got {cfg.n_mc_samples}')
    spec = dataset_spec(cfg.dataset) if cfg.dataset in shared.DATASETS else None
    if spec is not None and spec.takes('taml') and not spec.has_train:
        errors.append(f'{cfg.dataset} is an out-of-distribution dataset with no training '
                      f'split: use it as --ood_dataset (e.g. --id_dataset '
                      f'{"cifar" if cfg.dataset == "svhn" else "mimgnet"} --ood_dataset '
                      f'{cfg.dataset})')
    if cfg.ood_dataset and cfg.ood_dataset not in shared.DATASETS:
        errors.append(f'--ood_dataset {cfg.ood_dataset!r} is not one of '
                      f'{", ".join(shared.DATASETS)}')
    return errors


def build(cfg, way, image_shape):
    from model import nets
    from model.backbones import input_normalization
    from model.taml import TAML
    # l2b's Conv4: 32 channels whatever the input, and a constant zero head.
    net = nets.Conv4(way, cfg.n_channel or 32, image_shape, 'metadrop', zero_head=True,
                     input_norm=input_normalization(cfg))
    return TAML(net, max_shot=cfg.max_shot, inner_lr=cfg.inner_lr, n_steps=cfg.n_steps,
                n_test_steps=cfg.n_test_steps, alpha_on=cfg.alpha_on, omega_on=cfg.omega_on,
                gamma_on=cfg.gamma_on, z_on=cfg.z_on,
                alpha_init=0.01 if cfg.alpha_init is None else cfg.alpha_init,
                n_mc_samples=cfg.n_mc_samples, l2b_padding=cfg.l2b_padding)


def runner(cfg):
    from model.taml_runner import TamlRunner
    return TamlRunner


register(Method(
    'taml', 'Bayesian TAML (Lee et al. 2020, l2b): balancing variables alpha, omega, gamma, '
    'z over imbalanced tasks', ('meta_train', 'meta_test', 'embed'), build, runner,
    flags=OWN_FLAGS,
    shared=(shared.RUN_FLAGS + shared.IMAGE_DATA_FLAGS + shared.INNER_FLAGS +
            shared.OUTER_FLAGS + shared.TASK_LOOP_FLAGS + shared.DEVICE_FLAGS +
            ('n_channel', 'normalization', 'alpha_init') + shared.EMBED_FLAGS),
    defaults=DEFAULTS, configure=configure, validate=validate))
