"""``graph``: DOT source, rendered SVG/PNG, and the fallback when Graphviz is missing."""

import shutil
import struct
import xml.etree.ElementTree as ET

import pytest

from gradcheck_lab import get_model
from gradcheck_lab.teaching import graph

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
SVG = "{http://www.w3.org/2000/svg}"


@needs_dot
def test_quadratic_svg_has_every_node(cli, tmp_path):
    out = tmp_path / "g.svg"
    code, stdout, err = cli("graph", "quadratic", "--out", out)
    assert code == 0, err
    assert stdout == f"wrote {out}\n"
    root = ET.parse(out).getroot()
    assert root.tag == SVG + "svg"
    titles = {t.text for t in root.iter(SVG + "title")}
    assert {"w1", "w2", "b", "x", "y", "n1", "n6", "loss"} <= titles
    texts = [t.text for t in root.iter(SVG + "text")]
    for label in ("n1 = x ** 2", "n2 = w1 * n1", "loss = n6 ** 2", "grad 2", "value 3"):
        assert label in texts, label


@needs_dot
def test_png(cli, tmp_path):
    out = tmp_path / "g.png"
    code, _, err = cli("graph", "affine", "--x", 1, "--y", 2, "--out", out)
    assert code == 0, err
    raw = out.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", raw[16:24])
    assert width > 100 and height > 50


def test_dot_source_without_out(cli):
    code, out, _ = cli("graph", "linear")
    assert code == 0
    assert out.startswith('digraph "linear" {') and "rankdir=LR;" in out
    assert '"w" -> "n1" [label="d 1"];' in out


def test_mlp_is_grouped_by_hidden_unit():
    src = graph(get_model("mlp", H=4)).source
    for j in range(4):
        assert f'subgraph "cluster_{j}"' in src
    assert 'subgraph "cluster_4"' not in src
    block = src.split('subgraph "cluster_2"')[1].split("}")[0]
    assert '"W1[2]"' in block and '"W2[2]"' in block and '"W1[1]"' not in block


def test_missing_dot_writes_the_source_and_says_how_to_render(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    code, out, err = cli("graph", "quadratic", "--out", tmp_path / "g.svg")
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert f"dot -Tsvg {tmp_path / 'g.dot'} -o {tmp_path / 'g.svg'}" in err
    assert (tmp_path / "g.dot").read_text().startswith('digraph "quadratic"')
    assert not (tmp_path / "g.svg").exists()
    code, out, err = cli("graph", "quadratic", "--out", tmp_path / "h.dot")
    assert code == 0 and (tmp_path / "h.dot").exists()


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["graph", "quadratic", "--out", "g.jpg"], "Expected --out to end in"),
        (["graph", "quadratic", "--out", "/nonexistent-dir/g.svg"], "existing directory"),
        (["graph", "nope", "--out", "g.svg"], "Expected a model"),
    ],
)
def test_bad_input_exits_2(cli, argv, fragment):
    code, out, err = cli(*argv)
    assert code == 2 and out == "" and err.startswith("Error: ") and fragment in err
