"""A stand-in for the part of Sonnet 1 (v1.2x, TF 1.x graph mode) that deepmind/leo's model.py uses.

LEO's ``import sonnet as snt`` gets :func:`module` (a module object). What it reproduces, for TF 1.x
graph code run under ``tf.compat.v1`` inside ``tf.Graph().as_default()``:

- ``snt.AbstractModule``: ``__init__(name=None)`` wraps ``_build`` in ``tf.make_template(name,
  ..., create_scope_now_=True)``, so the module's variable scope is made (and uniquified:
  ``leo``, ``leo_1``...) at construction; ``__call__`` runs ``_build`` in that scope, creating
  variables the first time and reusing them afterwards. Every variable created while a module
  is on the module stack (its ``_build``, a ``reuse_variables`` method, ``_enter_variable_scope``)
  is recorded in it and in the modules below it on the stack; ``variables`` /
  ``trainable_variables`` return them **sorted by name** (LEO's ``grads_and_vars`` takes
  ``self.trainable_variables`` in that order).
- ``snt.reuse_variables``: a method so decorated enters the module's variable scope with
  ``reuse=False`` the first time it (this method) is called in a graph and ``reuse=True`` afterwards, under a
  name scope ``<module>/<method name in snake case>``; its variables are recorded in the module.
- ``snt.Linear(output_size, use_bias=True, initializers=None, partitioners=None,
  regularizers=None, name='linear')``: a 2-D input [batch, in] times ``w`` [in, out] (+ ``b``
  [out]), both made by ``tf.get_variable`` in the module's scope (so ``<scope>/linear/w``), in
  the input's dtype, initialisers ``w``: truncated normal with stddev 1/sqrt(in), ``b``: zeros
  unless given; a regulariser given for ``w`` / ``b`` is passed to ``tf.get_variable``, which adds
  its loss to the REGULARIZATION_LOSSES collection once, when the variable is created (not on
  reuse). ``w`` / ``b`` properties. The output size may be a TF 1.x ``Dimension``.
- ``snt.nets.MLP(output_sizes, activation=tf.nn.relu, activate_final=False, initializers=None,
  regularizers=None, use_bias=True, name='mlp')``: Linear layers ``linear_0``, ``linear_1``, ...
  made in the MLP's scope at construction, the activation after every layer but the last
  (unless activate_final).
- ``snt.BatchApply(module_or_op, n_dims=2, name='batch_apply')``: merges the leading ``n_dims``
  dimensions of every tensor argument into one, applies the module, and splits the output's
  first dimension back into the first argument's leading dimensions (static shapes where
  known).
Anything else LEO does not use is absent, so a silent difference cannot hide behind the stand-in.
tests/golden/test_leo.py checks these semantics against closed forms.
"""
import contextlib
import functools
import re
import types
import weakref

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1

_MODULE_STACK = []


def to_snake_case(name):
    """Sonnet 1's util.to_snake_case ('LEO' -> 'leo', 'BatchApply' -> 'batch_apply')."""
    underscored = re.sub(r'([A-Z][a-z])', r'_\1', name)
    underscored = re.sub(r'([a-z])([A-Z])', r'\1_\2', underscored)
    underscored = re.sub(r'([a-z])([0-9][^_]*)', r'\1_\2', underscored)
    return underscored.strip('_').lower()


