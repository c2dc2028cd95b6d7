"""Entry point: `python main.py --model METHOD --mode MODE --savedir DIR ...`.

main.py parses the flags, asks the method registry (model/methods/) what the chosen method
takes, checks the configuration and dispatches the mode to the method's runner. Flag names
and defaults are the originals'; `python main.py --model NAME --helpshort` lists one method's
flags, `--helpfull` every flag.
"""
import json
import os
import sys

# Before TensorFlow is imported anywhere: see model/__init__.py.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app
from absl import flags

from model import config
from model import methods
# Names importers of main.py use.
from model.shared_flags import (ATTACK_NORMS, BACKBONES, BN_MODES, DATASETS, INT32_MAX,  # noqa: F401
                                MODES)

FLAGS = flags.FLAGS
METHODS = config.METHODS
ALIASES = config.ALIASES
# The configuration is model/config.py's; these names stay importable from main.py.
project_flags, config_from_flags, parse_config, validate = (
    config.project_flags, config.config_from_flags, config.parse_config, config.validate)


def help_short(argv):
    """`--helpshort`: the chosen method's flags with their help, its own first."""
    FLAGS.unparse_flags()
    FLAGS(list(argv), known_only=True)
    name = FLAGS.model
    if name not in methods.REGISTRY:
        usage_error(f'--model {name!r} is not one of {", ".join(METHODS)}')
    method = methods.REGISTRY[name]
    every = project_flags()
    lines = [f'--model {name}: {method.summary}.', f'Modes: {", ".join(method.modes)}.']
    for title, names in ((f'Flags of {name}', method.flags), ('Shared flags it takes',
                                                             method.shared)):
        if not names:
            continue
        lines += ['', f'{title}:']
        for n in names:
            flag = every[n]
            default = method.defaults.get(n, flag.default)
            lines.append(f'  --{n}: {flag.help}')
            lines.append(f'    (default: {default!r})')
    sys.stdout.write('\n'.join(lines) + '\n')
    sys.exit(0)


def run_mode(cfg):
    """Runs one mode with the method's runner; user-facing problems are raised as
    DatasetError, EpisodeSizeError, RunError or Interrupted, which main() turns into one
    message and an exit code."""
    runner = methods.get(cfg.model).runner(cfg)(cfg)
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
    """The folder a mode writes when it is not --savedir, for the one-run-per-folder lock;
    None for the savedir."""
    method = methods.get(cfg.model)
    return method.written_folder(cfg) if method.written_folder else None


def usage_error(message):
    """Exits with one `error:` line (not absl's page of flag help)."""
    message = ' '.join(str(message).split())   # one line, whatever the message held
    sys.stderr.write(f'error: {message}. `python main.py --helpfull` lists every flag.\n')
    sys.exit(1)


def parse_flags(argv):
    """app.run's flags parser: an unknown flag, a value of the wrong type or a missing value
    is one `error:` line (absl's own parser prints a FATAL line and a hint). Parses afresh,
    so in-process callers (tests) may call it again. --helpshort prints the chosen method's
    flags."""
    if any(a in ('--helpshort', '-helpshort') for a in argv):
        help_short([a for a in argv if a not in ('--helpshort', '-helpshort')])
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


def preflight(cfg):
    """The checks that need TensorFlow (the model's parameter names, the device count), run
    after validate() and before anything is loaded, trained or written."""
    method = methods.get(cfg.model)
    errors = list(method.preflight(cfg)) if method.preflight else []
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
