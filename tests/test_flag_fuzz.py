"""Every bad flag value is one `error:` line, for every method and mode (issue 22).

The probes are generated from main.py's absl flag definitions: each flag of each type gets
values of the wrong type, empty, huge (beyond TensorFlow's 32-bit counts and shapes),
NaN/inf, negative and zero where the flag's range excludes them, unknown enum values and
flag-specific bad strings; plus conflicting combinations (--distribute with each metabatch
parity, --frozen naming no parameter, flags of another method). Each runs through main.py's
command line in-process (main.cli) on a valid base command of every (method, mode) pair,
with the run itself replaced by a sentinel: every check must fire before the run starts,
i.e. before any data is loaded, any step is traced and anything is written in the savedir.
A handful of real subprocesses then show the same promise end to end.

A new flag needs no change here unless its range differs from the defaults assumed below
(negative values are errors, zero is an error unless listed in ZERO_OK, a free-form string
flag needs its bad values in STRING_PROBES or a reason in NOT_PROBED)."""
import contextlib
import io
import os
import shutil
import subprocess
import sys

import pytest
from absl import flags

import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS

SMALL = ['--dataset', 'synthetic', '--way', '5', '--shot', '1', '--query', '5',
         '--metabatch', '2', '--n_steps', '1', '--noprogress']
MAML_FAMILY = ('maml', 'fomaml', 'metasgd', 'metadrop', 'anil')
MODES_OF = {**{m: ('meta_train', 'meta_test', 'export', 'adv_test', 'embed')
               for m in MAML_FAMILY},
            'taml': ('meta_train', 'meta_test', 'embed'), 'leo': ('meta_train', 'meta_test'),
            'mtl': ('pretrain', 'meta_train', 'meta_test', 'embed')}
BASES = [(method, mode) for method, modes in MODES_OF.items() for mode in modes]


def base_argv(method, mode):
    extra = {'leo': ['--dataset', 'leo_custom'], 'mtl': ['--img_size', '16']}.get(
        method, ['--n_channel', '8'])
    return ['--model', method, '--mode', mode, *SMALL, *extra]


# Integer flags for which 0 is valid (every other integer flag must be >= 1).
ZERO_OK = {'gpu_id', 'n_train_iters', 'n_test_steps', 'seed', 'data_seed', 'n_cpu_devices',
           'n_mc_samples', 'finetuning_unroll_length', 'pre_iter', 'metatest_epite_sample_num',
           'test_iter', 'augment_pad', 'embed_stats_images'}
# Number flags whose negative values are valid.
NEGATIVE_OK = {'gpu_id',                          # < 0: CPU only
               'inner_lr_init', 'finetuning_lr_init',   # LEO's learned step sizes, any sign
               'gradient_threshold', 'gradient_norm_threshold'}   # <= 0 disables
# Float flags for which 0 is not valid (every other float flag may be 0).
FLOAT_ZERO_BAD = {'meta_lr', 'inner_lr', 'alpha_init', 'lr_decay', 'bn_momentum', 'pre_lr',
                  'min_pre_lr', 'min_meta_lr', 'lr_drop_rate', 'pretrain_dropout_keep',
                  'pgd_step_scale', 'pgd_l1_frac'}
ABOVE_RANGE = {'channels': ['2', '4'], 'bn_momentum': ['1.5'], 'dropout_rate': ['1'],
               'pretrain_dropout_keep': ['1.5'], 'pgd_l1_frac': ['1.5'],
               'n_cpu_devices': ['100000'], 'pre_iter': ['-2']}
STRING_PROBES = {
    'mode': ['', 'nosuch', 'train'], 'model': ['', 'reptile'], 'dataset': ['', 'cifar10'],
    'backbone': ['', 'resnet50'], 'savedir': [''],
    'embed_crops': ['', 'nosuch', 'center,center', 'center:0', 'center:abc'],
    'frozen': ['nosuchlayer', 'conv1,nosuchlayer', ','],
    'lr_milestones': ['x', '5,3', '0', '1.5'],
    'normalization': ['nosuch', '0.5/0', '1,2/1', '0.5/-1', 'nan/1'],
    'augment': ['nosuch', 'crop,spin'],
    'attacks': ['', 'l3', 'l1,l1', ','],
    'id_dataset': ['nosuch'], 'ood_dataset': ['nosuch'],
}
NOT_PROBED = {   # free-form strings whose bad values only the data can reveal
    'checkpoints': 'checkpoint paths, read and checked by meta_test before it scores '
                   '(test_paired_eval)',
    'embed_dir': 'a folder embed writes (test_embed)',
    'data_root': 'read by the dataset readers: a missing folder is their error (test_cli)',
    'folder_dir': 'read by the folder reader (test_data_folder)',
    'data_path': "read by LEO's reader (test_data_leo)",
    'pretrain_dir': "read or written by MTL's runner (test_mtl_runner)",
    'test_alphabets': 'alphabet names are checked against the Omniglot files (test_data_omniglot)',
    'val_alphabets': 'alphabet names are checked against the Omniglot files (test_data_omniglot)',
}


