"""Entry point: `python main.py --mode meta_train|meta_test|export|adv_test --savedir DIR ...`.

Flag names and defaults are the originals' (metadrop main.py for the MAML family); every
flag is listed with its help by `python main.py --helpfull`.
"""
import json
import math
import os
import sys
import types

# Before TensorFlow is imported anywhere: see model/__init__.py.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app
from absl import flags

MODES = ('meta_train', 'meta_test', 'export', 'adv_test', 'pretrain', 'embed')
ATTACK_NORMS = ('l1', 'l2', 'linf')  # model/adversarial.py NORMS
METHODS = ('maml', 'fomaml', 'metasgd', 'metadrop', 'taml', 'leo', 'mtl')
DATASETS = ('omniglot', 'folder', 'synthetic', 'mimgnet', 'tiered', 'cifar', 'svhn', 'cub',
            'leo_mini', 'leo_tiered', 'leo_custom', 'fc100')
LEO_DATASETS = ('leo_mini', 'leo_tiered', 'leo_custom')   # embedding vectors
LEO_DATASET_NAMES = {'miniImageNet': 'leo_mini', 'tieredImageNet': 'leo_tiered'}
# --model leo: the original's defaults (leo config.py / runner.py) for the flags this
# project shares with the MAML family, used unless the flag is given.
LEO_DEFAULTS = dict(dataset='leo_mini', way=5, shot=1, query=15, metabatch=12, meta_lr=1e-4,
                    n_train_iters=100000, n_steps=5, val_freq=1000, save_freq=1000,
                    print_freq=500, n_val_batches=10, n_test_iters=10000, max_to_keep=5)
# --model taml: l2b main.py's defaults (dataset cifar, with svhn as OOD dataset; validation
# on 3000 episodes), and the cadences its main.py fixes (log every 100, validate every 10000,
# keep 10 checkpoints); the test-time inner steps default to n_steps as in l2b.
TAML_DEFAULTS = dict(dataset='cifar', way=5, max_shot=50, query=15, metabatch=4, meta_lr=1e-3,
                     inner_lr=0.5, n_steps=5, n_train_iters=50000, save_freq=10000,
                     n_test_iters=1000, print_freq=100, val_freq=10000, max_to_keep=10)
# --model mtl: the original runner's values (mtl tensorflow/run_experiment.py; main.py's own
# defaults differ: 15000 meta iterations, lr_drop_step 5000, meta_save_step 500).
MTL_DEFAULTS = dict(dataset='mimgnet', way=5, shot=1, query=15, metabatch=2, meta_lr=1e-3,
                    inner_lr=1e-3, n_train_iters=20000, n_steps=20, n_test_steps=100,
                    val_freq=100, save_freq=100, print_freq=100, n_test_iters=600,
                    clip_value=0., eval_chunk=10)
OOD_ONLY_DATASETS = ('svhn', 'cub')   # no training split
IMBALANCE_MODES = ('mixed', 'class', 'task', 'none')  # data/episodes.py IMBALANCE_MODES
BN_MODES = ('transductive', 'episodic', 'support')  # model/maml.py BN_MODES
BACKBONES = ('conv4', 'maml_conv4', 'convnet4', 'wide_convnet4', 'resnet12', 'wide_resnet12',
             'resnet18', 'wide_resnet18')  # model/nets.py BACKBONES

FLAGS = flags.FLAGS
# --- the original's flags (metadrop main.py), same names and defaults ---
flags.DEFINE_integer('gpu_id', 0, 'GPU id; sets CUDA_VISIBLE_DEVICES as the original did, '
                     'unless it is set already or --distribute is used without --gpu_id '
                     '(-1: CPU only). Ignored on a machine without GPUs.')
flags.DEFINE_string('mode', 'meta_train', f'One of {", ".join(MODES)}.')
flags.DEFINE_string('savedir', None, 'Folder for checkpoints, logs (meta_train.log, '
                    'meta_test.log), config.json and TensorBoard summaries.')
flags.DEFINE_integer('save_freq', 1000, 'Save a checkpoint every this many iterations.')
flags.DEFINE_integer('n_train_iters', 60000, 'Meta-training iterations (the loop runs '
                     'iterations 0..n_train_iters inclusive, as the original).')
