"""The flags every method shares, grouped by what reads them, and their checks.

A method's declaration (model/methods/) lists the groups that apply to it; main.py refuses a
flag given on the command line that applies to none of the chosen method's groups or own
flags. Names and defaults are the originals' (metadrop main.py for the MAML family). Each
method's own flags are defined in its declaration file.
"""
import math

from absl import flags

from data.datasets import dataset_names

MODES = ('meta_train', 'meta_test', 'export', 'adv_test', 'pretrain', 'embed')
ATTACK_NORMS = ('l1', 'l2', 'linf')  # model/adversarial.py NORMS
# Every dataset's reader declares it (data/datasets.py).
DATASETS = tuple(dataset_names())
BN_MODES = ('transductive', 'episodic', 'support')  # model/maml.py BN_MODES
BACKBONES = ('conv4', 'maml_conv4', 'convnet4', 'wide_convnet4', 'resnet12', 'wide_resnet12',
             'resnet18', 'wide_resnet18')  # model/backbones.py BACKBONES
METHODS = ('maml', 'fomaml', 'metasgd', 'metadrop', 'taml', 'leo', 'mtl', 'anil')

FLAGS = flags.FLAGS

# --- Every method: the run, its episodes and its outer loop's cadence ---
RUN_FLAGS = ('mode', 'model', 'savedir', 'gpu_id', 'seed', 'data_root', 'dataset', 'way', 'shot',
             'query', 'metabatch', 'meta_lr', 'n_train_iters', 'n_test_iters', 'save_freq',
             'print_freq', 'val_freq', 'n_val_batches', 'max_to_keep', 'progress', 'time_budget',
             'max_bad_steps', 'checkpoints')
flags.DEFINE_string('mode', 'meta_train', f'One of {", ".join(MODES)}.')
flags.DEFINE_string('model', 'maml', f'Method: {", ".join(METHODS)} (maml: second order; '
                    'fomaml: first-order MAML; metasgd: learned per-parameter step sizes; '
                    'metadrop: Meta-Dropout, learned multiplicative noise on the support '
                    'features; taml: Bayesian TAML, l2b; leo: LEO, deepmind/leo, on '
                    'embeddings; mtl: Meta-Transfer Learning; anil: ANIL, the inner loop '
                    'adapts the head only). `--model NAME --helpshort` lists its flags.')
flags.DEFINE_string('savedir', None, 'Folder for checkpoints, logs (meta_train.log, '
                    'meta_test.log), config.json and TensorBoard summaries.')
flags.DEFINE_integer('gpu_id', 0, 'GPU id; sets CUDA_VISIBLE_DEVICES as the original did, '
                     'unless it is set already or --distribute is used without --gpu_id '
                     '(-1: CPU only). Ignored on a machine without GPUs.')
flags.DEFINE_integer('seed', 0, 'Seed of the initialisation and of every episode drawn.')
flags.DEFINE_string('data_root', './data', 'Datasets live in <data_root>/<dataset>/ '
                    '(./data/omniglot/ as the originals).')
flags.DEFINE_string('dataset', 'omniglot', f'One of {", ".join(DATASETS)}.')
flags.DEFINE_integer('way', 20, 'N: classes per task.')
flags.DEFINE_integer('shot', 1, 'K: support examples per class.')
flags.DEFINE_integer('query', 5, 'Query examples per class (the runfiles pass 15).')
flags.DEFINE_integer('metabatch', 16, 'Tasks per meta-iteration.')
flags.DEFINE_float('meta_lr', 1e-3, 'beta: outer-loop Adam learning rate.')
flags.DEFINE_integer('n_train_iters', 60000, 'Meta-training iterations (the loop runs '
                     'iterations 0..n_train_iters inclusive, as the original).')
flags.DEFINE_integer('n_test_iters', 1000, 'Meta-test episodes.')
flags.DEFINE_integer('save_freq', 1000, 'Save a checkpoint every this many iterations.')
flags.DEFINE_integer('print_freq', 50, 'Log the running training loss every this many '
                     'iterations.')
