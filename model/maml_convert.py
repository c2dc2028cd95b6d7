"""Converts a cbfinn/maml TF1 checkpoint (its released miniImageNet 5-way 1-shot model, or one
of its runs' model<i> files) into this project's checkpoint of --model maml --backbone
maml_conv4, which `main.py --mode meta_test` then tests.

    python -m model.maml_convert \\
        --checkpoint maml/logs/miniimagenet1shot/cls_5.mbs_4.ubs_1.numstep5.updatelr0.01hidden32maxpoolbatchnorm/model59000 \\
        --savedir results/cbfinn_mimg_1shot --dataset mimgnet
    python main.py --mode meta_test --savedir results/cbfinn_mimg_1shot --dataset mimgnet \\
        --model maml --backbone maml_conv4 --way 5 --shot 1 --query 1 --metabatch 1 \\
        --inner_lr 0.01 --n_test_steps 10 --inner_loss maml_sum --outer_loss maml_sum \\
        --n_test_iters 600

(the second command is cbfinn's test: 10 steps at its update_lr, 600 episodes of one query
per class, its CE / K losses). --checkpoint is the checkpoint's prefix (model59000, without
.index) or its folder. The original's Saver keeps the trainable variables of its weights dict
and batch norm: model/conv1..conv4 [3,3,in,C] and their biases model/Variable,
model/Variable_1.._3 [C] (unnamed tf.Variables, numbered in creation order), model/w5 [F, way]
and model/b5 [way], model/0..3/beta [C]; optimiser slots and batch-norm moving averages, which
its tests never use, are skipped if a checkpoint has them. Every name, shape and dtype is
checked against the model the flags build: anything missing, extra or different is an error
that lists it. --way defaults to the checkpoint's; the flags after the
converter's own are main.py's (--dataset, ...), as meta_test will be given them, and the
checkpoint is written as model-<i>, i the original's iteration (59000), with them recorded.
"""
import argparse
import os
import re
import sys

from model.mtl_convert import mismatches

CHECKPOINT_NAMES = {}   # our parameter name -> the original's variable name
WEIGHT_KEYS = {}        # our parameter name -> the original's weights-dict key
for _l in range(1, 5):
    CHECKPOINT_NAMES[f'conv{_l}_w'] = f'model/conv{_l}'
    CHECKPOINT_NAMES[f'conv{_l}_b'] = 'model/Variable' + ('' if _l == 1 else f'_{_l - 1}')
    WEIGHT_KEYS[f'conv{_l}_w'], WEIGHT_KEYS[f'conv{_l}_b'] = f'conv{_l}', f'b{_l}'
CHECKPOINT_NAMES.update({'dense_w': 'model/w5', 'dense_b': 'model/b5'})
WEIGHT_KEYS.update({'dense_w': 'w5', 'dense_b': 'b5'})
for _l in range(1, 5):   # contrib batch_norm's shift, scope str(block index) in utils.conv_block
    CHECKPOINT_NAMES[f'bn_beta/conv{_l}'] = f'model/{_l - 1}/beta'
SKIPPED = re.compile(r'/Adam(_\d+)?$|moving_mean$|moving_variance$|^beta[12]_power$|'
                     r'^global_step$')
MODELS = ('maml', 'fomaml')


class ConvertError(Exception):
    pass


def variable_names(model):
    """Our MAML model's variables (by reference) -> the original's variable names."""
    named = dict(model.net.theta)
    named.update({f'bn_beta/{k}': v for k, v in model.net.bn_beta.items()})
    unknown = sorted(set(named) - set(CHECKPOINT_NAMES))
    if unknown:
        raise ConvertError(f'the model has parameters cbfinn/maml does not ({", ".join(unknown)})'
                           ': convert into --backbone maml_conv4 without --zero_head')
    return {v.ref(): CHECKPOINT_NAMES[k] for k, v in named.items()}


def checkpoint_prefix(path):
    """The checkpoint prefix of `path` (a prefix, or a folder holding model<i> files)."""
    import tensorflow as tf
    if os.path.isdir(path):
        listed = tf.train.latest_checkpoint(path)
        if listed:
            return listed
        found = sorted((int(m.group(1)), m.group(0)[:-len('.index')]) for m in
                       (re.fullmatch(r'model(\d+)\.index', n) for n in os.listdir(path)) if m)
        if not found:
            raise ConvertError(f'{path} holds no checkpoint (no model<i>.index file)')
        return os.path.join(path, found[-1][1])
    if path.endswith('.index'):
        path = path[:-len('.index')]
    if not os.path.exists(path + '.index'):
        raise ConvertError(f'{path}.index does not exist: give the checkpoint prefix '
                           '(.../model59000) or its folder')
    return path