class AbstractModule:
    """Sonnet 1's AbstractModule (see the module docstring)."""

    def __init__(self, name=None):
        if name is None:
            name = to_snake_case(type(self).__name__)
        self._template = v1.make_template(name, self._build_wrapper, create_scope_now_=True)
        self._unique_name = self._template.variable_scope.name.split('/')[-1]
        self._all_variables = set()
        self._is_connected = False
        self._graph = None

    def _build_wrapper(self, *args, **kwargs):
        return self._build(*args, **kwargs)

    def _build(self, *args, **kwargs):
        raise NotImplementedError

    def _check_same_graph(self):
        graph = v1.get_default_graph()
        if self._graph is None:
            self._graph = graph
        elif self._graph is not graph:
            raise ValueError('Cannot connect module to multiple Graphs.')

    @contextlib.contextmanager
    def _capture_variables(self):
        """Records the variables created meanwhile in this module; on exit, in its parent."""
        _MODULE_STACK.append(self)

        def creator(next_creator, **kwargs):
            variable = next_creator(**kwargs)
            self._all_variables.add(variable)
            return variable
        try:
            with v1.variable_creator_scope(creator):
                yield
        finally:
            _MODULE_STACK.pop()
        if _MODULE_STACK:
            _MODULE_STACK[-1]._all_variables.update(self._all_variables)

    @contextlib.contextmanager
    def _enter_variable_scope(self, reuse=None):
        self._check_same_graph()
        with self._capture_variables():
            with v1.variable_scope(self._template.variable_scope, reuse=reuse) as scope:
                yield scope

    def __call__(self, *args, **kwargs):
        self._check_same_graph()
        with self._capture_variables():
            outputs = self._template(*args, **kwargs)
        self._is_connected = True
        return outputs

    @property
    def scope_name(self):
        return self._template.variable_scope.name

    @property
    def module_name(self):
        return self._unique_name

    @property
    def is_connected(self):
        return self._is_connected

    @property
    def variables(self):
        if not self._is_connected:
            raise ValueError(f'Variables in {self.scope_name} not instantiated yet, __call__ '
                             'the module first.')
        return tuple(sorted(self._all_variables, key=lambda v: v.name))

    @property
    def trainable_variables(self):
        return tuple(v for v in self.variables if v.trainable)

    @property
    def non_trainable_variables(self):
        return tuple(v for v in self.variables if not v.trainable)


def reuse_variables(method):
    """Sonnet 1's snt.reuse_variables (see the module docstring). Like Sonnet 1's, each
    decorated method keeps its own record of the (graph, variable scope) pairs it has been
    called in: LEO's encoder having run in scope 'leo' does not make relation_network reuse."""
    initialised_by_graph = weakref.WeakKeyDictionary()

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        graph = v1.get_default_graph()
        initialised = initialised_by_graph.setdefault(graph, set())
        with self._enter_variable_scope() as scope:
            pass
        reuse = scope.name in initialised
        with self._enter_variable_scope(reuse=True if reuse else None) as scope:
            with tf.name_scope(f'{to_snake_case(method.__name__)}'):
                out = method(self, *args, **kwargs)
        initialised.add(scope.name)
        self._is_connected = True
        return out
    return wrapper


def _size(dim):
    """An int from an int or a TF 1.x Dimension."""
    return int(tf.compat.dimension_value(dim))


class Linear(AbstractModule):
    """Sonnet 1's snt.Linear (see the module docstring)."""

    def __init__(self, output_size, use_bias=True, initializers=None, partitioners=None,
                 regularizers=None, custom_getter=None, name='linear'):
        if partitioners or custom_getter:
            raise NotImplementedError('Linear stand-in: no partitioners / custom getters')
        super().__init__(name=name)
        self._output_size = _size(output_size)
        self._use_bias = use_bias
        self._initializers = dict(initializers or {})
        self._regularizers = dict(regularizers or {})
        unknown = (set(self._initializers) | set(self._regularizers)) - {'w', 'b'}
        if unknown:
            raise KeyError(f'Invalid initializer / regularizer keys {sorted(unknown)}')
        self._input_size = None

    def _build(self, inputs):
        shape = inputs.get_shape()
        if shape.rank != 2:
            raise ValueError(f'A Linear layer must have a 2-D input, got shape {shape}')
        input_size = _size(shape[1])
        if self._input_size is not None and input_size != self._input_size:
            raise ValueError(f'Input shape must be [batch_size, {self._input_size}] not '
                             f'[batch_size, {input_size}]')
        self._input_size = input_size
        dtype = inputs.dtype
        w_init = self._initializers.get('w') or v1.truncated_normal_initializer(
            stddev=1. / np.sqrt(input_size), dtype=dtype)
        self._w = v1.get_variable('w', [input_size, self._output_size], dtype=dtype,
                                  initializer=w_init, regularizer=self._regularizers.get('w'))
        outputs = tf.matmul(inputs, self._w)
        if self._use_bias:
            b_init = self._initializers.get('b') or v1.zeros_initializer(dtype=dtype)
            self._b = v1.get_variable('b', [self._output_size], dtype=dtype,
                                      initializer=b_init,
                                      regularizer=self._regularizers.get('b'))
            outputs += self._b
        return outputs

    @property
    def w(self):
        return self._w

    @property
    def b(self):
        if not self._use_bias:
            raise AttributeError('No bias Variable in Linear Module when `use_bias=False`.')
        return self._b