flags.DEFINE_integer('val_freq', 1000, 'Validate every this many iterations.')
flags.DEFINE_integer('n_val_batches', 50, 'Metabatches per validation.')
flags.DEFINE_integer('max_to_keep', 3, 'Checkpoints kept in the savedir.')
flags.DEFINE_boolean('progress', True, 'Show tqdm progress bars.')
flags.DEFINE_float('time_budget', 0., 'meta_train / pretrain: stop after the first iteration '
                   'that ends this many seconds after the process started (start-up, tracing '
                   'and validation included), saving a checkpoint as a signal would; the same '
                   'command then continues for another budget. 0: no limit. For comparisons '
                   'at equal wall time (runfiles/mtl_omni_small.sh).')
flags.DEFINE_integer('max_bad_steps', 10, 'Stop meta_train after this many consecutive '
                     'steps with a non-finite loss or meta-gradient (each such step is '
                     'skipped without touching the weights, and logged).')
flags.DEFINE_string('checkpoints', '', 'meta_test: comma-separated checkpoints (paths of '
                    'model-<i> prefixes, or run folders for their newest) scored on the very '
                    'same episodes, with per-episode accuracies written for paired comparisons; '
                    'empty: the savedir\'s own.')

# --- The image readers (data/); methods on images ---
IMAGE_DATA_FLAGS = ('test_alphabets', 'val_alphabets', 'omniglot_source', 'omniglot_resize',
                    'folder_dir', 'image_size', 'channels', 'data_seed', 'mimgnet_layout')
flags.DEFINE_string('test_alphabets', '', 'Omniglot: comma-separated alphabets held out '
                    'for meta-test (e.g. Korean,Tagalog); empty = the original split of '
                    '1200 training characters, the rest for meta-test.')
flags.DEFINE_string('val_alphabets', '', 'Omniglot: comma-separated alphabets held out for '
                    'validation; empty = validate on the meta-test split (metadrop).')
flags.DEFINE_enum('omniglot_source', 'auto', ['auto', 'npy', 'official', 'small'],
                  'Which Omniglot files to read under <data_root>/omniglot/: metadrop '
                  'train.npy/test.npy, the official zips, or the _small1/_small2 subsets; '
                  'auto takes the first present in that order.')
flags.DEFINE_enum('omniglot_resize', 'nearest', ['nearest', 'lanczos'], 'Omniglot readers: '
                  'how the 105x105 one-bit PNGs become 28x28: nearest (what the originals\' '
                  'Pillow LANCZOS call does on mode-1 images, the default) or lanczos (a real '
                  'antialiased LANCZOS on the grey image).')
flags.DEFINE_string('folder_dir', '', '--dataset folder: DIR/<class>/<image> (or '
                    'DIR/{train,val,test}/<class>/<image>); default <data_root>/folder.')
flags.DEFINE_integer('image_size', None, '--dataset folder: images are resized to this '
                     'square size (default 84).')
flags.DEFINE_integer('channels', None, '--dataset folder: 1 (grey) or 3 (RGB; default).')
flags.DEFINE_integer('data_seed', 0, '--dataset synthetic: seed of the generated glyphs.')
flags.DEFINE_enum('mimgnet_layout', 'auto', ['auto', 'npy', 'csv'],
                  '--dataset mimgnet: which files to read under <data_root>/mimgnet/: metadrop '
                  'train.npy/test.npy (val = test), or images/ + train/val/test.csv (or '
                  'train/ val/ test/ class folders, cached as cache_*.npy); auto takes npy '
                  'when train.npy exists.')

# --- The inner loop of the methods that adapt by gradient steps ---
INNER_FLAGS = ('inner_lr', 'n_steps', 'n_test_steps')
flags.DEFINE_float('inner_lr', 0.1, 'alpha: inner-loop gradient step size (initial value '
                   'of the learned step sizes with --model metasgd unless --alpha_init).')
flags.DEFINE_integer('n_steps', 5, 'Inner gradient steps at meta-train.')
flags.DEFINE_integer('n_test_steps', None, 'Inner steps at validation/meta-test; default '
                     'n_steps (metadrop; cbfinn/maml used 10).')