flags.DEFINE_integer('n_test_iters', 1000, 'Meta-test episodes.')
flags.DEFINE_string('dataset', 'omniglot', f'One of {", ".join(DATASETS)}.')
flags.DEFINE_integer('way', 20, 'N: classes per task.')
flags.DEFINE_integer('shot', 1, 'K: support examples per class.')
flags.DEFINE_integer('query', 5, 'Query examples per class (the runfiles pass 15).')
flags.DEFINE_integer('metabatch', 16, 'Tasks per meta-iteration.')
flags.DEFINE_float('meta_lr', 1e-3, 'beta: outer-loop Adam learning rate.')
flags.DEFINE_float('inner_lr', 0.1, 'alpha: inner-loop gradient step size (initial value '
                   'of the learned step sizes with --model metasgd unless --alpha_init).')
flags.DEFINE_integer('n_steps', 5, 'Inner gradient steps at meta-train.')
flags.DEFINE_integer('n_test_mc_samp', 1, 'MC samples of the inner-step loss at validation '
                     'and meta-test (--model metadrop; the runfiles use 30 at meta-test); 1 '
                     'at meta-train.')
flags.DEFINE_boolean('maml', False, "metadrop's switch back to plain MAML on the "
                     'Meta-Dropout code path: --model metadrop --maml has no noise and does '
                     'not train phi (a no-op with --model maml).')
# --- this project's flags ---
flags.DEFINE_string('model', 'maml', f'Method: {", ".join(METHODS)} (maml: second order; '
                    'fomaml: first-order MAML; metasgd: learned per-parameter step sizes; '
                    'metadrop: Meta-Dropout, learned multiplicative noise on the support '
                    'features; taml: Bayesian TAML, l2b; leo: LEO, deepmind/leo, on '
                    'embeddings).')
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
flags.DEFINE_integer('n_test_steps', None, 'Inner steps at validation/meta-test; default '
                     'n_steps (metadrop; cbfinn/maml used 10).')
flags.DEFINE_float('alpha_init', None, 'Initial value of the Meta-SGD step sizes; default '
                   'inner_lr (l2b uses 0.01).')
flags.DEFINE_enum('inner_loss', 'mean', ['mean', 'maml_sum'], 'Inner-loop loss scaling: '
                  'mean cross-entropy (metadrop, PyTorch-MAML) or maml_sum = sum of '
                  'per-example CE / K (cbfinn/maml, i.e. way times larger steps).')
flags.DEFINE_enum('outer_loss', 'mean', ['mean', 'maml_sum'], 'Query (meta) loss scaling of '
                  'the MAML family: mean cross-entropy (metadrop, PyTorch-MAML) or maml_sum = '
                  'sum of per-query CE / K, averaged over the tasks (cbfinn/maml: way x '
                  'queries per class / K times the mean, so its --clip_value acts on a larger '
                  'meta-gradient; the runfiles maml_cbfinn_*.sh pass it).')
flags.DEFINE_float('clip_value', 3.0, 'Element-wise meta-gradient clipping to [-c, c] '
                   '(metadrop: 3; cbfinn/maml miniImageNet: 10); 0 disables.')
flags.DEFINE_integer('seed', 0, 'Seed of the initialisation and of every episode drawn.')
flags.DEFINE_string('data_root', './data', 'Datasets live in <data_root>/<dataset>/ '
                    '(./data/omniglot/ as the originals).')
flags.DEFINE_boolean('reuse_task_classes', False, "Reproduce metadrop's data.py bug: all "
                     'tasks of one metabatch share one class set and label order.')
flags.DEFINE_string('test_alphabets', '', 'Omniglot: comma-separated alphabets held out '
                    'for meta-test (e.g. Korean,Tagalog); empty = the original split of '
                    '1200 training characters, the rest for meta-test.')
flags.DEFINE_string('val_alphabets', '', 'Omniglot: comma-separated alphabets held out for '
                    'validation; empty = validate on the meta-test split (metadrop).')
flags.DEFINE_enum('omniglot_resize', 'nearest', ['nearest', 'lanczos'], 'Omniglot readers: '
                  'how the 105x105 one-bit PNGs become 28x28: nearest (what the originals\' '
                  'Pillow LANCZOS call does on mode-1 images, the default) or lanczos (a real '
                  'antialiased LANCZOS on the grey image).')
flags.DEFINE_enum('omniglot_source', 'auto', ['auto', 'npy', 'official', 'small'],
                  'Which Omniglot files to read under <data_root>/omniglot/: metadrop '
                  'train.npy/test.npy, the official zips, or the _small1/_small2 subsets; '
                  'auto takes the first present in that order.')
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
flags.DEFINE_boolean('skip_nonfinite_steps', True, 'Skip a meta-train step whose loss or '
                     'meta-gradient is not finite (weights and optimiser state untouched, '
                     'logged, --max_bad_steps of them in a row stop the run). '
                     '--noskip_nonfinite_steps applies every step as the originals did, a '
                     'NaN then reaching the weights: for an exact original run. MAML family '
                     'and TAML (LEO keeps its original\'s guard, see --original_nan_guard).')
