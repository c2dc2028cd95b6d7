"""Every main.py command of every runfile parses and validates with this project's flags, and
the Meta-Dropout runfiles carry the originals' values."""
import re
import shlex
from pathlib import Path

import pytest

import main

RUNFILES = sorted((Path(__file__).resolve().parents[1] / 'runfiles').glob('*.sh'))


def commands(path):
    text = path.read_text()
    # Expand the simple variables the runfiles use to their defaults.
    env = {m.group(1): m.group(2) for m in re.finditer(r'^(\w+)=\$\{\w+:-([^}]*)\}', text, re.M)}
    env.update({m.group(1): m.group(2).strip('"') for m in
                re.finditer(r'^(\w+)="([^"]*)"$', text, re.M)})
    out = []
    for line in text.splitlines():
        if line.startswith('python main.py'):
            for _ in range(3):
                line = re.sub(r'\$\{?(\w+)(?::-([^}]*))?\}?',
                              lambda m: env.get(m.group(1), m.group(2) or 'X'), line)
            out.append(shlex.split(line.replace('"X"', ''))[2:])
    return out


@pytest.mark.parametrize('path', [p for p in RUNFILES if p.name not in (
    'metadrop_omni_small.sh',)], ids=lambda p: p.name)
def test_runfile_commands_validate(path):
    cmds = commands(path)
    assert cmds, f'{path.name} runs no main.py command'
    for argv in cmds:
        argv = [a for a in argv if a != 'X']
        main.parse_config(argv)


def flags_of(name):
    cmds = commands(RUNFILES[0].parent / name)
    out = []
    for c in cmds:
        c = [x for x in c if x != 'X']
        d = {}
        for i, tok in enumerate(c):
            if tok.startswith('--'):
                nxt = c[i + 1] if i + 1 < len(c) else '--'
                d[tok] = True if nxt.startswith('--') else nxt
        out.append(d)
    return out


@pytest.mark.parametrize('name,train,test', [
    # The seed README is the specification for Meta-Dropout on Omniglot (metabatch 8 / 6,
    # 40000 iterations); the repository's later runfiles use 4 and 60000.
    ('metadrop_omni_1shot.sh', dict(metabatch='8', inner_lr='0.1', meta_lr='3e-4', shot='1',
                                    n_train_iters='40000'), dict(metabatch='1', n_test_mc_samp='30')),
    ('metadrop_omni_5shot.sh', dict(metabatch='6', inner_lr='0.4', meta_lr='1e-3', shot='5',
                                    n_train_iters='40000'), dict(metabatch='1', n_test_mc_samp='30')),
    ('metadrop_mimg_1shot.sh', dict(metabatch='4', inner_lr='0.01', meta_lr='1e-4', way='5',
                                    shot='1', n_train_iters='60000'),
     dict(metabatch='1', n_test_mc_samp='30')),
    ('metadrop_mimg_5shot.sh', dict(metabatch='4', inner_lr='0.01', meta_lr='1e-4', way='5',
                                    shot='5', n_train_iters='60000'),
     dict(metabatch='1', n_test_mc_samp='30')),
    ('maml_omni_1shot.sh', dict(metabatch='4', inner_lr='0.1', meta_lr='1e-3', shot='1',
                                n_train_iters='60000'), dict(metabatch='5', n_test_mc_samp='1')),
    ('maml_omni_5shot.sh', dict(metabatch='4', inner_lr='0.4', meta_lr='1e-3', shot='5',
                                n_train_iters='60000'), dict(metabatch='5', n_test_mc_samp='1')),
    ('maml_mimg_1shot.sh', dict(metabatch='4', inner_lr='0.01', meta_lr='1e-4', shot='1'),
     dict(metabatch='5', n_test_mc_samp='1')),
    ('maml_mimg_5shot.sh', dict(metabatch='4', inner_lr='0.01', meta_lr='1e-4', shot='5'),
     dict(metabatch='5', n_test_mc_samp='1')),
])
def test_metadrop_runfiles_use_the_originals_values(name, train, test):
    """metadrop runfiles/*.sh at its pinned commit (MAML through its --maml switch on its
    Conv4: ours is --model metadrop --maml, the same code path), and its sampler bug:
    every command passes --reuse_task_classes, and the runfile says why in a comment."""
    tr, te = flags_of(name)
    assert tr['--mode'] == 'meta_train' and te['--mode'] == 'meta_test'
    for k, v in train.items():
        assert tr[f'--{k}'] == v, k
    for k, v in test.items():
        assert te[f'--{k}'] == v, k
    for d in (tr, te):
        assert d['--query'] == '15' and d['--n_steps'] == '5' and d['--shot'] == train['shot']
        assert d['--model'] == 'metadrop' and (('--maml' in d) == name.startswith('maml'))
        assert '--backbone' not in d and '--inner_loss' not in d and '--clip_value' not in d
        assert '--reuse_task_classes' in d
    comments = [line for line in (RUNFILES[0].parent / name).read_text().splitlines()
                if line.startswith('#')]
    assert any('--reuse_task_classes' in line for line in comments)
    cfg = main.parse_config([a for a in commands(RUNFILES[0].parent / name)[0] if a != 'X'])
    assert cfg.reuse_task_classes and cfg.backbone == 'conv4' and cfg.clip_value == 3.0