class MLP(AbstractModule):
    """Sonnet 1's snt.nets.MLP (see the module docstring)."""

    def __init__(self, output_sizes, activation=tf.nn.relu, activate_final=False,
                 initializers=None, partitioners=None, regularizers=None, use_bias=True,
                 use_dropout=False, custom_getter=None, name='mlp'):
        if use_dropout:
            raise NotImplementedError('MLP stand-in: no dropout (LEO does not use it)')
        super().__init__(name=name)
        self._activation = activation
        self._activate_final = activate_final
        with self._enter_variable_scope():
            self._layers = [Linear(size, use_bias=use_bias, initializers=initializers,
                                   partitioners=partitioners, regularizers=regularizers,
                                   custom_getter=custom_getter, name=f'linear_{i}')
                            for i, size in enumerate(output_sizes)]

    @property
    def layers(self):
        return tuple(self._layers)

    def _build(self, inputs):
        net = inputs
        for i, layer in enumerate(self._layers):
            net = layer(net)
            if i != len(self._layers) - 1 or self._activate_final:
                net = self._activation(net)
        return net


def _merge_leading_dims(x, n_dims):
    x = tf.convert_to_tensor(x)
    if x.shape.rank is not None and x.shape.rank < n_dims:
        return x
    static = x.shape.as_list() if x.shape.rank is not None else None
    if static is not None and None not in static:
        return tf.reshape(x, [int(np.prod(static[:n_dims]))] + static[n_dims:])
    shape = tf.shape(x)
    return tf.reshape(x, tf.concat([[tf.reduce_prod(shape[:n_dims])], shape[n_dims:]], 0))


def _split_leading_dim(x, example, n_dims):
    x_static = x.shape.as_list()
    lead = example.shape.as_list()[:n_dims]
    if None not in lead and None not in x_static[1:]:
        return tf.reshape(x, lead + x_static[1:])
    return tf.reshape(x, tf.concat([tf.shape(example)[:n_dims], tf.shape(x)[1:]], 0))


class BatchApply(AbstractModule):
    """Sonnet 1's snt.BatchApply (see the module docstring)."""

    def __init__(self, module_or_op, n_dims=2, input_example_index=0, name='batch_apply'):
        if n_dims < 2:
            raise ValueError(f'n_dims should be at least 2, got {n_dims}')
        super().__init__(name=name)
        self._module = module_or_op
        self._n_dims = n_dims
        self._input_example_index = input_example_index

    def _build(self, *args):
        example = tf.convert_to_tensor(args[self._input_example_index])
        results = self._module(*[_merge_leading_dims(a, self._n_dims) for a in args])
        return tf.nest.map_structure(
            lambda r: _split_leading_dim(r, example, self._n_dims), results)


def module():
    """The ``sonnet`` module object answering LEO's ``import sonnet as snt``."""
    snt = types.ModuleType('sonnet')
    snt.AbstractModule = AbstractModule
    snt.reuse_variables = reuse_variables
    snt.Linear = Linear
    snt.BatchApply = BatchApply
    snt.nets = types.SimpleNamespace(MLP=MLP)
    return snt


@contextlib.contextmanager
def tf1_tensor_shapes():
    """TF 1.x TensorShape semantics (dimensions are ``Dimension`` objects with ``.value``, as
    LEO's ``self.embedding_dim.value`` needs) for the duration; TF 2.x's restored after. Only
    the Python-side shape objects change, never a computed value."""
    was_v2 = isinstance(tf.TensorShape([1])[0], int)
    v1.disable_v2_tensorshape()
    try:
        yield
    finally:
        if was_v2:
            v1.enable_v2_tensorshape()
