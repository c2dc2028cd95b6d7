"""docs/api.md's examples run as written: every ```python block of the page, in order, in one
namespace, in a temporary working folder (so its relative savedirs land there)."""
import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / 'docs' / 'api.md'


def test_the_api_page_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r'```python\n(.*?)```', PAGE.read_text(), re.S)
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in blocks:
        exec(compile(block, str(PAGE), 'exec'), namespace)
    # The runs wrote what the command line writes.
    run = tmp_path / 'runs' / 'api_maml'
    assert (run / 'meta_train.log').exists() and (run / 'meta_test.json').exists()
    assert list(run.glob('model-*.index'))
    assert re.search(r'\d+\.\d \+- \d+\.\d % on 60 episodes', capsys.readouterr().out)