# --- The shared compiled meta-train step's optimiser, schedule, clipping and guard (model/runner.py, model/steps.py) ---
OUTER_FLAGS = ('optimizer', 'momentum', 'weight_decay', 'lr_schedule', 'lr_milestones',
               'lr_decay', 'clip_value', 'clip_norm', 'skip_nonfinite_steps')
flags.DEFINE_enum('optimizer', 'adam', ['adam', 'torch_adam', 'sgd'], 'Outer optimiser: adam '
                  '(TF1 Adam, the TF originals), torch_adam (torch.optim.Adam, PyTorch-MAML: '
                  'epsilon added after the bias correction) or sgd (with --momentum, torch '
                  'semantics).')
flags.DEFINE_float('momentum', 0.9, '--optimizer sgd: momentum (PyTorch-MAML fixes 0.9).')
flags.DEFINE_float('weight_decay', 0., 'Outer L2 weight decay added to the meta-gradient '
                   "(torch's coupled weight_decay; PyTorch-MAML templates: 5e-4).")
flags.DEFINE_enum('lr_schedule', 'constant', ['constant', 'step', 'cosine'], 'Outer '
                  'learning-rate schedule: step = x --lr_decay at each of --lr_milestones; '
                  'cosine = meta_lr (1 + cos(pi i / T)) / 2, T = the last milestone or '
                  '--n_train_iters.')
flags.DEFINE_string('lr_milestones', '', 'Comma-separated iterations for --lr_schedule step '
                    '(and the cosine period); PyTorch-MAML counts epochs of 200 iterations.')
flags.DEFINE_float('lr_decay', 0.1, '--lr_schedule step: factor at each milestone.')
flags.DEFINE_float('clip_value', 3.0, 'Element-wise meta-gradient clipping to [-c, c] '
                   '(metadrop: 3; cbfinn/maml miniImageNet: 10); 0 disables.')
flags.DEFINE_float('clip_norm', 0., 'Clip the meta-gradient to this global L2 norm (after '
                   '--clip_value); 0 disables.')
flags.DEFINE_boolean('skip_nonfinite_steps', True, 'Skip a meta-train step whose loss or '
                     'meta-gradient is not finite (weights and optimiser state untouched, '
                     'logged, --max_bad_steps of them in a row stop the run). '
                     '--noskip_nonfinite_steps applies every step as the originals did, a '
                     'NaN then reaching the weights: for an exact original run. MAML family '
                     'and TAML (LEO keeps its original\'s guard, see --original_nan_guard).')

# --- How that step runs the tasks of a metabatch (speed only) ---
TASK_LOOP_FLAGS = ('task_loop', 'parallel_tasks', 'fused_batch_norm')
flags.DEFINE_enum('task_loop', 'while', ['while', 'unrolled'], 'How the compiled meta-train '
                  'step runs the tasks of a metabatch: while = one task traced once and run '
                  'in a tf.while_loop, meta-gradients summed (fast to trace); unrolled = every '
                  'task built into the graph (the plain path; same meta-gradient up to float '
                  'round-off).')
flags.DEFINE_integer('parallel_tasks', 1, '--task_loop while: tasks of the metabatch TensorFlow '
                     'may run at once (the loop\'s parallel_iterations). Measured on 2 cores, '
                     'Omniglot 20-way 1-shot, metabatch 4: 4 gave about 10% more steps/s for '
                     'about 40% more peak memory; 1 keeps one task\'s activations at a time.')
flags.DEFINE_boolean('fused_batch_norm', True, 'Batch norm with the batch\'s own statistics '
                     'through TensorFlow\'s fused kernel (oneDNN / cuDNN; same function and '
                     'derivatives to second order, faster); off: the plain arithmetic. Only '
                     'where epsilon >= 1.001e-5 (not torch\'s 1e-5).')

# --- Splitting the metabatch across devices ---
DEVICE_FLAGS = ('distribute', 'n_cpu_devices')
flags.DEFINE_enum('distribute', 'none', ['none', 'mirrored', 'multi_worker'], 'Split the '
                  'metabatch across devices: mirrored = tf.distribute.MirroredStrategy over '
                  'the GPUs of this host (or --n_cpu_devices logical CPUs); multi_worker = '
                  'MultiWorkerMirroredStrategy across the hosts listed in TF_CONFIG.')