def probes(name):
    """The bad values of flag `name`, from its type and default."""
    flag = FLAGS[name]
    kind = flag.flag_type()
    if kind == 'int':
        values = ['abc', '', '1.5', 'nan', str(main.INT32_MAX + 1), str(-main.INT32_MAX - 2),
                  str(10 ** 30)]
        if name not in NEGATIVE_OK:
            values.append('-2')
        if name not in ZERO_OK:
            values.append('0')
    elif kind == 'float':
        values = ['abc', '', 'nan', 'inf', '-inf', '1e400']
        if name not in NEGATIVE_OK:
            values.append('-1')
        if name in FLOAT_ZERO_BAD:
            values.append('0')
    elif kind == 'bool':
        values = ['maybe', '2']
    elif kind == 'string enum':
        values = ['nosuch'] + ([] if '' in flag.parser.enum_values else [''])
    else:
        assert name in STRING_PROBES or name in NOT_PROBED, (
            f'--{name}: a string flag needs its bad values in STRING_PROBES or a reason in '
            'NOT_PROBED')
        values = STRING_PROBES.get(name, [])
    return values + ABOVE_RANGE.get(name, [])


def flag_names():
    """Every flag of the project: the shared ones and each method's (model/methods/)."""
    return [name for name in main.project_flags() if name not in main.ALIASES]


