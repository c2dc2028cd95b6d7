"""The documentation's links resolve: every relative link names a file of the repository, and every
#anchor a heading of its target (GitHub's slugs)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / 'README.md', ROOT / 'benchmarks' / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
LINK = re.compile(r'(?<!\!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)')


def github_slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation but '-' and '_' dropped, spaces -> '-'."""
    text = re.sub(r'`|\*\*|\[([^\]]*)\]\([^)]*\)', lambda m: m.group(1) or '', heading.strip())
    text = text.lower()
    text = re.sub(r'[^\w\- ]', '', text)
    return text.replace(' ', '-')


def anchors(path):
    """The anchors of a markdown file's headings (outside code blocks), with GitHub's -1, -2 suffixes."""
    seen, result, fence = {}, set(), False
    for line in path.read_text().splitlines():
        if line.startswith('```'):
            fence = not fence
        match = None if fence else re.match(r'^#{1,6} (.*)', line)
        if match:
            slug = github_slug(match.group(1))
            count = seen.get(slug, 0)
            result.add(slug if count == 0 else f'{slug}-{count}')
            seen[slug] = count + 1
    return result


def links(path):
    fence = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith('```'):
            fence = not fence
            continue
        if fence:
            continue
        line = re.sub(r'`[^`]*`', '', line)  # code spans are not links
        for match in LINK.finditer(line):
            yield number, match.group(1) or match.group(2)


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(doc):
    broken = []
    for number, target in links(doc):
        if re.match(r'^[a-z]+:', target):  # http(s):, mailto: - not checked offline
            continue
        file_part, _, anchor = target.partition('#')
        destination = (doc.parent / file_part).resolve() if file_part else doc
        if not destination.exists():
            broken.append(f'{doc.name}:{number}: {target} (no such file)')
        elif anchor and destination.suffix == '.md' and anchor not in anchors(destination):
            broken.append(f'{doc.name}:{number}: {target} (no heading #{anchor})')
    assert not broken, '\n'.join(broken)


def test_slugs_follow_github():
    assert github_slug('Bayesian TAML (Learning to Balance)') == 'bayesian-taml-learning-to-balance'
    assert github_slug('Hard-task meta-batch (`--hard_task`)') == 'hard-task-meta-batch---hard_task'
    assert github_slug('LEO (Latent Embedding Optimization)') == 'leo-latent-embedding-optimization'


def test_a_broken_link_is_found(tmp_path):
    page = tmp_path / 'page.md'
    page.write_text('# Title\n\n[ok](#title) [bad](#nothing) [gone](missing.md) `[code](x.md)`\n')
    found = [target for _, target in links(page)]
    assert found == ['#title', '#nothing', 'missing.md']
    assert anchors(page) == {'title'}


def test_readme_is_a_landing_page():
    assert len((ROOT / 'README.md').read_text().splitlines()) <= 300


def test_flag_reference_is_current():
    """docs/flags.md is what tools/flags_doc.py makes of main.py's flags now."""
    from tools import flags_doc
    page = ROOT / 'docs' / 'flags.md'
    assert page.read_text() == flags_doc.render(), \
        'docs/flags.md is out of date: run python -m tools.flags_doc'
    documented = set(re.findall(r'^\| `--(\w+)`', page.read_text(), re.M))
    own = {name for _, names in flags_doc.sections() for name in names}
    assert len(own) > 100 and own == documented