flags.DEFINE_integer('n_cpu_devices', 0, 'Split the CPU into this many logical devices (for '
                     '--distribute mirrored on a machine without GPUs, e.g. to test); 0: '
                     'leave it whole.')

# --- The image backbones of model/backbones.py ---
BACKBONE_FLAGS = ('backbone', 'n_channel', 'normalization', 'zero_head')
flags.DEFINE_string('backbone', 'conv4', 'conv4: metadrop Conv4 (stride-1 conv, BN shift '
                    'only, ReLU, max-pool; truncated-normal 0.02 init); maml_conv4: '
                    'cbfinn/maml Conv4 (Glorot init; stride-2 convs and a spatial mean on '
                    '28x28 grey inputs, max-pool otherwise); PyTorch-MAML encoders with '
                    "torch's BN (gamma and beta as fast weights, eps 1e-5) and init: convnet4 "
                    '(32 channels), wide_convnet4 (64), resnet12 (64-128-256-512), '
                    'wide_resnet12 (64-160-320-640), resnet18 / wide_resnet18 (its 9-conv '
                    'ResNet-18, shortcut stride fixed).')
flags.DEFINE_integer('n_channel', None, 'Conv channels; default 64 on 28x28 grey inputs, '
                     '32 otherwise (the originals).')
flags.DEFINE_string('normalization', 'none', 'Per-channel input normalisation inside the '
                    'network: none (the originals), dataset (PyTorch-MAML\'s constants for '
                    'mimgnet and tiered), or MEAN[,MEAN,MEAN]/STD[,STD,STD].')
flags.DEFINE_boolean('zero_head', False, 'Zero-initialised classifier head (PyTorch-MAML '
                     'reset_classifier): the head is not meta-learned and every task starts '
                     'from 0, so --way may differ between meta_train and meta_test.')

# --- The MAML-family inner loop and episodes: PyTorch-MAML's extras and metadrop's options ---
MAML_ENGINE_FLAGS = ('inner_loss', 'outer_loss', 'bn_mode', 'bn_momentum', 'efficient', 'frozen',
                     'inner_momentum', 'inner_weight_decay', 'reuse_task_classes', 'augment',
                     'augment_pad', 'augment_jitter', 'augment_query')
flags.DEFINE_enum('inner_loss', 'mean', ['mean', 'maml_sum'], 'Inner-loop loss scaling: '
                  'mean cross-entropy (metadrop, PyTorch-MAML) or maml_sum = sum of '
                  'per-example CE / K (cbfinn/maml, i.e. way times larger steps).')
flags.DEFINE_enum('outer_loss', 'mean', ['mean', 'maml_sum'], 'Query (meta) loss scaling of '
                  'the MAML family: mean cross-entropy (metadrop, PyTorch-MAML) or maml_sum = '
                  'sum of per-query CE / K, averaged over the tasks (cbfinn/maml: way x '
                  'queries per class / K times the mean, so its --clip_value acts on a larger '
                  'meta-gradient; the runfiles maml_cbfinn_*.sh pass it).')
flags.DEFINE_enum('bn_mode', 'transductive', list(BN_MODES), 'Batch-norm statistics of the '
                  'query forward: transductive = the query batch\'s own (the originals); '
                  'episodic = per-episode running statistics tracked through the inner loop '
                  '(inductive); support = the support set\'s statistics under the adapted '
                  'weights (inductive). The inner loop always uses the support batch\'s.')
flags.DEFINE_float('bn_momentum', 0.1, '--bn_mode episodic: running-average momentum '
                   "(torch's 0.1; 1 = the last support forward's statistics).")
flags.DEFINE_boolean('efficient', False, 'Gradient checkpointing of the inner loop '
                     '(tf.recompute_grad per inner step): same meta-gradient, activation '
                     'memory no longer grows with --n_steps, about one more forward per step.')
