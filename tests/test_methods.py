"""The method registry (model/methods/): each method declared in one place, main.py asking it
instead of branching on model names, flags that do not apply refused with the ones that do,
--helpshort per method, and the declarations' own invariants."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
from absl import app, flags

import main
from model import methods, shared_flags

ROOT = Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS


def owner_module(name):
    """The module that defined flag `name`."""
    for module_name, defined in FLAGS.flags_by_module_dict().items():
        if any(f.name == name for f in defined):
            return module_name
    return None


def test_every_method_is_registered_from_its_declaration_file():
    assert set(methods.names()) == {'maml', 'fomaml', 'metasgd', 'metadrop', 'taml', 'leo',
                                    'mtl', 'anil'}
    for method in methods.REGISTRY.values():
        plugin = method.build.__module__
        assert plugin.startswith('model.methods.'), method.name
        for name in method.flags:   # its own flags are defined in its own file
            assert owner_module(name) == plugin, (method.name, name)
        for name in method.shared:
            assert owner_module(name) == 'model.shared_flags', (method.name, name)
        assert set(method.defaults) <= set(method.applicable())
        assert set(method.modes) <= set(shared_flags.MODES)


def test_every_flag_is_shared_or_owned_by_exactly_one_declaration():
    owners = {}
    for method in methods.REGISTRY.values():
        for name in method.flags:
            owners.setdefault(name, set()).add(method.build.__module__)
    for name in main.project_flags():
        if name in main.ALIASES:
            continue
        module = owner_module(name)
        if module == 'model.shared_flags':
            assert any(name in m.shared for m in methods.REGISTRY.values()), \
                f'--{name} is shared but no method takes it'
        else:
            assert owners.get(name) == {module}, name


@pytest.mark.parametrize('method,flag', [
    # The examples: flags that used to be accepted and ignored, or worse, applied.
    ('leo', '--weight_decay=0.1'), ('mtl', '--weight_decay=0.1'),
    ('leo', '--inner_weight_decay=0.1'), ('mtl', '--inner_weight_decay=0.1'),
    ('leo', '--normalization=dataset'), ('mtl', '--normalization=dataset'),
    ('leo', '--clip_value=1'), ('mtl', '--clip_value=1'),
    ('taml', '--inner_loss=maml_sum'), ('taml', '--n_test_mc_samp=3'),
    ('taml', '--reuse_task_classes'), ('maml', '--num_latents=8'), ('maml', '--maml'),
    ('fomaml', '--alpha_init=0.1'), ('leo', '--attacks=l2'), ('mtl', '--backbone=resnet12'),
])
def test_a_flag_that_does_not_apply_is_refused_naming_the_ones_that_do(method, flag):
    name = flag.split('=')[0].lstrip('-')
    with pytest.raises(app.UsageError) as e:
        main.parse_config(['--savedir', '/tmp/x', '--model', method, flag])
    message = str(e.value)
    assert f'--{name} does not apply to --model {method}' in message
    applicable = methods.get(method).applicable()
    assert all(f'--{n}' in message for n in applicable)
    assert f'--model {method} --helpshort' in message


def test_default_values_of_other_methods_flags_are_not_refused():
    """Only flags given on the command line count, aliases as the flag they stand for."""
    cfg = main.parse_config(['--savedir', '/tmp/x', '--model', 'leo', '--num_classes=5',
                             '--outer_lr=1e-4'])
    assert (cfg.way, cfg.meta_lr) == (5, 1e-4)
    main.parse_config(['--savedir', '/tmp/x', '--model', 'mtl', '--base_lr=0.01'])


def helpshort(method):
    code = ('import sys, main\n'
            'try:\n'
            f'    main.parse_flags(["main.py", "--model", "{method}", "--helpshort"])\n'
            'except SystemExit as e:\n'
            '    assert e.code == 0, e.code\n'
            'assert "tensorflow" not in sys.modules, "--helpshort imported TensorFlow"\n')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_helpshort_lists_the_methods_flags_only():
    text = helpshort('leo')
    listed = set(re.findall(r'^  --(\w+):', text, re.M))
    assert listed == set(methods.get('leo').applicable())
    assert {'num_latents', 'kl_weight', 'n_steps', 'way'} <= listed
    assert not {'bn_mode', 'frozen', 'weight_decay', 'max_shot'} & listed
    assert '(default: 12)' in text   # LEO's metabatch, the original's default
    anil = set(re.findall(r'^  --(\w+):', helpshort('anil'), re.M))
    assert 'frozen' not in anil and 'inner_loss' in anil


def test_main_does_not_branch_on_method_names():
    """Outside model/methods/, no code compares a model name with a literal: what differs
    between methods is declared in the registry."""
    pattern = re.compile(r"""\.model\s*(==|!=)\s*['"]|\.model\s*(not\s+)?in\s*\(\s*['"]""")
    files = [ROOT / 'main.py', *(ROOT / 'model').glob('*.py'), *(ROOT / 'data').glob('*.py'),
             *(ROOT / 'tools').glob('*.py')]
    hits = [f'{f.relative_to(ROOT)}:{i}: {line.strip()}' for f in files
            for i, line in enumerate(f.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, '\n'.join(hits)
    assert len((ROOT / 'main.py').read_text().splitlines()) < 300


def test_unknown_method_and_mode_are_named():
    with pytest.raises(app.UsageError, match=r"--model 'reptile' is not one of maml, fomaml"):
        main.parse_config(['--savedir', '/tmp/x', '--model', 'reptile'])
    with pytest.raises(app.UsageError, match=r'--model leo runs --mode meta_train, '
                                             r'meta_test; not export'):
        main.parse_config(['--savedir', '/tmp/x', '--model', 'leo', '--mode', 'export'])
