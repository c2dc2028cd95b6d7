"""Writes docs/flags.md, the reference of every main.py flag, from the absl definitions themselves.

    python -m tools.flags_doc            # rewrite docs/flags.md
    python -m tools.flags_doc --check    # exit 1 (naming the file) when it is out of date

The shared flags come first, in the groups of model/shared_flags.py (its `# --- title ---`
comments), then each method's own flags (model/methods/<file>.py, in the registry's order), and a
table of which shared groups apply to which method. Defaults and help strings are read from the
registered flags, so the page cannot drift from the code (tests/test_docs.py runs the check).
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / 'docs' / 'flags.md'
SECTION = re.compile(r'^# --- (.*?) ---\s*$')
DEFINITION = re.compile(r"""^\s*flags\.DEFINE_\w+\(\s*['"](\w+)['"]""")


def sections_of(path, first_title):
    """[(title, [flag names])] of one file, from its section comments and definitions."""
    result = [(first_title, [])]
    for line in path.read_text().splitlines():
        if SECTION.match(line):
            result.append((SECTION.match(line).group(1), []))
        elif DEFINITION.match(line):
            result[-1][1].append(DEFINITION.match(line).group(1))
    return [(title, names) for title, names in result if names]


def sections():
    """The shared groups, then each method file's own flags."""
    from model import methods
    methods.load_plugins()
    result = sections_of(ROOT / 'model' / 'shared_flags.py', 'General')
    for plugin in methods.PLUGINS:
        named = [m.name for m in methods.REGISTRY.values()
                 if m.build.__module__ == f'{methods.__name__}.{plugin}']
        title = f'--model {" / ".join(named)} (model/methods/{plugin}.py)'
        result += [(title, names) for _, names in sections_of(
            ROOT / 'model' / 'methods' / f'{plugin}.py', title)]
    return result


def applicability():
    """A table: which groups of shared flags each method takes (all / some / none)."""
    from model import methods, shared_flags
    groups = [(name, getattr(shared_flags, name)) for name in dir(shared_flags)
              if name.endswith('_FLAGS') and isinstance(getattr(shared_flags, name), tuple)]
    order = ('RUN', 'IMAGE_DATA', 'INNER', 'OUTER', 'TASK_LOOP', 'DEVICE', 'BACKBONE',
             'MAML_ENGINE', 'ADV_TEST', 'EMBED', 'PARTLY_SHARED')
    groups.sort(key=lambda g: order.index(g[0][:-6]) if g[0][:-6] in order else len(order))
    lines = ['## Which shared flags apply to which method', '',
             'A flag given on the command line that does not apply to the chosen method is '
             'refused, naming the flags that do; `python main.py --model NAME --helpshort` lists '
             'them with their help.', '',
             '| group | ' + ' | '.join(methods.REGISTRY) + ' |',
             '| --- |' + ' --- |' * len(methods.REGISTRY)]
    for name, names in groups:
        row = []
        for method in methods.REGISTRY.values():
            taken = [n for n in names if n in method.shared]
            left = [n for n in names if n not in taken]
            row.append('all' if not left else '-' if not taken else
                       'all but ' + ', '.join(f'`{n}`' for n in left) if len(left) < len(taken)
                       else ', '.join(f'`{n}`' for n in taken))
        lines.append(f'| {name} | ' + ' | '.join(row) + ' |')
    return lines + ['']


def cell(text):
    return str(text).replace('|', '\\|').replace('\n', ' ')


def default_text(flag):
    if flag.default is None:
        return '(none)'
    if flag.flag_type() == 'bool':
        return 'on' if flag.default else 'off'
    if flag.default == '':
        return "''"
    return f'`{flag.default_as_str.strip(chr(39))}`' if flag.default_as_str else f'`{flag.default}`'


def render():
    """The page's text, from main.py's registered flags."""
    import main  # registers the flags
    registered = main.FLAGS
    lines = ['# Flag reference', '',
             'Every flag of `python main.py`, generated from the definitions in `model/shared_flags.py`',
             'and `model/methods/*.py` by `python -m tools.flags_doc` (a test fails when this page is out of date).',
             'Which flags a method uses and what they mean in context: [usage.md](usage.md) and each method\'s page.',
             'Boolean flags are given as `--name` / `--noname`.', '']
    lines += applicability()
    for title, names in sections():
        lines += [f'## {title[0].upper()}{title[1:]}', '', '| flag | type | default | meaning |',
                  '| --- | --- | --- | --- |']
        for name in names:
            flag = registered[name]
            kind = flag.flag_type()
            if kind.startswith('enum') or getattr(flag.parser, 'enum_values', None):
                kind = 'one of ' + ', '.join(f'`{v}`' for v in flag.parser.enum_values)
            lines.append(f'| `--{name}` | {cell(kind)} | {cell(default_text(flag))} | '
                         f'{cell(flag.help)} |')
        lines.append('')
    return '\n'.join(lines)


def main(argv):
    text = render()
    if '--check' in argv:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f'error: {PAGE.relative_to(ROOT)} is out of date; regenerate it with '
                  f'python -m tools.flags_doc', file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f'wrote {PAGE.relative_to(ROOT)}')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