# --- PyTorch-MAML's extras (fidelity sheet section 10); the defaults keep the originals ---
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
flags.DEFINE_boolean('zero_head', False, 'Zero-initialised classifier head (PyTorch-MAML '
                     'reset_classifier): the head is not meta-learned and every task starts '
                     'from 0, so --way may differ between meta_train and meta_test.')
flags.DEFINE_string('frozen', '', 'Comma-separated parameters left out of the inner loop '
                    '(still meta-learned): substrings of parameter names such as bn, conv1, '
                    'layer2, dense; encoder = all but the head; classifier = the head.')
flags.DEFINE_float('inner_momentum', 0., 'Heavy-ball momentum of the inner SGD (PyTorch-MAML).')
flags.DEFINE_float('inner_weight_decay', 0., 'L2 weight decay of the inner SGD (PyTorch-MAML).')
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
flags.DEFINE_float('clip_norm', 0., 'Clip the meta-gradient to this global L2 norm (after '
                   '--clip_value); 0 disables.')
flags.DEFINE_string('normalization', 'none', 'Per-channel input normalisation inside the '
                    'network: none (the originals), dataset (PyTorch-MAML\'s constants for '
                    'mimgnet and tiered), or MEAN[,MEAN,MEAN]/STD[,STD,STD].')
flags.DEFINE_string('augment', '', 'Comma-separated augmentations of the meta-train support '
                    'images, drawn per image and per task: crop (pad --augment_pad, random '
                    'crop), flip (horizontal), color (brightness/contrast/saturation '
                    '--augment_jitter). Empty: none (the originals).')
flags.DEFINE_integer('augment_pad', 8, '--augment crop: zero padding in pixels.')
flags.DEFINE_float('augment_jitter', 0.4, '--augment color: jitter strength.')
flags.DEFINE_boolean('augment_query', False, 'Augment the meta-train query images too.')
flags.DEFINE_boolean('fused_batch_norm', True, 'Batch norm with the batch\'s own statistics '
                     'through TensorFlow\'s fused kernel (oneDNN / cuDNN; same function and '
                     'derivatives to second order, faster); off: the plain arithmetic. Only '
                     'where epsilon >= 1.001e-5 (not torch\'s 1e-5).')
flags.DEFINE_enum('task_loop', 'while', ['while', 'unrolled'], 'How the compiled meta-train '
                  'step runs the tasks of a metabatch: while = one task traced once and run '
                  'in a tf.while_loop, meta-gradients summed (fast to trace); unrolled = every '
                  'task built into the graph (the plain path; same meta-gradient up to float '
                  'round-off).')
flags.DEFINE_integer('parallel_tasks', 1, '--task_loop while: tasks of the metabatch TensorFlow '
                     'may run at once (the loop\'s parallel_iterations). Measured on 2 cores, '
                     'Omniglot 20-way 1-shot, metabatch 4: 4 gave about 10% more steps/s for '
                     'about 40% more peak memory; 1 keeps one task\'s activations at a time.')
flags.DEFINE_enum('distribute', 'none', ['none', 'mirrored', 'multi_worker'], 'Split the '
                  'metabatch across devices: mirrored = tf.distribute.MirroredStrategy over '
                  'the GPUs of this host (or --n_cpu_devices logical CPUs); multi_worker = '
                  'MultiWorkerMirroredStrategy across the hosts listed in TF_CONFIG.')
flags.DEFINE_integer('n_cpu_devices', 0, 'Split the CPU into this many logical devices (for '
                     '--distribute mirrored on a machine without GPUs, e.g. to test); 0: '
                     'leave it whole.')
# --- Bayesian TAML (l2b main.py's flags; --model taml) ---
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
# --- LEO (deepmind/leo config.py / runner.py flags, same names and defaults; --model leo) ---
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
flags.DEFINE_integer('eval_chunk', 20, '--model leo, mtl (default 10): episodes per compiled evaluation call '
                     '(memory only: results are means over episodes).')
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
# --- MTL (yaoyao-liu/meta-transfer-learning TF main.py flags, same names; --model mtl) ---
flags.DEFINE_enum('backbone_arch', 'resnet12', ['resnet12', 'resnet18'], '--model mtl: the '
                  "original's ResNet-12 (64-128-256-512, 84 -> 5x5 -> 512-d) or ResNet-18 "
                  '(input resized to 224 in the graph).')
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
# --- --mode adv_test: PGD on the query set after adaptation (model/adversarial.py) ---
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
flags.DEFINE_string('embed_dir', '', 'embed: the folder the embeddings are written to (LEO\'s '
                    'layout, read by --model leo --dataset leo_custom --data_path DIR); '
                    'default <savedir>/embeddings.')
