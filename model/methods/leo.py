"""LEO (model/leo.py, model/leo_runner.py): deepmind/leo's config.py / runner.py flags, same
names and defaults, on embedding vectors (--dataset leo_mini, leo_tiered, leo_custom)."""
import math

from absl import flags

from model import shared_flags as shared
from model.methods import Method, register

DATASET_NAMES = {'miniImageNet': 'leo_mini', 'tieredImageNet': 'leo_tiered'}
OWN_FLAGS = ('data_path', 'dataset_name', 'embedding_crop', 'train_on_val', 'num_latents', 'finetuning_unroll_length', 'inner_lr_init', 'finetuning_lr_init', 'dropout_rate', 'kl_weight', 'encoder_penalty_weight', 'l2_penalty_weight', 'orthogonality_penalty_weight', 'gradient_threshold', 'gradient_norm_threshold', 'metavalid_batch_size', 'metatest_batch_size', 'total_examples_per_class', 'checkpoint_steps', 'use_64bits_dtype', 'original_nan_guard', 'original_kl_estimate', 'evaluation_mode')
flags.DEFINE_string('data_path', '', '--model leo: the folder of the embeddings (the '
                    "original's --data_path: <data_path>/<miniImageNet|tieredImageNet>/<crop>/"
                    '<split>_embeddings.pkl; for leo_custom <data_path>/<split>_embeddings.pkl '
                    'or .npz); default <data_root>/leo/embeddings.')
flags.DEFINE_enum('dataset_name', '', ['', 'miniImageNet', 'tieredImageNet'], "--model leo: "
                  "the original's name of the dataset; sets --dataset leo_mini / leo_tiered.")
flags.DEFINE_enum('embedding_crop', 'center', ['center', 'multiview'], '--model leo: which '
                  'embeddings (multiview exists for miniImageNet only).')
flags.DEFINE_boolean('train_on_val', False, '--model leo: meta-train on the train and '
                     'validation classes together (validation still on the validation split).')
flags.DEFINE_integer('num_latents', 64, '--model leo: L, the dimension of the latent code z.')
flags.DEFINE_integer('finetuning_unroll_length', 5, '--model leo: F, the steps of fine-tuning '
                     'in parameter space after the latent steps (--n_steps, alias '
                     '--inner_unroll_length, T).')
flags.DEFINE_float('inner_lr_init', 1.0, '--model leo: initial alpha, the learned per-latent '
                   'step size of the latent-space inner loop.')
flags.DEFINE_float('finetuning_lr_init', 0.001, '--model leo: initial eta, the learned '
                   'per-dimension step size of the fine-tuning loop.')
flags.DEFINE_float('dropout_rate', 0.5, '--model leo: dropout probability on the embeddings '
                   '(encoder input and every prediction) at meta-train.')
flags.DEFINE_float('kl_weight', 1e-3, '--model leo: beta, weight of the latent KL term.')
flags.DEFINE_float('encoder_penalty_weight', 1e-9, '--model leo: gamma, weight of the encoder '
                   'penalty mean((z_0 - stop_gradient(z_T))^2).')
flags.DEFINE_float('l2_penalty_weight', 1e-8, '--model leo: lambda_1, weight of the L2 '
                   'penalty 1/2 sum w^2 on the five weight matrices.')
flags.DEFINE_float('orthogonality_penalty_weight', 1e-3, '--model leo: lambda_2, weight of '
                   "the decoder's orthogonality penalty mean((C - I)^2).")
flags.DEFINE_float('gradient_threshold', 0.1, '--model leo: clip each meta-gradient entry to '
                   '[-c, c] (<= 0 disables).')
flags.DEFINE_float('gradient_norm_threshold', 0.1, '--model leo: then clip each meta-gradient '
                   'tensor to this L2 norm, per tensor (<= 0 disables).')
flags.DEFINE_integer('metavalid_batch_size', 200, '--model leo: episodes per validation batch '
                     '(--n_val_batches of them, 10 by default).')
flags.DEFINE_integer('metatest_batch_size', 200, '--model leo: episodes per test batch '
                     '(--n_test_iters // this many batches: 10000 // 200 = 50).')
flags.DEFINE_integer('total_examples_per_class', 600, '--model leo: validation and test '
                     'tasks use this many images per class, the support ones and all others '
                     "as queries (the original hard-codes 600; 20 for Omniglot).")
flags.DEFINE_integer('checkpoint_steps', None, "--model leo: the original's one cadence: sets "
                     '--val_freq and --save_freq to it and --print_freq to half of it.')
flags.DEFINE_boolean('use_64bits_dtype', True, '--model leo: float64 variables and '
                     'computation (the module\'s default); --nouse_64bits_dtype: float32, as '
                     "the original's runner trains.")
flags.DEFINE_boolean('original_nan_guard', False, "--model leo: the original's NaN guard: NaN "
                     'only (Inf passes), and its swapped-name bug, which replaces each '
                     "meta-gradient by the variable's own value. Default: NaN or Inf, replaced "
                     'by the intended 1e-4 * W (0 for the step sizes).')
flags.DEFINE_boolean('original_kl_estimate', False, "--model leo: the latent KL's log q(z) as "
                     "the original's tfp Normal.log_prob computes it, from (z / sigma - mu / "
                     'sigma)^2, which loses precision where sigma sits at its 1e-10 floor (the '
                     "KL's value only; its gradient is the same). Default: from the draw eps.")
