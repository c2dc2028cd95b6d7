"""Meta-Transfer Learning (model/mtl.py, model/mtl_runner.py): the flags of
yaoyao-liu/meta-transfer-learning's TensorFlow main.py, same names, with its runner's values."""
import math

from absl import flags

from model import shared_flags as shared
from model.methods import Method, register

OWN_FLAGS = ('backbone_arch', 'img_size', 'activation', 'norm', 'pretrain_class_num', 'pretrain_batch_size', 'pretrain_iterations', 'pre_lr', 'pre_lr_dropstep', 'min_pre_lr', 'pre_lr_stop', 'pretrain_dropout_keep', 'pre_save_step', 'pre_print_step', 'pre_iter', 'pretrain_dir', 'lr_drop_step', 'lr_drop_rate', 'min_meta_lr', 'meta_intrain_val_sample', 'metatest_epite_sample_num', 'base_augmentation', 'test_iter', 'hard_task')
flags.DEFINE_enum('backbone_arch', 'resnet12', ['resnet12', 'resnet18', 'wrn28_10'],
                  "--model mtl: the original's ResNet-12 (64-128-256-512, 84 -> 5x5 -> 512-d) "
                  'or ResNet-18 (input resized to 224 in the graph); wrn28_10: WRN-28-10, '
                  "LEO's feature extractor (36.5M parameters, 640-d), for --mode pretrain and "
                  'embed only (scaling and shifting are defined on the original ResNets).')
flags.DEFINE_integer('img_size', 84, '--model mtl: side of the backbone input; images of '
                     'another size are resized bilinearly in the graph and grey ones '
                     'replicated to three channels (the original: 84, fixed).')
flags.DEFINE_enum('activation', 'leaky_relu', ['leaky_relu', 'relu', 'None'], '--model mtl: '
                  'the conv blocks\' activation (leaky_relu: max(x, 0.1 x)).')
flags.DEFINE_enum('norm', 'batch_norm', ['batch_norm', 'layer_norm', 'None'], '--model mtl: '
                  'batch_norm = batch statistics, no gamma, beta always 0, eps 1e-3 (the '
                  "original's, at every phase); layer_norm; None.")
flags.DEFINE_integer('pretrain_class_num', None, '--model mtl, pretrain: the size of the '
                     'pre-training head; default the number of meta-train classes (the '
                     'original fixes 64, which breaks FC100 and tieredImageNet).')
flags.DEFINE_integer('pretrain_batch_size', 64, '--model mtl, pretrain: images per batch.')
flags.DEFINE_integer('pretrain_iterations', 20000, '--model mtl, pretrain: iterations (the '
                     "runner's 20000; main.py's default 30000).")
flags.DEFINE_float('pre_lr', 1e-3, '--model mtl, pretrain: Adam learning rate.')
flags.DEFINE_integer('pre_lr_dropstep', 5000, '--model mtl, pretrain: halve the learning '
                     'rate after every this many iterations.')
flags.DEFINE_float('min_pre_lr', 1e-4, '--model mtl, pretrain: floor of the learning rate, '
                   'only with --pre_lr_stop (the original).')
flags.DEFINE_boolean('pre_lr_stop', False, '--model mtl, pretrain: apply --min_pre_lr.')
flags.DEFINE_float('pretrain_dropout_keep', 0.9, '--model mtl, pretrain: dropout keep '
                   'probability after every block (1 at meta-train and test).')
flags.DEFINE_integer('pre_save_step', 1000, '--model mtl, pretrain: write the backbone '
                     'weights-<i> (and a resumable checkpoint) every this many iterations.')
flags.DEFINE_integer('pre_print_step', 1000, '--model mtl, pretrain: log every this many '
                     'iterations.')
flags.DEFINE_integer('pre_iter', 10000, '--model mtl, meta_train: the pre-training snapshot '
                     "weights-<pre_iter> to start from (the runner's PRE_ITER; -1: the newest).")
flags.DEFINE_string('pretrain_dir', '', '--model mtl: the folder --mode pretrain writes '
                    '(snapshots weights-<i>, its log and checkpoints) and meta_train reads; '
                    'default <savedir>/pretrain.')
flags.DEFINE_integer('lr_drop_step', 1000, '--model mtl: halve (--lr_drop_rate) the meta '
                     'learning rate after every this many iterations (the runner: 1000).')
flags.DEFINE_float('lr_drop_rate', 0.5, '--model mtl: the factor of each drop.')
flags.DEFINE_float('min_meta_lr', 1e-4, '--model mtl: floor of the meta learning rate (the '
                   'original parses it but hard-codes 0.1 * meta_lr, the same at defaults).')
flags.DEFINE_integer('meta_intrain_val_sample', 600, '--model mtl: validation episodes (the '
                     'same ones at every validation).')
flags.DEFINE_integer('metatest_epite_sample_num', 0, '--model mtl: queries per class at '
                     'validation and meta-test; 0 = shot (the original).')
flags.DEFINE_boolean('base_augmentation', True, '--model mtl, meta_test: double the support '
                     'set with horizontal flips.')
flags.DEFINE_integer('test_iter', None, '--model mtl, meta_test: test checkpoint model-<i> '
                     "(the original's --test_iter); default the newest.")
flags.DEFINE_boolean('hard_task', False, '--model mtl: the paper\'s hard-task (HT) '
                     'meta-batch, never in the released code: after each metabatch, one more '
                     'update on --metabatch tasks re-sampled from its failure classes (see '
                     'README).')