flags.DEFINE_string('embed_crops', 'center', 'embed: comma-separated crops to write, from '
                    'center and multiview (LEO\'s; multiview where the image size allows).')
flags.DEFINE_integer('embed_batch_size', 100, 'embed: images per forward pass (memory only).')
# --- meta_test on several checkpoints (paired evaluation) ---
flags.DEFINE_string('checkpoints', '', 'meta_test: comma-separated checkpoints (paths of '
                    'model-<i> prefixes, or run folders for their newest) scored on the very '
                    'same episodes, with per-episode accuracies written for paired comparisons; '
                    'empty: the savedir\'s own.')

POSITIVE_INTS = ('way', 'shot', 'query', 'metabatch', 'n_steps', 'n_test_mc_samp',
                 'parallel_tasks', 'save_freq', 'n_test_iters', 'print_freq', 'val_freq',
                 'n_val_batches', 'max_to_keep', 'max_bad_steps', 'max_shot', 'balance_freq')
OPTIONAL_POSITIVE_INTS = ('n_channel', 'image_size')   # None: the default
POSITIVE_FLOATS = ('meta_lr', 'inner_lr')
NON_NEGATIVE_FLOATS = ('time_budget', 'inner_momentum', 'inner_weight_decay', 'momentum', 'weight_decay',
                       'clip_norm', 'augment_jitter')


def config_from_flags():
    """The run configuration: every flag defined above, as a plain namespace."""
    names = [f.name for f in FLAGS.get_key_flags_for_module(sys.modules[__name__])]
    cfg = types.SimpleNamespace(**{n: FLAGS[n].value for n in names
                                   if n not in ALIASES})
    if cfg.model == 'taml':
        apply_taml_defaults(cfg)
    if cfg.model == 'leo':
        apply_leo_defaults(cfg)
    if cfg.model == 'mtl':
        for name, value in MTL_DEFAULTS.items():
            if not FLAGS[name].present:
                setattr(cfg, name, value)
    return cfg


ALIASES = ('n_test_episodes', 'num_classes', 'num_tr_examples_per_class',
           'num_val_examples_per_class', 'metatrain_batch_size', 'outer_lr', 'num_steps_limit',
           'inner_unroll_length', 'checkpoint_path', 'way_num', 'shot_num',
           'metatrain_epite_sample_num', 'meta_batch_size', 'train_base_epoch_num',
           'test_base_epoch_num', 'base_lr', 'metatrain_iterations', 'meta_save_step',
           'meta_val_print_step', 'meta_print_step')