flags.DEFINE_string('frozen', '', 'Comma-separated parameters left out of the inner loop '
                    '(still meta-learned): substrings of parameter names such as bn, conv1, '
                    'layer2, dense; encoder = all but the head; classifier = the head.')
flags.DEFINE_float('inner_momentum', 0., 'Heavy-ball momentum of the inner SGD (PyTorch-MAML).')
flags.DEFINE_float('inner_weight_decay', 0., 'L2 weight decay of the inner SGD (PyTorch-MAML).')
flags.DEFINE_boolean('reuse_task_classes', False, "Reproduce metadrop's data.py bug: all "
                     'tasks of one metabatch share one class set and label order.')
flags.DEFINE_string('augment', '', 'Comma-separated augmentations of the meta-train support '
                    'images, drawn per image and per task: crop (pad --augment_pad, random '
                    'crop), flip (horizontal), color (brightness/contrast/saturation '
                    '--augment_jitter). Empty: none (the originals).')
flags.DEFINE_integer('augment_pad', 8, '--augment crop: zero padding in pixels.')
flags.DEFINE_float('augment_jitter', 0.4, '--augment color: jitter strength.')
flags.DEFINE_boolean('augment_query', False, 'Augment the meta-train query images too.')

# --- --mode adv_test: PGD on the query set after adaptation (model/adversarial.py) ---
ADV_TEST_FLAGS = ('attacks', 'eps_l1', 'eps_l2', 'eps_linf', 'pgd_steps', 'pgd_step_scale',
                  'pgd_l1_frac', 'n_adv_episodes')
flags.DEFINE_string('attacks', 'l1,l2,linf', 'adv_test: comma-separated PGD attacks, from '
                    'l1, l2, linf.')
flags.DEFINE_float('eps_l1', None, 'adv_test: L1 budget per image (pixels in [0, 1]); '
                   'default 10 on grey images, 20 on colour ones (ours, not the paper\'s).')
flags.DEFINE_float('eps_l2', None, 'adv_test: L2 budget per image; default 1.0 (ours).')
flags.DEFINE_float('eps_linf', None, 'adv_test: Linf budget per image; default 0.1 on grey '
                   'images, 0.03 on colour ones (ours).')
flags.DEFINE_integer('pgd_steps', 20, 'adv_test: PGD iterations per attack.')
flags.DEFINE_float('pgd_step_scale', 2.5, 'adv_test: PGD step = pgd_step_scale * eps / '
                   'pgd_steps, measured in the attack\'s norm (Madry et al.: 2.5).')
flags.DEFINE_float('pgd_l1_frac', 0.01, 'adv_test: fraction of the coordinates an L1 step '
                   'moves (those with the largest |gradient|; at least one).')
flags.DEFINE_integer('n_adv_episodes', 100, 'adv_test: meta-test episodes attacked (the '
                     'first ones meta_test runs, same seed and metabatch).')

# --- --mode embed: LEO's embedding files from a trained backbone (model/embed.py) ---
EMBED_FLAGS = ('embed_dir', 'embed_crops', 'embed_batch_size', 'embed_stats_images')
flags.DEFINE_string('embed_dir', '', 'embed: the folder the embeddings are written to (LEO\'s '
                    'layout, read by --model leo --dataset leo_custom --data_path DIR); '
                    'default <savedir>/embeddings.')
flags.DEFINE_string('embed_crops', 'center', 'embed: comma-separated crops to write, from '
                    'center and multiview (LEO\'s; multiview where the image size allows).')
flags.DEFINE_integer('embed_batch_size', 100, 'embed: images per forward pass (memory only).')
flags.DEFINE_integer('embed_stats_images', 0, 'embed: batch-norm population statistics from the '
                     'first ceil(N / classes) images of every meta-train class (exact statistics '
                     'cost about one pass per two BN layers; 0 = all images).')

# --- Shared by some methods (each method's declaration says which) ---
PARTLY_SHARED_FLAGS = ('alpha_init', 'eval_chunk')
flags.DEFINE_float('alpha_init', None, 'Initial value of the Meta-SGD step sizes; default '
                   'inner_lr (l2b uses 0.01).')