flags.DEFINE_alias('way_num', 'way')
flags.DEFINE_alias('shot_num', 'shot')
flags.DEFINE_alias('metatrain_epite_sample_num', 'query')
flags.DEFINE_alias('meta_batch_size', 'metabatch')
flags.DEFINE_alias('train_base_epoch_num', 'n_steps')
flags.DEFINE_alias('test_base_epoch_num', 'n_test_steps')
flags.DEFINE_alias('base_lr', 'inner_lr')
flags.DEFINE_alias('metatrain_iterations', 'n_train_iters')
flags.DEFINE_alias('meta_save_step', 'save_freq')
flags.DEFINE_alias('meta_val_print_step', 'val_freq')
flags.DEFINE_alias('meta_print_step', 'print_freq')

# The original runner's values (mtl tensorflow/run_experiment.py; main.py's own defaults
# differ: 15000 meta iterations, lr_drop_step 5000, meta_save_step 500).
DEFAULTS = dict(dataset='mimgnet', way=5, shot=1, query=15, metabatch=2, meta_lr=1e-3,
                inner_lr=1e-3, n_train_iters=20000, n_steps=20, n_test_steps=100,
                val_freq=100, save_freq=100, print_freq=100, n_test_iters=600, eval_chunk=10)


def validate(cfg):
    errors = []
    for n in ('pretrain_batch_size', 'pretrain_iterations', 'pre_lr_dropstep',
              'pre_save_step', 'pre_print_step', 'lr_drop_step', 'meta_intrain_val_sample',
              'img_size'):
        if getattr(cfg, n) < 1:
            errors.append(f'--{n} must be a positive integer, got {getattr(cfg, n)}')
    if cfg.pretrain_class_num is not None and cfg.pretrain_class_num < 1:
        errors.append(f'--pretrain_class_num must be a positive integer, got '
                      f'{cfg.pretrain_class_num}')
    if cfg.pre_iter < -1:
        errors.append(f'--pre_iter must be >= 0, or -1 for the newest snapshot, got '
                      f'{cfg.pre_iter}')
    if cfg.test_iter is not None and cfg.test_iter < 0:
        errors.append(f'--test_iter must be >= 0, got {cfg.test_iter}')
    if cfg.metatest_epite_sample_num < 0:
        errors.append(f'--metatest_epite_sample_num must be >= 0 (0: shot), got '
                      f'{cfg.metatest_epite_sample_num}')
    for n in ('pre_lr', 'min_pre_lr', 'min_meta_lr', 'lr_drop_rate'):
        if not 0 < getattr(cfg, n) < math.inf:
            errors.append(f'--{n} must be positive and finite, got {getattr(cfg, n)}')
    if not 0 < cfg.pretrain_dropout_keep <= 1:
        errors.append(f'--pretrain_dropout_keep must be in (0, 1], got '
                      f'{cfg.pretrain_dropout_keep}')
    if cfg.backbone_arch == 'resnet12' and 1 <= cfg.img_size < 16:
        errors.append(f'--img_size {cfg.img_size} is too small for ResNet-12\'s four 2x2 '
                      'VALID max-pools: use at least 16 (the original: 84)')
    if cfg.backbone_arch == 'wrn28_10' and cfg.mode in ('meta_train', 'meta_test'):
        errors.append(f'--backbone_arch wrn28_10 is for --mode pretrain and embed (LEO\'s '
                      f'feature extractor); MTL\'s scaling and shifting in --mode {cfg.mode} are '
                      'defined on the original ResNets: use resnet12 or resnet18')
    if cfg.n_test_steps is not None and cfg.n_test_steps < 1:
        errors.append(f'--n_test_steps must be >= 1 for --model mtl (the accuracy is read '
                      f'after each inner step), got {cfg.n_test_steps}')
    return errors


def build(cfg, way, image_shape):
    from model.mtl import MTL
    if len(image_shape) != 3:
        raise ValueError(f'--model mtl works on images; --dataset {cfg.dataset} has inputs '
                         f'of shape {tuple(image_shape)}')
    return MTL(way, cfg.shot, image_shape, cfg.backbone_arch, cfg.img_size,
               base_lr=cfg.inner_lr, n_steps=cfg.n_steps, n_test_steps=cfg.n_test_steps,
               base_augmentation=cfg.base_augmentation, activation=cfg.activation,
               norm=cfg.norm)


def runner(cfg):
    from model.mtl_runner import MtlPretrainRunner, MtlRunner
    return MtlPretrainRunner if cfg.mode == 'pretrain' else MtlRunner


def written_folder(cfg):
    """--mode pretrain writes --pretrain_dir (the one-run-per-folder lock takes it)."""
    if cfg.mode == 'pretrain':
        from model.mtl_runner import pretrain_dir_of
        return pretrain_dir_of(cfg)
    return None


register(Method(
    'mtl', 'Meta-Transfer Learning (Sun et al. 2019): pre-trained ResNet, meta-learned '
    'scaling and shifting', ('pretrain', 'meta_train', 'meta_test', 'embed'), build, runner,
    flags=OWN_FLAGS,
    # Its backbone (--backbone_arch), inner loop, Adam, schedule and guard are the
    # original's; it runs on one device and does not clip its meta-gradient.
    shared=(shared.RUN_FLAGS + shared.IMAGE_DATA_FLAGS + shared.INNER_FLAGS + ('eval_chunk',) +
            shared.EMBED_FLAGS),
    defaults=DEFAULTS, fixed=dict(clip_value=0.), validate=validate,
    written_folder=written_folder))