@pytest.mark.parametrize('name', ['metadrop_omni_small.sh', 'maml_omni_small.sh',
                                  'quickstart.sh'])
def test_our_own_runfiles_keep_the_sampler_fix(name):
    """Runfiles of our own experiments draw classes per task (the default)."""
    assert '--reuse_task_classes' not in (RUNFILES[0].parent / name).read_text()


def test_metadrop_export_runfile_is_the_readmes_command():
    """metadrop's seed README export example: the Omniglot 5-shot model, metabatch 6, 1 MC
    sample (the repository's later README uses the 1-shot model with 30)."""
    (export,) = flags_of('metadrop_export.sh')
    assert (export['--mode'], export['--shot'], export['--inner_lr'], export['--n_test_mc_samp'],
            export['--metabatch']) == ('export', '5', '0.4', '1', '6')


@pytest.mark.parametrize('name,backbone,query', [
    ('pytorch_maml_mimg_1shot.sh', 'convnet4', '1'), ('pytorch_maml_mimg_5shot.sh', 'convnet4', '5'),
    ('pytorch_maml_tiered_1shot.sh', 'wide_convnet4', '1'),
    ('pytorch_maml_tiered_5shot.sh', 'wide_convnet4', '5')])
def test_pytorch_maml_reproduce_runfiles(name, backbone, query):
    """train_reproduce.yaml / test_reproduce.yaml: frozen BN, lr 0.01, torch's Adam 1e-3
    (--optimizer torch_adam, tests/golden/test_pytorch_maml.py), clip 10, 4 episodes per batch,
    60000 updates; 600 test episodes with 1 (5) queries and 10 steps."""
    train, test = flags_of(name)
    assert train['--optimizer'] == 'torch_adam'
    for f in (train, test):
        assert (f['--backbone'], f['--frozen'], f['--inner_lr'], f['--clip_value'],
                f['--metabatch'], f['--way']) == (backbone, 'bn', '0.01', '10', '4', '5')
        assert '--bn_mode' not in f   # transductive, the default
    assert (train['--meta_lr'], train['--n_train_iters'], train['--query']) == ('1e-3', '59999', '15')
    assert (test['--query'], test['--n_test_iters'], test['--n_test_steps']) == (query, '600', '10')


def test_pytorch_maml_template_runfile():
    train, test = flags_of('pytorch_maml_template.sh')
    for f in (train, test):
        assert (f['--bn_mode'], f['--zero_head'], f['--normalization'], f['--inner_momentum'],
                f['--inner_weight_decay']) == ('episodic', True, 'dataset', '0.9', '5e-4')
    assert (train['--optimizer'], train['--meta_lr'], train['--lr_milestones'],
            train['--augment']) == ('sgd', '0.01', '24000,28000', 'flip')
    assert test['--n_test_iters'] == '8000'


