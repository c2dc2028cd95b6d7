"""The method registry: each method declares itself in one file of this package.

A `Method` says everything main.py needs to know about a method, so that main.py only parses
flags, asks the registry and dispatches (docs/extending.md shows how to add one):
- `name`, `summary` (one line for --helpshort) and `modes`, the --mode values it runs;
- `inputs`: 'images' or 'embeddings', which datasets it can read;
- `flags`: the flags it owns (defined with absl in its declaration file), and `shared`: the
  flags of model/shared_flags.py that apply to it. Any other flag given on the command line
  is refused, naming the flags that do apply;
- `defaults`: the original's values of shared flags (used unless the flag is given);
- `fixed`: values the method fixes for shared flags it does not take (so that config.json
  records what it computes, e.g. MTL's clip 0);
- `configure(cfg, given)`: the original's spellings and derived defaults (optional);
- `validate(cfg)` -> list of messages, checks without TensorFlow; `preflight(cfg)`, checks
  that need it (parameter names), before anything is loaded or written (both optional);
- `build(cfg, way, image_shape)` -> the model (a module with `outer_variables` and
  `task_loss`); `runner(cfg)` -> the runner class for cfg.mode;
- `written_folder(cfg)`: a folder the mode writes other than --savedir (optional).

Declaration files import TensorFlow only inside `build` / `runner`, so that parsing flags,
--helpshort and usage errors stay fast.
"""
import dataclasses
import importlib
from typing import Callable, Optional

# The declaration files, in the order --helpfull and the docs list them.
PLUGINS = ('maml', 'metadrop', 'taml', 'leo', 'mtl', 'anil')


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    summary: str
    modes: tuple
    build: Callable
    runner: Callable
    inputs: str = 'images'
    flags: tuple = ()
    shared: tuple = ()
    defaults: dict = dataclasses.field(default_factory=dict)
    fixed: dict = dataclasses.field(default_factory=dict)
    configure: Optional[Callable] = None
    validate: Optional[Callable] = None
    preflight: Optional[Callable] = None
    written_folder: Optional[Callable] = None

    def applicable(self):
        """Every flag that applies to this method: its own and the shared ones it takes."""
        return tuple(dict.fromkeys(self.shared + self.flags))


REGISTRY = {}


def register(*methods):
    """Adds methods to the registry (a declaration file calls this at import)."""
    for method in methods:
        if method.name in REGISTRY:
            raise ValueError(f'method {method.name!r} is registered twice')
        unknown = set(method.defaults) - set(method.applicable())
        if unknown:
            raise ValueError(f'method {method.name!r} sets defaults of flags that do not '
                             f'apply to it: {", ".join(sorted(unknown))}')
        taken = set(method.fixed) & set(method.applicable())
        if taken:
            raise ValueError(f'method {method.name!r} fixes flags it takes: '
                             f'{", ".join(sorted(taken))}')
        REGISTRY[method.name] = method
    return methods


def load_plugins():
    """Imports every declaration file (which registers its methods and defines its flags)."""
    for plugin in PLUGINS:
        importlib.import_module(f'{__name__}.{plugin}')
    return REGISTRY


def get(name):
    """The method called `name`; KeyError names the known ones."""
    load_plugins()
    if name not in REGISTRY:
        raise KeyError(f'--model {name!r} is not one of {", ".join(REGISTRY)}')
    return REGISTRY[name]


def names():
    return tuple(load_plugins())


def build_model(cfg, way, image_shape):
    """The model of cfg.model for tasks of `way` classes on inputs of `image_shape`."""
    try:
        method = get(cfg.model)
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    return method.build(cfg, way, image_shape)
