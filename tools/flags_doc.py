"""Writes docs/flags.md, the reference of every main.py flag, from the absl definitions themselves.

    python -m tools.flags_doc            # rewrite docs/flags.md
    python -m tools.flags_doc --check    # exit 1 (naming the file) when it is out of date

The sections are main.py's own `# --- title ---` comments, in its order; defaults and help strings
are read from the registered flags, so the page cannot drift from the code (tests/test_docs.py runs
the check).
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / 'docs' / 'flags.md'
SECTION = re.compile(r'^# --- (.*?) ---\s*$')
DEFINITION = re.compile(r"""^\s*flags\.DEFINE_\w+\(\s*['"](\w+)['"]""")


def sections():
    """[(title, [flag names])] in main.py's order, from its section comments and definitions."""
    result = [('General', [])]
    for line in (ROOT / 'main.py').read_text().splitlines():
        if SECTION.match(line):
            result.append((SECTION.match(line).group(1), []))
        elif DEFINITION.match(line):
            result[-1][1].append(DEFINITION.match(line).group(1))
    return [(title, names) for title, names in result if names]


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
             'Every flag of `python main.py`, generated from the definitions in `main.py` by',
             '`python -m tools.flags_doc` (a test fails when this page is out of date). Which flags',
             'a method uses and what they mean in context: [usage.md](usage.md) and each method\'s page.',
             'Boolean flags are given as `--name` / `--noname`.', '']
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
