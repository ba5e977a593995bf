"""docs/torch.md stays true: the op table is the interpreter's, the migration transcripts are real."""

import re
import subprocess
import sys
from pathlib import Path

from gradcheck_lab.torch_graph import op_table

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "torch.md").read_text(encoding="utf-8")
EXAMPLES = ROOT / "docs" / "examples"


def test_supported_op_table_is_generated_from_the_interpreter():
    section = DOC[DOC.index("| aten op | meaning |") :]
    section = section[: section.index("\n\n")]
    rows = re.findall(r"^\| `([^`]+)` \| (.*) \|$", section, re.M)
    assert rows == op_table()


def _transcripts():
    blocks = re.findall(r"```text\n\$ pytest -q docs/examples/test_torch_migration.py(.*?)\n(.*?)```", DOC, re.S)
    ours = next(body for head, body in blocks if "torch.autograd" not in head)
    torch_ = next(body for head, body in blocks if "torch.autograd" in head)
    return ours, torch_


def test_migration_file_run_with_torch_matches_the_transcript(tmp_path):
    source = (EXAMPLES / "test_torch_migration.py").read_text(encoding="utf-8")
    switched = re.sub(r"^from gradcheck_lab import gradcheck.*$", "from torch.autograd import gradcheck", source, flags=re.M)
    assert switched != source
    (tmp_path / "test_torch_migration.py").write_text(switched, encoding="utf-8")
    (tmp_path / "custom_functions.py").write_text((EXAMPLES / "custom_functions.py").read_text(encoding="utf-8"))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", "-o", "addopts=",
         "test_torch_migration.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    failed = sorted(re.findall(r"^FAILED (\S+)", run.stdout, re.M))
    ours, shown = _transcripts()
    assert failed == sorted(re.findall(r"^FAILED (\S+)", shown, re.M)), run.stdout[-2000:]
    summary = re.search(r"(\d+) failed, (\d+) passed", run.stdout)
    assert summary and summary.group(0) in shown
    # with gradcheck_lab every test passes (the suite itself runs the file from docs/examples)
    total = int(summary.group(1)) + int(summary.group(2))
    assert f"{total} passed" in ours