def apply_taml_defaults(cfg):
    """--model taml: l2b main.py's defaults (and its fixed cadences) where the flag was not
    given; --id_dataset is l2b's name for --dataset."""
    if cfg.id_dataset:
        cfg.dataset = cfg.id_dataset   # l2b's name for the dataset meta-trained on
    for name, value in TAML_DEFAULTS.items():
        if not FLAGS[name].present and not (name == 'dataset' and cfg.id_dataset):
            setattr(cfg, name, value)
    # l2b validates on 3000 episodes, in metabatches; svhn is its OOD set for cifar.
    if not FLAGS['n_val_batches'].present:
        # (a non-positive --metabatch is refused by validate() with its own message)
        cfg.n_val_batches = max(1, 3000 // max(1, cfg.metabatch))
    if not FLAGS['ood_dataset'].present and cfg.dataset == 'cifar':
        cfg.ood_dataset = 'svhn'


def apply_leo_defaults(cfg):
    """--model leo: the original's defaults where the flag was not given, and its
    --dataset_name / --checkpoint_steps / --evaluation_mode spelled as this project's."""
    for name, value in LEO_DEFAULTS.items():
        if not FLAGS[name].present:
            setattr(cfg, name, value)
    if cfg.dataset_name:
        cfg.dataset = LEO_DATASET_NAMES[cfg.dataset_name]
    if cfg.checkpoint_steps:
        cfg.val_freq = cfg.save_freq = cfg.checkpoint_steps
        cfg.print_freq = max(1, cfg.checkpoint_steps // 2)
    if cfg.evaluation_mode:
        cfg.mode = 'meta_test'


def parse_config(argv):
    """Parses `argv` (flags only, no program name) into a validated configuration without
    running anything: for tests and tools that drive the runner in-process."""
    FLAGS.unparse_flags()
    FLAGS(['main.py', *argv])
    cfg = config_from_flags()
    validate(cfg)
    return cfg


def validate(cfg):
    errors = []
    if cfg.mode not in MODES:
        errors.append(f'--mode {cfg.mode!r} is not one of {", ".join(MODES)}')
    if cfg.model not in METHODS:
        errors.append(f'--model {cfg.model!r} is not one of {", ".join(METHODS)}')
    if cfg.maml and cfg.model not in ('metadrop', 'maml'):
        errors.append(f'--maml turns --model metadrop back into MAML; it does not apply to '
                      f'--model {cfg.model}')
    if cfg.dataset not in DATASETS:
        which = 'id_dataset' if cfg.model == 'taml' and cfg.id_dataset else 'dataset'
        errors.append(f'--{which} {cfg.dataset!r} is not one of {", ".join(DATASETS)}')
    for n in POSITIVE_INTS:
        if getattr(cfg, n) < 1:
            errors.append(f'--{n} must be a positive integer, got {getattr(cfg, n)}')
    for n in OPTIONAL_POSITIVE_INTS:
        if getattr(cfg, n) is not None and getattr(cfg, n) < 1:
            errors.append(f'--{n} must be a positive integer, got {getattr(cfg, n)}')
    for n in POSITIVE_FLOATS + ('alpha_init',):
        value = getattr(cfg, n)
        if value is None:  # alpha_init: inner_lr
            continue
        if not value > 0:
            errors.append(f'--{n} must be positive, got {value}')
        elif not math.isfinite(value):
            errors.append(f'--{n} must be finite, got {value}')
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
    errors += validate_extras(cfg)
    errors += validate_taml(cfg)
    errors += validate_leo(cfg)
    errors += validate_mtl(cfg)
    errors += validate_adversarial(cfg)
    errors += validate_numbers(cfg, errors)
    if errors:
        raise app.UsageError('; '.join(errors))


INT32_MAX = 2 ** 31 - 1


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


MAX_CPU_DEVICES = 64


def validate_extras(cfg):
    """Messages for bad PyTorch-MAML-extra / distribution flags."""
    errors = []
    if cfg.backbone not in BACKBONES:
        errors.append(f'--backbone {cfg.backbone!r} is not one of {", ".join(BACKBONES)}')
    elif cfg.model == 'metadrop' and cfg.backbone not in ('conv4', 'maml_conv4'):
        errors.append(f'--model metadrop perturbs the blocks of conv4 / maml_conv4; '
                      f'--backbone {cfg.backbone} has no such blocks')
    if cfg.outer_loss != 'mean' and cfg.model not in ('maml', 'fomaml', 'metasgd', 'metadrop'):
        errors.append(f'--outer_loss {cfg.outer_loss} scales the query loss of the MAML family '
                      f'(maml, fomaml, metasgd, metadrop), not --model {cfg.model}\'s')
    if cfg.backbone.startswith(('resnet', 'wide_resnet')) and cfg.n_channel is not None:
        errors.append(f'--n_channel does not apply to --backbone {cfg.backbone} (its widths '
                      'are fixed; wide_resnet* are the wide ones)')
    for n in NON_NEGATIVE_FLOATS:
        value = getattr(cfg, n)
        if not 0 <= value < math.inf:
            errors.append(f'--{n} must be >= 0 and finite, got {value}')
    if not 0 < cfg.bn_momentum <= 1:
        errors.append(f'--bn_momentum must be in (0, 1], got {cfg.bn_momentum}')
    if not 0 < cfg.lr_decay < math.inf:
        errors.append(f'--lr_decay must be positive, got {cfg.lr_decay}')
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
    if cfg.efficient and cfg.model == 'metadrop' and not cfg.maml:
        errors.append('--efficient recomputes each inner step in the backward pass, which '
                      "would redraw Meta-Dropout's noise; use it with the deterministic "
                      'models (maml, fomaml, metasgd, or metadrop --maml)')
    if not cfg.skip_nonfinite_steps and cfg.model in ('leo', 'mtl'):
        errors.append(f'--noskip_nonfinite_steps is for the MAML family and TAML; --model '
                      f'{cfg.model} has its own guard'
                      + (" (the original's, --original_nan_guard)" if cfg.model == 'leo'
                         else ''))
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
    return errors


def validate_taml(cfg):
    """Messages for bad --model taml flag combinations."""
    errors = []
    taml_only = [f'--{n}' for n in ('alpha_on', 'omega_on', 'gamma_on', 'z_on', 'l2b_padding')
                 if getattr(cfg, n)] + [f'--{n}' for n in ('id_dataset', 'ood_dataset')
                                        if getattr(cfg, n)]
    if cfg.n_mc_samples:
        taml_only.append('--n_mc_samples')
    if cfg.model != 'taml':
        if taml_only:
            errors.append(f'{", ".join(taml_only)} only apply to --model taml')
        return errors
    if cfg.n_mc_samples < 0:
        errors.append(f'--n_mc_samples must be >= 0, got {cfg.n_mc_samples}')
    if cfg.mode not in ('meta_train', 'meta_test'):
        errors.append(f'--model taml runs --mode meta_train and meta_test; --mode {cfg.mode} '
                      'is for the MAML-family models')
    if cfg.dataset in OOD_ONLY_DATASETS:
        errors.append(f'{cfg.dataset} is an out-of-distribution dataset with no training '
                      f'split: use it as --ood_dataset (e.g. --id_dataset '
                      f'{"cifar" if cfg.dataset == "svhn" else "mimgnet"} --ood_dataset '
                      f'{cfg.dataset})')
    if cfg.ood_dataset and cfg.ood_dataset not in DATASETS:
        errors.append(f'--ood_dataset {cfg.ood_dataset!r} is not one of {", ".join(DATASETS)}')
    if cfg.backbone != 'conv4':
        errors.append(f'--model taml uses l2b\'s Conv4 (--backbone conv4), not {cfg.backbone}')
    changed = [f'--{n}' for n, default in (('bn_mode', 'transductive'), ('efficient', False),
                                            ('frozen', ''), ('inner_momentum', 0.),
                                            ('inner_weight_decay', 0.), ('zero_head', False),
                                            ('maml', False))
               if getattr(cfg, n) != default]
    if changed:
        errors.append(f'{", ".join(changed)} are PyTorch-MAML / metadrop options that '
                      '--model taml does not take (its head is always a constant zero)')
    return errors


def validate_leo(cfg):
    """Messages for bad --model leo flag combinations (the ranges in every mode: a typo fails
    early whatever the method)."""
    errors = []
    for n in ('num_latents', 'metavalid_batch_size', 'metatest_batch_size',
              'total_examples_per_class', 'eval_chunk'):
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
    if cfg.model != 'leo':
        if cfg.dataset in LEO_DATASETS:
            errors.append(f'--dataset {cfg.dataset} holds embedding vectors for --model leo, '
                          f'not images for --model {cfg.model}')
        return errors
    if cfg.dataset not in LEO_DATASETS:
        errors.append(f'--model leo works on embeddings: --dataset leo_mini, leo_tiered or '
                      f'leo_custom, not {cfg.dataset}')
    if cfg.dataset == 'leo_tiered' and cfg.embedding_crop == 'multiview':
        errors.append('--embedding_crop multiview exists for miniImageNet only (leo_mini); '
                      'tieredImageNet has center crops')
    if cfg.mode not in ('meta_train', 'meta_test'):
        errors.append(f'--model leo runs --mode meta_train and meta_test, not {cfg.mode}')
    if cfg.total_examples_per_class <= cfg.shot:
        errors.append(f'--total_examples_per_class {cfg.total_examples_per_class} must be '
                      f'larger than --shot {cfg.shot}: evaluation tasks take the other '
                      'images of each class as queries')
    changed = [f'--{n}' for n, default in (('backbone', 'conv4'), ('bn_mode', 'transductive'),
                                            ('efficient', False), ('frozen', ''),
                                            ('inner_momentum', 0.), ('zero_head', False),
                                            ('optimizer', 'adam'), ('lr_schedule', 'constant'),
                                            ('augment', ''), ('n_test_steps', None))
               if getattr(cfg, n) != default]
    if changed:
        errors.append(f'{", ".join(changed)} do not apply to --model leo (its networks, '
                      'inner loops and Adam are fixed by the original)')
    return errors


MTL_ONLY = dict(hard_task=False, pretrain_class_num=None, test_iter=None, pretrain_dir='',
                backbone_arch='resnet12', img_size=84, activation='leaky_relu',
                norm='batch_norm')


def validate_mtl(cfg):
    """Messages for bad --model mtl flag combinations (the ranges in every mode)."""
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
    if cfg.model != 'mtl':
        changed = [f'--{n}' for n, default in MTL_ONLY.items() if getattr(cfg, n) != default]
        if changed:
            errors.append(f'{", ".join(changed)} only apply to --model mtl')
        if cfg.mode == 'pretrain':
            errors.append(f'--mode pretrain is MTL\'s pre-training phase (--model mtl), not '
                          f'--model {cfg.model}\'s')
        return errors
    if cfg.mode not in ('pretrain', 'meta_train', 'meta_test'):
        errors.append(f'--model mtl runs --mode pretrain, meta_train and meta_test, not '
                      f'{cfg.mode}')
    if cfg.dataset in LEO_DATASETS:
        errors.append(f'--model mtl works on images; --dataset {cfg.dataset} holds LEO\'s '
                      'embedding vectors')
    if cfg.backbone_arch == 'resnet12' and 1 <= cfg.img_size < 16:
        errors.append(f'--img_size {cfg.img_size} is too small for ResNet-12\'s four 2x2 '
                      'VALID max-pools: use at least 16 (the original: 84)')
    if cfg.n_test_steps is not None and cfg.n_test_steps < 1:
        errors.append(f'--n_test_steps must be >= 1 for --model mtl (the accuracy is read '
                      f'after each inner step), got {cfg.n_test_steps}')
    if cfg.distribute != 'none':
        errors.append('--distribute is not supported with --model mtl yet (its step runs on '
                      'one device, a GPU when present)')
    changed = [f'--{n}' for n, default in (('backbone', 'conv4'), ('bn_mode', 'transductive'),
                                            ('efficient', False), ('frozen', ''),
                                            ('inner_momentum', 0.), ('zero_head', False),
                                            ('optimizer', 'adam'), ('lr_schedule', 'constant'),
                                            ('augment', ''), ('normalization', 'none'))
               if getattr(cfg, n) != default]
    if changed:
        errors.append(f'{", ".join(changed)} do not apply to --model mtl (its backbone is '
                      '--backbone_arch; its inner loop, Adam and schedule are the '
                      "original's)")
    if cfg.clip_value:
        errors.append('--model mtl does not clip its meta-gradient (the original); leave '
                      '--clip_value out')
    return errors


def validate_adversarial(cfg):
    """Messages for bad --mode adv_test flags (checked in every mode: typos fail early)."""
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
    for n in ('pgd_steps', 'n_adv_episodes', 'embed_batch_size'):
        if getattr(cfg, n) < 1:
            errors.append(f'--{n} must be a positive integer, got {getattr(cfg, n)}')
    if not 0 < cfg.pgd_step_scale < math.inf:
        errors.append(f'--pgd_step_scale must be positive and finite, got {cfg.pgd_step_scale}')
    if not 0 < cfg.pgd_l1_frac <= 1:
        errors.append(f'--pgd_l1_frac must be in (0, 1], got {cfg.pgd_l1_frac}')
    return errors


def run_mode(cfg):
    """Runs one mode; user-facing problems are raised as DatasetError, EpisodeSizeError,
    RunError or Interrupted, which main() turns into one message and an exit code."""
    if cfg.model == 'taml':
        from model.taml_runner import TamlRunner as Runner
    elif cfg.model == 'leo':
        from model.leo_runner import LeoRunner as Runner
    elif cfg.model == 'mtl':
        from model.mtl_runner import MtlPretrainRunner, MtlRunner
        Runner = MtlPretrainRunner if cfg.mode == 'pretrain' else MtlRunner
    else:
        from model.runner import Runner
    runner = Runner(cfg)
    if cfg.mode in ('meta_train', 'pretrain'):
        return runner.meta_train()
    if cfg.mode == 'meta_test':
        return runner.meta_test()
    if cfg.mode == 'adv_test':
        from model.adversarial import adversarial_test
        return adversarial_test(runner)
    if cfg.mode == 'embed':
        from model.embed import embed
        return embed(runner)
    from model.export import export
    return export(runner)


def written_folder(cfg):
    """The folder a mode writes when it is not --savedir (MTL's pre-training writes
    --pretrain_dir), for the one-run-per-folder lock; None for the savedir."""
    if cfg.model == 'mtl' and cfg.mode == 'pretrain':
        from model.mtl_runner import pretrain_dir_of
        return pretrain_dir_of(cfg)
    return None


def usage_error(message):
    """Exits with one `error:` line (not absl's page of flag help)."""
    message = ' '.join(str(message).split())   # one line, whatever the message held
    sys.stderr.write(f'error: {message}. `python main.py --helpfull` lists every flag.\n')
    sys.exit(1)


def parse_flags(argv):
    """app.run's flags parser: an unknown flag, a value of the wrong type or a missing value
    is one `error:` line (absl's own parser prints a FATAL line and a hint). Parses afresh,
    so in-process callers (tests) may call it again."""
    FLAGS.unparse_flags()
    try:
        return FLAGS(list(argv))
    except flags.UnrecognizedFlagError as e:
        hint = str(e).partition('Did you mean:')[2].strip(' ?')
        usage_error(f'unknown flag --{e.flagname}' + (f' (did you mean --{hint}?)' if hint
                                                      else ''))
    except flags.Error as e:
        usage_error(e)


def replica_count(cfg):
    """How many replicas --distribute splits the metabatch over, without creating the
    strategy (TensorFlow's devices stay unconfigured): mirrored takes every GPU, else the
    --n_cpu_devices logical CPUs; multi_worker one replica per device of every worker in
    TF_CONFIG."""
    if cfg.distribute == 'none':
        return 1
    import tensorflow as tf
    gpus = len(tf.config.list_physical_devices('GPU'))
    if cfg.distribute == 'mirrored':
        return gpus or max(1, cfg.n_cpu_devices)
    try:
        cluster = json.loads(os.environ.get('TF_CONFIG') or '{}').get('cluster', {})
        workers = len(cluster.get('chief', [])) + len(cluster.get('worker', []))
    except (ValueError, AttributeError, TypeError):
        raise app.UsageError('--distribute multi_worker reads the cluster from the environment '
                             'variable TF_CONFIG, which is not valid JSON of the form '
                             '{"cluster": {"worker": [...]}, "task": {...}}') from None
    return max(1, workers) * max(1, gpus)


def frozen_parameter_names(cfg):
    """The parameter names --frozen selects from: the backbone's, which do not depend on
    the image size, so a small stand-in input decides without loading the dataset."""
    from model import backbones
    shape = (28, 28, 1) if cfg.backbone in ('conv4', 'maml_conv4') else (32, 32, 3)
    return list(backbones.build_backbone(cfg.backbone, cfg.way, shape, cfg.n_channel,
                                         zero_head=cfg.zero_head).param_shapes())


def preflight(cfg):
    """The checks that need TensorFlow (the model's parameter names, the device count), run
    after validate() and before anything is loaded, trained or written."""
    errors = []
    if cfg.frozen and cfg.model in ('maml', 'fomaml', 'metasgd', 'metadrop'):
        from model import resolve_frozen
        try:
            resolve_frozen([p.strip() for p in cfg.frozen.split(',') if p.strip()],
                           frozen_parameter_names(cfg))
        except ValueError as e:
            errors.append(str(e))
    if cfg.mode == 'meta_train':   # only the meta-train step splits the metabatch
        replicas = replica_count(cfg)
        if cfg.metabatch % replicas:
            errors.append(f'--metabatch {cfg.metabatch} cannot be split evenly across the '
                          f'{replicas} replicas of --distribute {cfg.distribute}; use a '
                          f'multiple of {replicas}')
    if errors:
        raise app.UsageError('; '.join(errors))


def checked_config(argv):
    """The validated configuration of the parsed flags, or app.UsageError: every check that
    does not need the data, before anything is written."""
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])} (every setting is '
                             'a --flag)')
    cfg = config_from_flags()
    validate(cfg)
    # --distribute uses every visible GPU unless --gpu_id is given explicitly.
    pin_gpu = cfg.distribute == 'none' or FLAGS['gpu_id'].present
    if pin_gpu and cfg.gpu_id is not None and 'CUDA_VISIBLE_DEVICES' not in os.environ:
        os.environ['CUDA_VISIBLE_DEVICES'] = '' if cfg.gpu_id < 0 else str(cfg.gpu_id)
    preflight(cfg)
    return cfg


