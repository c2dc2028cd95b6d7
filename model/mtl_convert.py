"""Converts the original MTL's released weights (one pickled dict of arrays per npy file, as
its trainers save them with np.save) into this project's checkpoints.

    # META_LOAD: meta-train from the released pre-trained backbone (weights.npy)
    python -m model.mtl_convert --npy_dir logs/download_weights --savedir OUT --pretrained_only
    python main.py --model mtl --mode meta_train --savedir OUT --pre_iter 10000 ...

    # TEST_LOAD: meta-test the released meta-trained model (weights, ss_weights, fc_weights)
    python -m model.mtl_convert --npy_dir logs/download_weights --savedir OUT \\
        --dataset mimgnet --shot 1
    python main.py --model mtl --mode meta_test --savedir OUT --dataset mimgnet --shot 1

The files (the original's names): weights.npy, the backbone dict (block1_conv1 [3,3,3,64],
block1_bias1 [64], ..., block4_conv_res [1,1,256,512], plus the unused dummy head w5/b5,
which is ignored); ss_weights.npy, the scales block<b>_conv<j> [1,1,Cin,Cout] and shifts
block<b>_bias<j> [Cout]; fc_weights.npy, w5 [512, way] and b5 [way]. Every name and shape is
checked against this project's model; anything missing, extra or of another shape is an error
that lists it. The pickles are read with a restricted unpickler (numpy arrays and plain data
only): a file that asks for anything else is refused, never executed.

Without --pretrained_only, the flags after the converter's own are main.py's (--dataset,
--shot, --way, --backbone_arch, --img_size, ...), as meta_test will be given them: the
checkpoint model-<test_iter> (default 0) is written in --savedir with those flags recorded.
The backbone is also written as <savedir>/pretrain/weights-<pre_iter> in both cases.
"""
import argparse
import os
import sys

import numpy as np

FILES = {'weights': 'weights.npy', 'ss': 'ss_weights.npy', 'fc': 'fc_weights.npy'}
UNUSED_BACKBONE_KEYS = ('w5', 'b5')   # the original's dummy head in the weights dict


class ConvertError(Exception):
    pass


def read_npy_dict(path):
    """The dict saved with np.save(path, dict), read without running any pickle code."""
    from data.datasets import DatasetError
    from data.perclass import load_object_npy
    if not os.path.exists(path):
        raise ConvertError(f'{path} does not exist')
    try:
        obj = load_object_npy(path)
    except DatasetError as e:
        raise ConvertError(str(e)) from None
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise ConvertError(f'{path} holds a {type(obj).__name__}, not the dict of arrays the '
                           'original saves')
    return {str(k): np.asarray(v) for k, v in obj.items()}


def mismatches(arrays, targets):
    """What keeps arrays (name -> array) from filling targets (name -> variable): missing,
    unexpected and misshapen names, as phrases (also model/maml_convert.py's)."""
    missing = sorted(set(targets) - set(arrays))
    extra = sorted(set(arrays) - set(targets))
    wrong = [f'{k}: {list(arrays[k].shape)} in the file, {targets[k].shape.as_list()} here'
             for k in targets if k in arrays and list(arrays[k].shape) != targets[k].shape.as_list()]
    problems = []
    if missing:
        problems.append(f'missing {", ".join(missing)}')
    if extra:
        problems.append(f'unexpected {", ".join(extra)}')
    if wrong:
        problems.append('shapes differ: ' + '; '.join(wrong))
    return problems


def assign_all(what, arrays, targets, ignore=()):
    """Assigns arrays[k] to targets[k] for every k, after checking names and shapes."""
    arrays = {k: v for k, v in arrays.items() if k not in ignore}
    problems = mismatches(arrays, targets)
    if problems:
        raise ConvertError(f'{what} does not fit this model ({"; ".join(problems)}). Check '
                           '--backbone_arch and --way (and that the file is the right one)')
    for k, var in targets.items():
        var.assign(arrays[k].astype(np.float32))


def write_pretrained(backbone_arrays, pretrain_dir, pre_iter, arch):
    from model import mtl, mtl_runner
    backbone = mtl.MtlBackbone(arch)
    assign_all('weights.npy', backbone_arrays, backbone.weights, UNUSED_BACKBONE_KEYS)
    os.makedirs(pretrain_dir, exist_ok=True)
    path = mtl_runner.weights_path(pretrain_dir, pre_iter)
    mtl_runner.backbone_checkpoint(backbone).write(path)
    return path


def write_meta_checkpoint(arrays, main_argv, test_iter):
    import main as entry
    from model.mtl_runner import MtlRunner
    cfg = entry.parse_config([*main_argv, '--model', 'mtl', '--mode', 'meta_train'])
    runner = MtlRunner(cfg)
    model = runner.model
    assign_all('weights.npy', arrays['weights'], model.backbone.weights, UNUSED_BACKBONE_KEYS)
    assign_all('ss_weights.npy', arrays['ss'], model.ss)
    assign_all('fc_weights.npy', arrays['fc'], model.fc)
    os.makedirs(cfg.savedir, exist_ok=True)
    runner.write_config()
    return runner.save(runner.manager(), test_iter), cfg


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--npy_dir', required=True, help='the folder of the released npy files')
    p.add_argument('--savedir', required=True, help="this project's --savedir")
    p.add_argument('--pretrained_only', action='store_true',
                   help='convert weights.npy only (META_LOAD)')
    p.add_argument('--pre_iter', type=int, default=10000,
                   help='the snapshot number to write (meta_train --pre_iter; default 10000)')
    p.add_argument('--test_iter', type=int, default=0,
                   help='the checkpoint number to write (meta_test --test_iter; default 0)')
    p.add_argument('--backbone_arch', default='resnet12', choices=['resnet12', 'resnet18'])
    args, rest = p.parse_known_args(argv)
    try:
        arrays = {'weights': read_npy_dict(os.path.join(args.npy_dir, FILES['weights']))}
        path = write_pretrained(arrays['weights'], os.path.join(args.savedir, 'pretrain'),
                                args.pre_iter, args.backbone_arch)
        print(f'wrote the pre-trained backbone {path}')
        if not args.pretrained_only:
            for k in ('ss', 'fc'):
                arrays[k] = read_npy_dict(os.path.join(args.npy_dir, FILES[k]))
            path, _ = write_meta_checkpoint(arrays, [*rest, '--savedir', args.savedir,
                                                    '--backbone_arch', args.backbone_arch],
                                            args.test_iter)
            print(f'wrote the meta-trained model {path}; meta-test it with the same flags and '
                  f'--mode meta_test --savedir {args.savedir}')
    except ConvertError as e:
        sys.stderr.write(f'error: {e}\n')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
