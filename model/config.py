"""The run configuration: the flags of every method (model/shared_flags.py and each
declaration in model/methods/) parsed into one namespace, with the chosen method's defaults
and spellings, and checked. main.py's command line and the Python API (model/api.py) both
build their configurations here, so a configuration made in Python is checked exactly as a
command line is."""
import sys
import types

from absl import app
from absl import flags

from data.datasets import dataset_names, dataset_spec
from model import methods
from model import shared_flags
from model.shared_flags import DATASETS, MODES

methods.load_plugins()   # every method's flags are defined from here on
FLAGS = flags.FLAGS
METHODS = methods.names()


def flag_modules():
    """The modules that define this project's flags: the shared ones and each method's."""
    return [shared_flags] + [sys.modules[f'{methods.__name__}.{p}'] for p in methods.PLUGINS]


def project_flags():
    """{name: absl Flag} of every flag this project defines (absl's own, such as --helpfull or
    --flagfile, excluded), aliases included."""
    found = {}
    for module in flag_modules():
        for flag in FLAGS.get_key_flags_for_module(module):
            found[flag.name] = flag
    return found


def alias_target(flag):
    """The flag an alias stands for (absl's DEFINE_alias help: 'Alias for --NAME.'), or None."""
    prefix = 'Alias for --'
    return flag.help[len(prefix):].rstrip('.') if flag.help.startswith(prefix) else None


ALIASES = tuple(name for name, flag in project_flags().items() if alias_target(flag))


def given_flags():
    """The flags given on the command line (an alias counts as the flag it stands for)."""
    given = set()
    for name, flag in project_flags().items():
        if flag.present:
            given.add(alias_target(flag) or name)
    return given


def config_from_flags():
    """The run configuration: every flag as a plain namespace, with the chosen method's
    defaults (the original's) where the flag was not given, and its own spellings applied."""
    cfg = types.SimpleNamespace(**{name: flag.value for name, flag in project_flags().items()
                                   if not alias_target(flag)})
    method = methods.REGISTRY.get(cfg.model)
    if method is not None:
        given = given_flags()
        for name, value in method.defaults.items():
            if name not in given:
                setattr(cfg, name, value)
        for name, value in method.fixed.items():
            setattr(cfg, name, value)
        if method.configure:
            method.configure(cfg, given)
    return cfg


def parse_config(argv):
    """Parses `argv` (flags only, no program name) into a validated configuration without
    running anything: for tests and tools that drive the runner in-process."""
    FLAGS.unparse_flags()
    FLAGS(['main.py', *argv])
    cfg = config_from_flags()
    validate(cfg)
    return cfg


def inapplicable(method, given):
    """The given flags that do not apply to `method`, with one message naming them and the
    flags that do; None when every given flag applies."""
    applicable = method.applicable()
    wrong = sorted(given - set(applicable))
    if not wrong:
        return None
    own = ', '.join(f'--{n}' for n in method.flags) or 'none'
    shared = ', '.join(f'--{n}' for n in method.shared)
    return (f'{", ".join(f"--{n}" for n in wrong)} {"does" if len(wrong) == 1 else "do"} not '
            f'apply to --model {method.name}; its own flags: {own}; the shared flags it takes: '
            f'{shared} (`python main.py --model {method.name} --helpshort` explains each)')


def validate(cfg):
    """Every check that needs neither TensorFlow nor the data; app.UsageError with all the
    messages in one line."""
    errors = []
    if cfg.mode not in MODES:
        errors.append(f'--mode {cfg.mode!r} is not one of {", ".join(MODES)}')
    method = methods.REGISTRY.get(cfg.model)
    if method is None:
        errors.append(f'--model {cfg.model!r} is not one of {", ".join(METHODS)}')
    if cfg.dataset not in DATASETS:
        which = 'id_dataset' if getattr(cfg, 'id_dataset', '') else 'dataset'
        errors.append(f'--{which} {cfg.dataset!r} is not one of {", ".join(DATASETS)}')
    if method is not None:
        message = inapplicable(method, given_flags())
        if message:
            errors.append(message)
        if cfg.mode in MODES and cfg.mode not in method.modes:
            errors.append(f'--model {method.name} runs --mode {", ".join(method.modes)}; not '
                          f'{cfg.mode}')
        if cfg.dataset in DATASETS and cfg.dataset not in dataset_names(method.inputs,
                                                                         method.name):
            spec = dataset_spec(cfg.dataset)
            which = [n for n in methods.REGISTRY if spec.takes(n)
                     and methods.REGISTRY[n].inputs == spec.kind]
            if spec.kind != method.inputs:
                kind = 'embedding vectors' if spec.kind == 'embeddings' else spec.kind
                errors.append(f'--dataset {cfg.dataset} holds {kind}, for --model '
                              f'{", ".join(which)}; --model {method.name} works on '
                              f'{method.inputs}: --dataset '
                              f'{", ".join(dataset_names(method.inputs, method.name))}')
            else:
                errors.append(f'--dataset {cfg.dataset} is for --model {", ".join(which)} '
                              f'only, not --model {method.name}')
    errors += shared_flags.validate(cfg)
    if method is not None and method.validate:
        errors += method.validate(cfg)
    errors += shared_flags.validate_numbers(cfg, errors)
    if errors:
        raise app.UsageError('; '.join(errors))


def flag_arguments(**values):
    """Command-line arguments for flag values given in Python: make_config(way=5, efficient=True)
    -> ['--way=5', '--efficient']. A value of None leaves the flag at its default."""
    args = []
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            args.append(f'--{name}' if value else f'--no{name}')
        else:
            args.append(f'--{name}={value}')
    return args


def make_config(**values):
    """A checked configuration from flag values given as keyword arguments (flag names, the
    originals' spellings included); app.UsageError names what is wrong, as main.py would."""
    return parse_config(flag_arguments(**values))