def main(argv):
    try:
        cfg = checked_config(argv)
    except app.UsageError as e:
        usage_error(e)
    from data.datasets import DatasetError
    from data.episodes import EpisodeSizeError
    from model.runner import Interrupted, RunError, lock_savedir
    try:
        with lock_savedir(cfg, written_folder(cfg)):
            run_mode(cfg)
    except KeyboardInterrupt:  # before the training loop, which handles SIGINT itself
        sys.stderr.write('error: interrupted (SIGINT) before training started; nothing was '
                         'saved\n')
        sys.exit(130)
    except Interrupted as e:
        sys.stderr.write(f'{e}\n')
        sys.exit(e.exit_code)
    except (DatasetError, EpisodeSizeError, RunError) as e:
        sys.stderr.write(f'error: {e}\n')
        sys.exit(1)
    except OSError as e:  # a file the run had to read or write; the message names it
        sys.stderr.write(f'error: {e.filename or "a file"}: {e.strerror or e}. Check that the '
                         'path exists, is readable and writable, and that the disk is not '
                         'full.\n')
        sys.exit(1)


def cli(argv):
    """main.py's command line in-process: parses `argv` (program name first) and runs it;
    exits through SystemExit as the command would (tests)."""
    return main(parse_flags(argv))


def run():
    app.run(main, flags_parser=parse_flags)


if __name__ == '__main__':
    run()