def read_checkpoint(prefix):
    """name -> array of every variable in a TF1 checkpoint, but the skipped ones."""
    import tensorflow as tf
    try:
        reader = tf.train.load_checkpoint(prefix)
        names = reader.get_variable_to_shape_map()
        return {n: reader.get_tensor(n) for n in names if not SKIPPED.search(n)}
    except (tf.errors.OpError, ValueError) as e:
        message = getattr(e, 'message', None) or str(e)
        raise ConvertError(f'cannot read the checkpoint {prefix}: '
                           f'{message.strip().splitlines()[0]}') from None


def assign_all(arrays, model, prefix):
    """Assigns the original's arrays to our variables after checking names, shapes, dtypes."""
    names = variable_names(model)
    targets = {names[v.ref()]: v for v in model.outer_variables if v.ref() in names}
    problems = mismatches(arrays, targets)
    dtypes = [f'{k}: {arrays[k].dtype}' for k in sorted(targets)
              if k in arrays and arrays[k].dtype.name != targets[k].dtype.name]
    if dtypes:
        problems.append('not float32: ' + '; '.join(dtypes))
    if problems:
        raise ConvertError(f'{prefix} is not a cbfinn/maml Conv4 checkpoint that fits this '
                           f'model ({"; ".join(problems)}). Check --way, --n_channel and the '
                           'image size of --dataset (miniImageNet: 84x84x3 with max-pool; '
                           'Omniglot: 28x28 grey, strided)')
    for k, var in targets.items():
        var.assign(arrays[k])


def defaults_from(arrays):
    """--way as the checkpoint has it (the user's flag overrides). --n_channel keeps its
    default, the original's widths (64 on Omniglot, 32 otherwise), so that meta_test needs no
    flag the original's run did not."""
    if 'model/b5' in arrays and arrays['model/b5'].ndim == 1:
        return ['--way', str(arrays['model/b5'].shape[0])]
    return []


def convert(prefix, savedir, main_argv, iteration=None):
    """Writes model-<iteration> in savedir; returns its path."""
    from absl import app

    import main as entry
    from model.runner import Runner, RunError
    import tensorflow as tf
    arrays = read_checkpoint(prefix)
    if iteration is None:
        number = re.search(r'model(\d+)$', prefix)
        iteration = int(number.group(1)) if number else 0
    if os.path.isdir(savedir) and tf.train.latest_checkpoint(savedir):
        raise ConvertError(f'--savedir {savedir} already holds a checkpoint; choose an empty '
                           'folder')
    try:
        cfg = entry.parse_config(['--model', 'maml', '--backbone', 'maml_conv4',
                                  *defaults_from(arrays), *main_argv, '--savedir', savedir,
                                  '--mode', 'meta_train'])
    except app.UsageError as e:
        raise ConvertError(str(e)) from None
    if cfg.model not in MODELS or cfg.backbone != 'maml_conv4':
        raise ConvertError(f'cbfinn/maml checkpoints hold --model maml (or fomaml) with '
                           f'--backbone maml_conv4, not --model {cfg.model} --backbone '
                           f'{cfg.backbone}')
    if cfg.zero_head:
        raise ConvertError('cbfinn/maml meta-learns its head: convert without --zero_head')
    from data.datasets import DatasetError
    from data.episodes import EpisodeSizeError
    try:
        runner = Runner(cfg)
        assign_all(arrays, runner.model, prefix)
        runner.write_config()
        return runner.save(runner.manager(), iteration)
    except (DatasetError, EpisodeSizeError, RunError) as e:
        raise ConvertError(str(e)) from None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--checkpoint', required=True,
                   help="the original's checkpoint prefix (.../model59000) or its folder")
    p.add_argument('--savedir', required=True, help="this project's --savedir (new)")
    p.add_argument('--iteration', type=int, default=None,
                   help="the checkpoint number to write (default: the original's, 59000)")
    args, rest = p.parse_known_args(argv)
    try:
        if args.iteration is not None and args.iteration < 0:
            raise ConvertError(f'--iteration must be >= 0, got {args.iteration}')
        prefix = checkpoint_prefix(args.checkpoint)
        path = convert(prefix, args.savedir, rest, args.iteration)
    except ConvertError as e:
        sys.stderr.write(f'error: {e}\n')
        return 1
    print(f'wrote {path}; meta-test it with the same flags and --mode meta_test --savedir '
          f'{args.savedir} --model maml --backbone maml_conv4 --way <way>; cbfinn tested '
          'with --inner_loss maml_sum --outer_loss maml_sum --inner_lr <its update_lr> '
          '--n_test_steps 10 --query <shot> --metabatch 1 --n_test_iters 600')
    return 0


if __name__ == '__main__':
    sys.exit(main())