flags.DEFINE_integer('eval_chunk', 20, '--model leo, mtl (default 10): episodes per compiled evaluation call '
                     '(memory only: results are means over episodes).')


POSITIVE_INTS = ('way', 'shot', 'query', 'metabatch', 'n_steps', 'parallel_tasks', 'save_freq',
                 'n_test_iters', 'print_freq', 'val_freq', 'n_val_batches', 'max_to_keep',
                 'max_bad_steps', 'pgd_steps', 'n_adv_episodes', 'embed_batch_size',
                 'eval_chunk')
OPTIONAL_POSITIVE_INTS = ('n_channel', 'image_size')   # None: the default
POSITIVE_FLOATS = ('meta_lr', 'inner_lr', 'alpha_init')   # alpha_init None: inner_lr
NON_NEGATIVE_FLOATS = ('time_budget', 'inner_momentum', 'inner_weight_decay', 'momentum',
                       'weight_decay', 'clip_norm', 'augment_jitter')
MAX_CPU_DEVICES = 64
INT32_MAX = 2 ** 31 - 1


def validate(cfg):
    """Messages for bad values of the shared flags (every method; a method's own checks are
    in its declaration)."""
    errors = []
    for n in POSITIVE_INTS:
        if getattr(cfg, n) < 1:
            errors.append(f'--{n} must be a positive integer, got {getattr(cfg, n)}')
    for n in OPTIONAL_POSITIVE_INTS:
        if getattr(cfg, n) is not None and getattr(cfg, n) < 1:
            errors.append(f'--{n} must be a positive integer, got {getattr(cfg, n)}')
    for n in POSITIVE_FLOATS:
        value = getattr(cfg, n)
        if value is None:
            continue
        if not value > 0:
            errors.append(f'--{n} must be positive, got {value}')
        elif not math.isfinite(value):
            errors.append(f'--{n} must be finite, got {value}')
    for n in NON_NEGATIVE_FLOATS:
        value = getattr(cfg, n)
        if not 0 <= value < math.inf:
            errors.append(f'--{n} must be >= 0 and finite, got {value}')
    if not 0 <= cfg.clip_value < math.inf:
        errors.append(f'--clip_value must be >= 0 (0 disables clipping), got {cfg.clip_value}')
    if cfg.channels is not None and cfg.channels not in (1, 3):
        errors.append(f'--channels must be 1 (grey) or 3 (RGB), got {cfg.channels}')
    if cfg.n_train_iters < 0:
        errors.append(f'--n_train_iters must be >= 0, got {cfg.n_train_iters}')
    if cfg.n_test_steps is not None and cfg.n_test_steps < 0:
        errors.append(f'--n_test_steps must be >= 0, got {cfg.n_test_steps}')
    if not cfg.savedir:
        errors.append('--savedir is required (the folder for checkpoints and logs)')
    for n in ('seed', 'data_seed'):   # numpy's generators take non-negative seeds only
        if getattr(cfg, n) < 0:
            errors.append(f'--{n} must be >= 0, got {getattr(cfg, n)}')
    if cfg.backbone not in BACKBONES:
        errors.append(f'--backbone {cfg.backbone!r} is not one of {", ".join(BACKBONES)}')
    if cfg.backbone.startswith(('resnet', 'wide_resnet')) and cfg.n_channel is not None:
        errors.append(f'--n_channel does not apply to --backbone {cfg.backbone} (its widths '
                      'are fixed; wide_resnet* are the wide ones)')
    if not 0 < cfg.bn_momentum <= 1:
        errors.append(f'--bn_momentum must be in (0, 1], got {cfg.bn_momentum}')
    if not 0 < cfg.lr_decay < math.inf:
        errors.append(f'--lr_decay must be positive, got {cfg.lr_decay}')
    errors += validate_milestones(cfg)
    if cfg.augment_pad < 0:
        errors.append(f'--augment_pad must be >= 0, got {cfg.augment_pad}')
    try:
        from data.augment import parse_augment
        parse_augment(cfg.augment)
    except ValueError as e:
        errors.append(f'--augment: {e}')
    try:
        from data.augment import parse_normalization
        norm = parse_normalization(cfg.normalization, cfg.dataset)
        if norm is not None and not all(math.isfinite(v) for values in norm for v in values):
            errors.append(f'--normalization must hold finite numbers, got {cfg.normalization}')
    except ValueError as e:
        errors.append(str(e))
    if cfg.frozen.strip() and not cfg.frozen.replace(',', '').strip():
        errors.append(f'--frozen {cfg.frozen!r} names no parameter')
    if not 0 <= cfg.n_cpu_devices <= MAX_CPU_DEVICES:
        errors.append(f'--n_cpu_devices must be in 0..{MAX_CPU_DEVICES} (logical devices for '
                      f'--distribute mirrored on a CPU), got {cfg.n_cpu_devices}')
    if cfg.embed_stats_images < 0:
        errors.append(f'--embed_stats_images must be >= 0 (0: all images), got '
                      f'{cfg.embed_stats_images}')
    try:
        from model.crops import parse_crops
        parse_crops(cfg.embed_crops)
    except ValueError as e:
        errors.append(str(e))
    if cfg.checkpoints.strip() and cfg.mode != 'meta_test':
        errors.append(f'--checkpoints scores several checkpoints in --mode meta_test; it does '
                      f'not apply to --mode {cfg.mode}')
    return errors + validate_adversarial(cfg)