@pytest.mark.parametrize('name,train,test', [
    ('l2b_cifar_maml.sh', dict(metabatch='4', n_train_iters='50000', meta_lr='1e-3',
                               inner_lr='0.5'), dict(n_mc_samples='0')),
    ('l2b_cifar_msgd.sh', dict(metabatch='4', n_train_iters='50000', meta_lr='1e-3',
                               alpha_on=True), dict(n_mc_samples='0', alpha_on=True)),
    ('l2b_cifar_taml.sh', dict(metabatch='4', n_train_iters='50000', meta_lr='1e-3',
                               alpha_on=True, omega_on=True, gamma_on=True, z_on=True),
     dict(n_mc_samples='10', omega_on=True, gamma_on=True, z_on=True)),
    ('l2b_mimgnet_maml.sh', dict(metabatch='1', n_train_iters='80000', meta_lr='1e-4',
                                 inner_lr='0.1'), dict(n_mc_samples='0', inner_lr='0.1')),
    ('l2b_mimgnet_msgd.sh', dict(metabatch='1', n_train_iters='80000', meta_lr='1e-4',
                                 alpha_on=True), dict(n_mc_samples='0')),
    ('l2b_mimgnet_taml.sh', dict(metabatch='1', n_train_iters='80000', meta_lr='1e-4',
                                 alpha_on=True, omega_on=True, gamma_on=True, z_on=True),
     dict(n_mc_samples='10', alpha_on=True, z_on=True)),
])
def test_l2b_runfiles_use_the_originals_values(name, train, test):
    """l2b runfiles/*.sh: way 5, max_shot 50, query 15, 5 inner steps at meta-train and 10 at
    meta-test on 1000 episodes, and the per-run values; validation every 10000 iterations on
    3000 episodes, checkpoints every 10000."""
    tr, te = flags_of(name)
    assert tr['--mode'] == 'meta_train' and te['--mode'] == 'meta_test'
    ood = 'svhn' if 'cifar' in name else 'cub'
    for d in (tr, te):
        assert d['--model'] == 'taml' and d['--way'] == '5' and d['--max_shot'] == '50'
        assert d['--query'] == '15' and d['--ood_dataset'] == ood
        assert d['--metabatch'] == train['metabatch']
    assert tr['--n_steps'] == '5' and te['--n_steps'] == '10'
    assert te['--n_test_episodes'] == '1000'
    assert tr['--val_freq'] == tr['--save_freq'] == '10000'
    assert int(tr['--n_val_batches']) * int(train['metabatch']) == 3000
    for k, v in train.items():
        assert tr[f'--{k}'] == v, k
    for k, v in test.items():
        assert te[f'--{k}'] == v, k
    switches = [f'--{s}_on' for s in ('alpha', 'omega', 'gamma', 'z')]
    assert [s in tr for s in switches] == [s in te for s in switches]
    cfg = main.parse_config([a for a in commands(RUNFILES[0].parent / name)[1] if a != 'X'])
    assert cfg.n_test_iters == 1000 and cfg.dataset == ('cifar' if ood == 'svhn' else 'mimgnet')
    # Named after l2b, so l2b's computation, its padding bug included, and the flag explained.
    text = (RUNFILES[0].parent / name).read_text()
    assert tr['--l2b_padding'] is True and te['--l2b_padding'] is True
    assert re.search(r'^# --l2b_padding: ', text, re.M)
    if ood == 'cub':   # l2b's miniImageNet, whose validation classes checkpoint selection uses
        assert 'get_data.py --dataset mimgnet --source l2b' in text


@pytest.mark.parametrize('name,dataset,shot,values', [
    ('leo_mini_1shot.sh', 'miniImageNet', '1', dict(
        outer_lr='2.739071e-4', l2_penalty_weight='3.623413e-10',
        orthogonality_penalty_weight='0.188103', dropout_rate='0.307651', kl_weight='0.756143',
        encoder_penalty_weight='5.756821e-6')),
    ('leo_mini_5shot.sh', 'miniImageNet', '5', dict(
        outer_lr='4.102361e-4', l2_penalty_weight='8.540338e-9',
        orthogonality_penalty_weight='1.523998e-3', dropout_rate='0.300299', kl_weight='0.466387',
        encoder_penalty_weight='2.661608e-7')),
    ('leo_tiered_1shot.sh', 'tieredImageNet', '1', dict(
        outer_lr='8.659053e-4', l2_penalty_weight='4.148858e-10',
        orthogonality_penalty_weight='5.451078e-3', dropout_rate='0.475126',
        kl_weight='2.034189e-3', encoder_penalty_weight='8.302962e-5')),
    ('leo_tiered_5shot.sh', 'tieredImageNet', '5', dict(
        outer_lr='6.110314e-4', l2_penalty_weight='1.690399e-10',
        orthogonality_penalty_weight='2.481216e-2', dropout_rate='0.415158', kl_weight='1.622811',
        encoder_penalty_weight='2.672450e-5')),
])
def test_leo_runfiles_use_the_readmes_tuned_values(name, dataset, shot, values):
    """deepmind/leo README's best hyperparameters; everything else config.py's defaults, the
    runner's float32, checkpoints and validation every 1000 steps, then --evaluation_mode."""
    cmds = [[a for a in c if a != 'X'] for c in commands(RUNFILES[0].parent / name)]
    assert len(cmds) == 2
    train, test = (main.parse_config(c) for c in cmds)
    for cfg in (train, test):
        assert (cfg.model, cfg.dataset, cfg.shot, cfg.way, cfg.embedding_crop) == \
            ('leo', {'miniImageNet': 'leo_mini', 'tieredImageNet': 'leo_tiered'}[dataset],
             int(shot), 5, 'center')
        for k, v in values.items():
            assert getattr(cfg, 'meta_lr' if k == 'outer_lr' else k) == float(v), k
        assert not cfg.use_64bits_dtype
        assert (cfg.metabatch, cfg.query, cfg.n_steps, cfg.finetuning_unroll_length,
                cfg.num_latents, cfg.n_train_iters) == (12, 15, 5, 5, 64, 100000)
    assert (train.mode, train.val_freq, train.save_freq, train.print_freq) == \
        ('meta_train', 1000, 1000, 500)
    assert (test.mode, test.n_test_iters, test.metatest_batch_size) == ('meta_test', 10000, 200)
    assert train.savedir == test.savedir


