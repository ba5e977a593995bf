"""docs/lesson.md shows real output: every ``$ gradcheck-lab ...`` block is rerun and compared.

A block may elide lines with ``...``: its segments must then appear in the
output in order, each as consecutive lines.
"""

import re
import shlex
from pathlib import Path

import pytest

LESSON = Path(__file__).resolve().parents[1] / "docs" / "lesson.md"


def console_blocks():
    text = LESSON.read_text()
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        first, *expected = block.rstrip("\n").split("\n")
        assert first.startswith("$ gradcheck-lab ")
        yield pytest.param(shlex.split(first[2:])[1:], expected, id=first[16:60])


def contains_in_order(lines, segment, start):
    for i in range(start, len(lines) - len(segment) + 1):
        if lines[i : i + len(segment)] == segment:
            return i + len(segment)
    return None


@pytest.mark.parametrize("argv, expected", list(console_blocks()))
def test_lesson_output_is_real(cli, tmp_path, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(*argv)
    assert code in (0, 1), err
    lines = out.rstrip("\n").split("\n")
    if "..." not in expected:
        assert lines == expected
        return
    segments, seg = [], []
    for line in expected:
        if line == "...":
            segments.append(seg)
            seg = []
        else:
            seg.append(line)
    segments.append(seg)
    assert lines[: len(segments[0])] == segments[0]
    assert lines[len(lines) - len(segments[-1]) :] == segments[-1]
    pos = 0
    for seg in segments:
        pos = contains_in_order(lines, seg, pos)
        assert pos is not None, seg
