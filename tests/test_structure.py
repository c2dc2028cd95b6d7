"""The code's shape: no import circle anywhere in the project, and no module importing another
module's private (underscore) names. Read from the source with `ast`, imports inside functions
included (a lazy import is still a dependency)."""
import ast
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ('model', 'data', 'tools', 'benchmarks')
TOP_MODULES = ('main', 'plot')


def project_files():
    files = [ROOT / f'{name}.py' for name in TOP_MODULES]
    for package in PACKAGES:
        files += sorted((ROOT / package).rglob('*.py'))
    return files


def module_name(path):
    rel = path.relative_to(ROOT).with_suffix('')
    parts = list(rel.parts)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def imports_of(path, known):
    """[(imported project module, [names imported from it], line)] of one file."""
    me = module_name(path)
    package = me if path.name == '__init__.py' else me.rpartition('.')[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    found.append((alias.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.split('.') if package else []
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = '.'.join(anchor + ([base] if base else []))
            names = [alias.name for alias in node.names]
            submodules = [f'{base}.{n}' for n in names if f'{base}.{n}' in known]
            for sub in submodules:
                found.append((sub, [], node.lineno))
            plain = [n for n in names if f'{base}.{n}' not in known]
            if base in known and plain:
                found.append((base, plain, node.lineno))
    return [(target, names, line) for target, names, line in found if target != me]


def import_graph():
    files = project_files()
    known = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, known) for p in files}


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w, _, _ in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def test_no_import_circle():
    graph = import_graph()
    found = cycles(graph)
    detail = []
    for component in found:
        members = set(component)
        for module in component:
            for target, _, line in graph[module]:
                if target in members:
                    detail.append(f'{module}:{line} imports {target}')
    assert not found, 'import circles: ' + '; '.join(' <-> '.join(c) for c in found) + \
        '\n' + '\n'.join(detail)


def test_no_module_imports_private_names():
    offences = [f'{module}:{line} imports {", ".join(n for n in names if n.startswith("_"))} '
                f'from {target}'
                for module, edges in import_graph().items()
                for target, names, line in edges
                if any(n.startswith('_') and not n.startswith('__') for n in names)]
    assert not offences, '\n'.join(offences)


def test_the_checks_can_fail(tmp_path, monkeypatch):
    """A circle and a private import written on purpose are found."""
    graph = {'a': [('b', ['x'], 1)], 'b': [('a', ['_y'], 2)], 'c': [('a', [], 3)]}
    assert cycles(graph) == [['a', 'b']]
    (tmp_path / 'pkg').mkdir()
    (tmp_path / 'pkg' / '__init__.py').write_text('')
    (tmp_path / 'pkg' / 'one.py').write_text('from .two import _hidden\n')
    (tmp_path / 'pkg' / 'two.py').write_text('def f():\n    from pkg import one\n')
    monkeypatch.setattr(sys.modules[__name__], 'ROOT', tmp_path)
    known = {'pkg', 'pkg.one', 'pkg.two'}
    assert imports_of(tmp_path / 'pkg' / 'one.py', known) == [('pkg.two', ['_hidden'], 1)]
    assert imports_of(tmp_path / 'pkg' / 'two.py', known) == [('pkg.one', [], 2)]