@pytest.mark.parametrize('name,shot,dataset', [
    ('mtl_mini_1shot.sh', '1', 'mimgnet'), ('mtl_mini_5shot.sh', '5', 'mimgnet'),
    ('mtl_fc100_1shot.sh', '1', 'fc100'), ('mtl_fc100_5shot.sh', '5', 'fc100')])
def test_mtl_runfiles_carry_the_original_runners_values(name, shot, dataset):
    pre, train, test = flags_of(name)
    assert pre['--mode'] == 'pretrain' and pre['--pretrain_iterations'] == '20000'
    assert (pre['--pre_lr'], pre['--pre_lr_dropstep'], pre['--pretrain_batch_size'],
            pre['--pretrain_dropout_keep'], pre['--pre_save_step']) == \
        ('1e-3', '5000', '64', '0.9', '1000')
    assert (train['--shot_num'], train['--pre_iter'], train['--metatrain_iterations'],
            train['--meta_batch_size'], train['--train_base_epoch_num'], train['--base_lr'],
            train['--meta_lr'], train['--lr_drop_step'], train['--meta_save_step']) == \
        (shot, '10000', '20000', '2', '20', '1e-3', '1e-3', '1000', '100')
    assert test['--mode'] == 'meta_test' and test['--test_base_epoch_num'] == '100'
    assert all(c['--dataset'] == dataset and c['--backbone_arch'] == 'resnet12'
               for c in (pre, train, test))
    assert pre['--pretrain_dir'] == train['--pretrain_dir']   # meta-train reads what pretrain wrote
    # The original's head has 64 outputs on every dataset (mini: its 64 classes, our default).
    assert pre.get('--pretrain_class_num') == ('64' if dataset == 'fc100' else None)


@pytest.mark.parametrize('name,values,train_query,test_query', [
    ('maml_cbfinn_omni_5way1shot.sh', dict(way='5', shot='1', inner_lr='0.4', n_steps='1',
                                           clip_value='0'), dict(metabatch='32'), '1'),
    ('maml_cbfinn_omni_20way1shot.sh', dict(way='20', shot='1', inner_lr='0.1', n_steps='5',
                                            clip_value='0'), dict(metabatch='16'), '1'),
    ('maml_cbfinn_mimg_1shot.sh', dict(way='5', shot='1', inner_lr='0.01', n_steps='5',
                                       clip_value='10'), dict(metabatch='4', query='15'), '1'),
    ('maml_cbfinn_mimg_5shot.sh', dict(way='5', shot='5', inner_lr='0.01', n_steps='5',
                                       clip_value='10'), dict(metabatch='4', query='15'), '5'),
])
def test_cbfinn_runfiles_carry_its_main_py_values(name, values, train_query, test_query):
    """cbfinn/maml main.py's usage lines; its losses (CE / K summed, inner and outer), its
    Conv4, meta_lr 1e-3, 60000 iterations; its test: 600 single episodes, 10 steps, K queries."""
    tr, te = flags_of(name)
    for d in (tr, te):
        assert d['--model'] == 'maml' and d['--backbone'] == 'maml_conv4'
        assert d['--inner_loss'] == 'maml_sum' and d['--outer_loss'] == 'maml_sum'
        assert d['--meta_lr'] == '1e-3'
        for k, v in values.items():
            assert d[f'--{k}'] == v, k
    assert tr['--mode'] == 'meta_train' and tr['--n_train_iters'] == '59999'
    for k, v in train_query.items():
        assert tr[f'--{k}'] == v, k
    if 'query' not in train_query:   # Omniglot: update_batch_size * 2 examples per class
        assert tr['--query'] == values['shot']
    assert te['--mode'] == 'meta_test' and te['--metabatch'] == '1'
    assert te['--n_test_steps'] == '10' and te['--n_test_iters'] == '600'
    assert te['--query'] == test_query