def validate_milestones(cfg):
    errors = []
    try:
        milestones = [int(m) for m in cfg.lr_milestones.split(',') if m.strip()]
        if milestones != sorted(milestones) or any(m < 1 for m in milestones):
            errors.append(f'--lr_milestones must be increasing positive iterations, got '
                          f'{cfg.lr_milestones}')
    except ValueError:
        errors.append(f'--lr_milestones must be comma-separated integers, got '
                      f'{cfg.lr_milestones!r}')
        milestones = []
    if cfg.lr_schedule == 'step' and not milestones:
        errors.append('--lr_schedule step needs --lr_milestones (e.g. 24000,28000)')
    return errors


def validate_adversarial(cfg):
    """Messages for bad --mode adv_test flags."""
    errors = []
    names = [a.strip() for a in cfg.attacks.split(',') if a.strip()]
    unknown = [a for a in names if a not in ATTACK_NORMS]
    if not names:
        errors.append(f'--attacks is empty; give a comma-separated list of '
                      f'{", ".join(ATTACK_NORMS)}')
    elif unknown:
        errors.append(f'--attacks: unknown attack(s) {", ".join(unknown)}; use '
                      f'{", ".join(ATTACK_NORMS)}')
    elif len(set(names)) < len(names):
        errors.append(f'--attacks lists an attack twice: {cfg.attacks}')
    for norm in ATTACK_NORMS:
        value = getattr(cfg, f'eps_{norm}')
        if value is not None and not 0 <= value < math.inf:
            errors.append(f'--eps_{norm} must be >= 0 and finite, got {value}')
    if not 0 < cfg.pgd_step_scale < math.inf:
        errors.append(f'--pgd_step_scale must be positive and finite, got {cfg.pgd_step_scale}')
    if not 0 < cfg.pgd_l1_frac <= 1:
        errors.append(f'--pgd_l1_frac must be in (0, 1], got {cfg.pgd_l1_frac}')
    return errors


def validate_numbers(cfg, errors):
    """What holds for every number flag, whatever its meaning (checked last, for the flags
    no other message names): integers fit TensorFlow's 32-bit shapes and counts, floats are
    finite (absl parses nan and inf)."""
    named = ' '.join(errors) + ' '
    more = []
    for name in sorted(vars(cfg)):
        value = getattr(cfg, name)
        if value is None or isinstance(value, bool) or name not in FLAGS or \
                f'--{name} ' in named:
            continue
        kind = FLAGS[name].flag_type()
        if kind == 'int' and not -INT32_MAX - 1 <= value <= INT32_MAX:
            more.append(f'--{name} must be within +-{INT32_MAX} (TensorFlow\'s shapes and '
                        f'counts are 32-bit), got {value}')
        elif kind == 'float' and not math.isfinite(value):
            more.append(f'--{name} must be finite, got {value}')
    return more
