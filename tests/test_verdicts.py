"""The verdict vocabulary: a module of its own that imports nothing of the package."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import gradcheck_lab.compare as compare
import gradcheck_lab.report as report
import gradcheck_lab.verdicts as verdicts

VOCABULARY = ["AGREE", "MISMATCH", "UNSTABLE", "NOT_JUDGED", "KINK", "CLASSES", "PRIORITY", "REASONS"]


def test_importing_verdicts_loads_no_other_module_of_the_package():
    code = (
        "import sys; import gradcheck_lab.verdicts; "
        "print(sorted(m for m in sys.modules if m.startswith('gradcheck_lab')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['gradcheck_lab', 'gradcheck_lab.verdicts']"


def test_verdicts_imports_nothing_of_the_package():
    tree = ast.parse(Path(verdicts.__file__).read_text(encoding="utf-8"))
    imported = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert all(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in imported)


def test_compare_and_report_use_the_same_objects():
    for name in VOCABULARY:
        assert getattr(compare, name) is getattr(verdicts, name), name
    for name in ("AGREE", "MISMATCH", "UNSTABLE", "CLASSES", "PRIORITY"):
        assert getattr(report, name) is getattr(verdicts, name), name
    assert set(VOCABULARY) <= set(compare.__all__)


def test_report_no_longer_imports_compare():
    from test_imports import import_graph

    graph = import_graph()
    assert "gradcheck_lab.compare" not in graph["gradcheck_lab.report"]
    assert "gradcheck_lab.verdicts" in graph["gradcheck_lab.report"]
    assert "gradcheck_lab.verdicts" in graph["gradcheck_lab.compare"]
    assert graph["gradcheck_lab.verdicts"] == set()


def test_the_vocabulary():
    assert sorted(verdicts.CLASSES) == sorted(verdicts.PRIORITY) == list(range(5))
    assert verdicts.CLASSES[verdicts.NOT_JUDGED] == "not_judged"
    assert verdicts.PRIORITY[0] == verdicts.MISMATCH and verdicts.PRIORITY[-1] == verdicts.AGREE
    note = verdicts.not_judged_note("range", 2)
    assert note == "2 component(s) not judged for some engine: " + verdicts.REASONS["range"] + "."