flags.DEFINE_boolean('evaluation_mode', False, "--model leo: the original's switch for "
                     '--mode meta_test.')
flags.DEFINE_alias('num_classes', 'way')
flags.DEFINE_alias('num_tr_examples_per_class', 'shot')
flags.DEFINE_alias('num_val_examples_per_class', 'query')
flags.DEFINE_alias('metatrain_batch_size', 'metabatch')
flags.DEFINE_alias('outer_lr', 'meta_lr')
flags.DEFINE_alias('num_steps_limit', 'n_train_iters')
flags.DEFINE_alias('inner_unroll_length', 'n_steps')
flags.DEFINE_alias('checkpoint_path', 'savedir')

# The original's defaults (leo config.py / runner.py) for the flags LEO shares with the MAML
# family.
DEFAULTS = dict(dataset='leo_mini', way=5, shot=1, query=15, metabatch=12, meta_lr=1e-4,
                n_train_iters=100000, n_steps=5, val_freq=1000, save_freq=1000,
                print_freq=500, n_val_batches=10, n_test_iters=10000, max_to_keep=5)


def configure(cfg, given):
    """The original's --dataset_name / --checkpoint_steps / --evaluation_mode, spelled as this
    project's flags."""
    if cfg.dataset_name:
        cfg.dataset = DATASET_NAMES[cfg.dataset_name]
    if cfg.checkpoint_steps:
        cfg.val_freq = cfg.save_freq = cfg.checkpoint_steps
        cfg.print_freq = max(1, cfg.checkpoint_steps // 2)
    if cfg.evaluation_mode:
        cfg.mode = 'meta_test'


def validate(cfg):
    errors = []
    for n in ('num_latents', 'metavalid_batch_size', 'metatest_batch_size',
              'total_examples_per_class'):
        if getattr(cfg, n) < 1:
            errors.append(f'--{n} must be a positive integer, got {getattr(cfg, n)}')
    if cfg.finetuning_unroll_length < 0:
        errors.append(f'--finetuning_unroll_length must be >= 0, got '
                      f'{cfg.finetuning_unroll_length}')
    if cfg.checkpoint_steps is not None and cfg.checkpoint_steps < 1:
        errors.append(f'--checkpoint_steps must be a positive integer, got {cfg.checkpoint_steps}')
    if not 0 <= cfg.dropout_rate < 1:
        errors.append(f'--dropout_rate must be in [0, 1), got {cfg.dropout_rate}')
    for n in ('kl_weight', 'encoder_penalty_weight', 'l2_penalty_weight',
              'orthogonality_penalty_weight'):
        if not 0 <= getattr(cfg, n) < math.inf:
            errors.append(f'--{n} must be >= 0 and finite, got {getattr(cfg, n)}')
    for n in ('inner_lr_init', 'finetuning_lr_init', 'gradient_threshold',
              'gradient_norm_threshold'):
        if not math.isfinite(getattr(cfg, n)):
            errors.append(f'--{n} must be finite, got {getattr(cfg, n)}')
    if cfg.dataset == 'leo_tiered' and cfg.embedding_crop == 'multiview':
        errors.append('--embedding_crop multiview exists for miniImageNet only (leo_mini); '
                      'tieredImageNet has center crops')
    if cfg.total_examples_per_class <= cfg.shot:
        errors.append(f'--total_examples_per_class {cfg.total_examples_per_class} must be '
                      f'larger than --shot {cfg.shot}: evaluation tasks take the other '
                      'images of each class as queries')
    return errors


def build(cfg, way, image_shape):
    from model.leo import LEO
    if len(image_shape) != 1:
        raise ValueError(f'--model leo works on embedding vectors; --dataset {cfg.dataset} has '
                         f'images of shape {tuple(image_shape)} (use leo_mini, leo_tiered or '
                         'leo_custom)')
    return LEO(way, cfg.shot, image_shape[0], num_latents=cfg.num_latents,
               inner_unroll_length=cfg.n_steps,
               finetuning_unroll_length=cfg.finetuning_unroll_length,
               inner_lr_init=cfg.inner_lr_init, finetuning_lr_init=cfg.finetuning_lr_init,
               dropout_rate=cfg.dropout_rate, kl_weight=cfg.kl_weight,
               encoder_penalty_weight=cfg.encoder_penalty_weight,
               l2_penalty_weight=cfg.l2_penalty_weight,
               orthogonality_penalty_weight=cfg.orthogonality_penalty_weight,
               use_64bits_dtype=cfg.use_64bits_dtype,
               original_kl_estimate=getattr(cfg, 'original_kl_estimate', False))


def runner(cfg):
    from model.leo_runner import LeoRunner
    return LeoRunner


register(Method(
    'leo', 'LEO (Rusu et al. 2019, deepmind/leo): latent embedding optimisation on '
    'pre-computed embeddings', ('meta_train', 'meta_test'), build, runner, inputs='embeddings',
    flags=OWN_FLAGS,
    # Its networks, inner loops, Adam, clipping and NaN guard are the original's: of the
    # shared flags only the run's, the latent steps (--n_steps, its inner_unroll_length), the
    # evaluation chunk and the device split apply.
    shared=shared.RUN_FLAGS + ('n_steps', 'eval_chunk') + shared.DEVICE_FLAGS,
    defaults=DEFAULTS, configure=configure, validate=validate))