class Reached(Exception):
    """The run was about to start: every check passed."""


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Runs main.py's command line in-process; returns (exit code, stderr, reached the run,
    savedir touched)."""
    def not_run(cfg):
        raise Reached()

    monkeypatch.setattr(main, 'run_mode', not_run)
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')   # main pins it otherwise
    monkeypatch.delenv('TF_CONFIG', raising=False)
    savedir = tmp_path / 'run'

    def run(argv):
        shutil.rmtree(savedir, ignore_errors=True)
        err = io.StringIO()
        code, reached = 0, False
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                main.cli(['main.py', '--savedir', str(savedir), *argv])
            except SystemExit as e:
                code = e.code
            except Reached:
                reached = True
            except Exception as e:   # a traceback on the command line
                code = f'raised {type(e).__name__}: {e}'
        return code, err.getvalue(), reached, savedir.exists()

    return run


def problem(result, name):
    """What is wrong with how a bad value of --name was refused (None: nothing)."""
    code, err, reached, touched = result
    if reached:
        return 'accepted (the run would have started)'
    lines = err.splitlines()
    if code not in (1, 2):
        return f'exit code {code!r}'
    if 'Traceback' in err:
        return 'traceback'
    if len(lines) != 1 or not lines[0].startswith('error: '):
        return f'not one error line: {err!r}'
    if f'--{name}' not in lines[0] and f'--no{name}' not in lines[0]:
        return f'the message does not name --{name}: {lines[0]!r}'
    if touched:
        return 'the savedir was created'
    return None


@pytest.mark.parametrize('method,mode', BASES)
def test_every_bad_flag_value_is_one_error_line(cli, method, mode):
    base = base_argv(method, mode)
    assert cli(base)[2], f'the base command {base} must pass every check'
    failures, n = [], 0
    for name in flag_names():
        for value in probes(name):
            n += 1
            why = problem(cli([*base, f'--{name}={value}']), name)
            if why:
                failures.append(f'--{name}={value!r}: {why}')
    assert n > 700
    assert not failures, f'{len(failures)} of {n} probes:\n' + '\n'.join(failures)


# (extra flags, base method, mode, flag the message must name); None: a valid combination.
CONFLICTS = [
    (['--distribute', 'mirrored', '--n_cpu_devices', '2', '--metabatch', '3'], 'metabatch'),
    (['--distribute', 'mirrored', '--n_cpu_devices', '2', '--metabatch', '2'], None),
    (['--distribute', 'mirrored', '--n_cpu_devices', '2', '--metabatch', '2', '--frozen',
      'nosuchlayer'], 'frozen'),
    (['--distribute', 'mirrored', '--n_cpu_devices', '4', '--metabatch', '6'], 'metabatch'),
    (['--distribute', 'mirrored', '--n_cpu_devices', '4', '--metabatch', '8'], None),
    (['--distribute', 'mirrored', '--metabatch', '3'], None),   # one device: any metabatch
    (['--frozen', 'encoder'], None),
    (['--maml', '--model', 'fomaml'], 'maml'),
    (['--alpha_on'], 'alpha_on'),
    (['--dataset', 'leo_custom'], 'dataset'),
    (['--efficient', '--model', 'metadrop'], 'efficient'),
    (['--lr_schedule', 'step'], 'lr_schedule'),
    (['--backbone', 'resnet12'], 'n_channel'),
    (['--model', 'metadrop', '--backbone', 'convnet4'], 'backbone'),
    (['--hard_task'], 'hard_task'),
    (['--mode', 'pretrain'], 'mode'),
    (['--img_size', '32'], 'img_size'),
]
MTL_CONFLICTS = [(['--distribute', 'mirrored'], 'distribute'),
                 (['--clip_value', '3'], 'clip_value'),
                 (['--mode', 'export'], 'mode'),
                 (['--noskip_nonfinite_steps'], 'skip_nonfinite_steps'),
                 (['--dataset', 'leo_custom'], 'dataset')]
LEO_CONFLICTS = [(['--noskip_nonfinite_steps'], 'skip_nonfinite_steps'),
                 (['--mode', 'adv_test'], 'mode'),
                 (['--backbone', 'resnet12'], 'backbone'),
                 (['--dataset', 'synthetic'], 'dataset'),
                 (['--total_examples_per_class', '1'], 'total_examples_per_class'),
                 (['--dataset_name', 'tieredImageNet', '--embedding_crop', 'multiview'],
                  'embedding_crop')]
TAML_CONFLICTS = [(['--mode', 'export'], 'mode'), (['--backbone', 'convnet4'], 'backbone'),
                  (['--frozen', 'conv1'], 'frozen'), (['--dataset', 'svhn'], 'ood_dataset')]
GENERAL = [(['extra_argument'], 'helpfull'), (['--nosuchflag=1'], 'nosuchflag'),
           (['--wya=3'], 'wya'), (['--num_classes=abc'], 'way'),   # an alias: absl names its target
           (['--way'], 'way')]


def conflict_cases():
    for method in ('maml', 'metadrop', 'taml', 'leo', 'mtl'):
        table = {'mtl': MTL_CONFLICTS, 'leo': LEO_CONFLICTS, 'taml': TAML_CONFLICTS}.get(
            method, CONFLICTS)
        for extra, name in table + GENERAL:
            if method == 'metadrop' and extra[:2] == ['--backbone', 'resnet12']:
                continue   # refused for the backbone too; covered with maml
            yield method, extra, name


def test_conflicting_flags_are_one_error_line(cli, monkeypatch):
    failures, n = [], 0
    for method, extra, name in conflict_cases():
        for mode in MODES_OF[method][:2]:
            if '--distribute' in extra and mode != 'meta_train':
                continue   # only the meta-train step splits the metabatch
            n += 1
            result = cli([*base_argv(method, mode), *extra])
            if name is None:
                if not result[2]:
                    failures.append(f'{method} {mode} {extra}: refused: {result[1]!r}')
            elif (why := problem(result, name)):
                failures.append(f'{method} {mode} {extra}: {why}')
    # multi_worker: the replicas are the cluster's workers, read from TF_CONFIG.
    monkeypatch.setenv('TF_CONFIG', '{"cluster": {"worker": ["a:1", "b:2"]}, '
                                    '"task": {"type": "worker", "index": 0}}')
    for metabatch, name in (('3', 'metabatch'), ('4', None)):
        n += 1
        result = cli([*base_argv('maml', 'meta_train'), '--distribute', 'multi_worker',
                      '--metabatch', metabatch])
        refused = problem(result, name) if name else (None if result[2] else 'refused')
        if refused:
            failures.append(f'multi_worker metabatch {metabatch}: {refused}')
    monkeypatch.setenv('TF_CONFIG', '{not json')
    result = cli([*base_argv('maml', 'meta_train'), '--distribute', 'multi_worker'])
    if problem(result, 'distribute'):
        failures.append(f'bad TF_CONFIG: {result}')
    assert not failures, f'{len(failures)} of {n}:\n' + '\n'.join(failures)


@pytest.mark.parametrize('extra,name', [
    (['--distribute', 'mirrored', '--n_cpu_devices', '2', '--metabatch', '3'], 'metabatch'),
    (['--distribute', 'mirrored', '--n_cpu_devices', '2', '--metabatch', '2', '--frozen',
      'nosuchlayer'], 'frozen'),
    (['--way=abc'], 'way'),
    (['--meta_lr=nan'], 'meta_lr'),
])
def test_bad_flags_end_to_end(tmp_path, extra, name):
    """The issue's two reports and two parse errors, as real commands: one line, exit 1,
    nothing written."""
    savedir = tmp_path / 'run'
    out = subprocess.run([sys.executable, 'main.py', *base_argv('maml', 'meta_train'),
                          '--n_channel', '8', '--savedir', str(savedir), *extra], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr[-3000:]
    assert 'Traceback' not in out.stderr
    # TensorFlow's C++ start-up lines (absl logging before InitializeLog ignores
    # TF_CPP_MIN_LOG_LEVEL) may precede ours; ours is the one `error:` line.
    lines = [l for l in out.stderr.splitlines() if l.startswith('error')]
    assert len(lines) == 1 and lines[0].startswith('error: ') and f'--{name}' in lines[0], \
        out.stderr
    assert not savedir.exists()
