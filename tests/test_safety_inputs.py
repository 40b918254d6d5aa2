"""Every bad input gives exit 1 and one ``error:`` line naming the file and the problem.

The generic cases run over every registered loader's suffixes and every format in FORMATS,
so a newly registered format is covered the day it is added.
"""

from __future__ import annotations

import os
import random
import shutil

import pytest
from click.testing import CliRunner

from inspector import CorruptCheckpoint, InspectorError, SourceNotFound, UnsupportedSource, inspect
from inspector.cli import main
from inspector.loaders import LOADERS
from tests.helpers import (
    FORMAT_IDS,
    FORMATS,
    SELF_CONTAINED,
    inspected_counts,
    reference_counts,
    state_dict,
)

SUFFIXES = sorted({s for lo in LOADERS for s in lo.suffixes}) + [""]
MAKERS = dict(FORMATS)


def cli_error(*args: str) -> str:
    """Run the command; assert exit 1 and exactly one ``error:`` line; return it."""
    res = CliRunner().invoke(main, [*args, "-q"])
    assert res.exit_code == 1, (res.exit_code, res.output)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)
    return lines[0]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_empty_file(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"")
    assert cli_error(str(path)) == f"error: {path}: file is empty"


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_bytes(tmp_path, suffix, seed):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(random.Random(seed).randbytes(4096))
    line = cli_error(str(path))
    assert line.startswith(f"error: {path}: ")


@pytest.mark.parametrize("fmt", FORMAT_IDS)
def test_truncated(tmp_path, fmt):
    path = MAKERS[fmt](tmp_path)
    data = path.read_bytes()
    for cut in (1, 7, 8, 9, len(data) // 4, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(InspectorError) as info:
            inspect(path)
        assert str(info.value).startswith(f"{path}: "), str(info.value)
    assert cli_error(str(path)).startswith(f"error: {path}: ")


@pytest.mark.parametrize("fmt", SELF_CONTAINED)
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_misnamed_file_is_sniffed_and_read_correctly(tmp_path, fmt, suffix):
    original = MAKERS[fmt](tmp_path)
    renamed = tmp_path / f"renamed{suffix}"
    shutil.copy(original, renamed)
    expected = inspect(original)
    got = inspect(renamed)
    assert got.meta["format"] == expected.meta["format"]
    assert inspected_counts(got) == inspected_counts(expected)


@pytest.mark.parametrize("fmt", ["safetensors", "pytorch-zip", "pytorch-legacy", "safetensors-sharded"])
def test_generated_fixtures_read_as_numpy_says(tmp_path, fmt):
    assert inspected_counts(inspect(MAKERS[fmt](tmp_path))) == reference_counts(state_dict())


def test_safetensors_named_pth_and_zip_named_safetensors(tmp_path):
    st = MAKERS["safetensors"](tmp_path)
    pt = MAKERS["pytorch-zip"](tmp_path)
    shutil.move(st, tmp_path / "weights.pth")
    shutil.move(pt, tmp_path / "weights.safetensors")
    assert inspect(tmp_path / "weights.pth").meta["format"] == "safetensors"
    assert inspect(tmp_path / "weights.safetensors").meta["format"] == "pytorch-zip"
    res = CliRunner().invoke(main, [str(tmp_path / "weights.safetensors")])
    assert res.exit_code == 0 and "pytorch-zip" in res.stdout


@pytest.mark.parametrize("contents", [[], ["README.md", "config.json"], ["a.safetensors", "b.safetensors"]])
def test_directory_without_weights(tmp_path, contents):
    d = tmp_path / "model"
    d.mkdir()
    for name in contents:
        (d / name).write_text("{}")
    line = cli_error(str(d))
    if len(contents) == 2 and contents[0].endswith(".safetensors"):  # which one? refused, both named
        assert line == (f"error: {d}: holds several checkpoints and none is the model directory's own "
                        "(a.safetensors, b.safetensors); name the file to read")
    else:
        assert line.startswith(f"error: {d}: directory holds no checkpoint winspect reads")


def test_missing_paths(tmp_path):
    assert cli_error(str(tmp_path / "nope.safetensors")) == f"error: {tmp_path / 'nope.safetensors'}: no such file or directory"
    with pytest.raises(SourceNotFound, match="no such file"):
        inspect("./missing.pth")
    with pytest.raises(SourceNotFound, match="not a file, directory or torchvision model name"):
        inspect("no_such_model_name")


def test_not_a_regular_file(tmp_path):
    fifo = tmp_path / "pipe.pth"
    os.mkfifo(fifo)
    assert cli_error(str(fifo)) == f"error: {fifo}: not a regular file (a device, pipe or socket)"


def test_unknown_content_and_suffix(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(UnsupportedSource, match=r"notes.txt: not a format winspect reads .* first bytes b'hello'"):
        inspect(path)


@pytest.mark.parametrize("fmt,offset", [("safetensors", 3), ("safetensors", 8), ("pytorch-zip", 0),
                                        ("pytorch-zip", 2), ("pytorch-legacy", 0), ("pytorch-legacy", 2)])
def test_bit_flipped_header(tmp_path, fmt, offset):
    path = MAKERS[fmt](tmp_path)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises((CorruptCheckpoint, UnsupportedSource)) as info:
        inspect(path)
    assert str(info.value).startswith(f"{path}: ")


def test_control_characters_in_file_name_stay_on_one_line(tmp_path):
    path = tmp_path / "bad\x1b[2J\nname.pth"
    path.write_bytes(b"")
    line = cli_error(str(path))
    assert "\x1b" not in line and "\\x1b[2J\\nname.pth: file is empty" in line


def _claim_huge(data: bytes, small: bytes) -> bytes:
    """Replace the first BININT1 ``small`` (a tensor's element count) by 2**31 - 1."""
    at = data.index(small)
    return data[:at] + b"J" + (2**31 - 1).to_bytes(4, "little") + data[at + 2 :]


def test_torch_checkpoints_claiming_huge_tensors_fail_cleanly(tmp_path):
    import zipfile

    import torch

    sd = {"w": torch.arange(6, dtype=torch.float32)}
    torch.save(sd, tmp_path / "l.pt", _use_new_zipfile_serialization=False)
    data = (tmp_path / "l.pt").read_bytes()
    cpu = data.index(b"X\x03\x00\x00\x00cpu")  # ('storage', FloatStorage, key, 'cpu', 6)
    (tmp_path / "l.pt").write_bytes(data[:cpu] + _claim_huge(data[cpu:], b"K\x06"))
    with pytest.raises(CorruptCheckpoint, match="l.pt: storage '.*' holds 6 elements; the pickle says 2147483647"):
        inspect(tmp_path / "l.pt")
    torch.save(sd, tmp_path / "z.pt")
    with zipfile.ZipFile(tmp_path / "z.pt") as z:
        members = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in members if n.endswith("data.pkl"))
    members[pkl] = _claim_huge(members[pkl], b"K\x06\x85")  # the size tuple (6,)
    with zipfile.ZipFile(tmp_path / "z.pt", "w") as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    with pytest.raises(CorruptCheckpoint, match=r"z.pt: not a readable PyTorch checkpoint \(tensor of shape "
                                                 r"\(2147483647,\), strides \(1,\), offset 0 needs 2147483647 elements; "
                                                 r"its storage holds 6\)"):
        inspect(tmp_path / "z.pt")


def test_every_registered_file_format_is_in_the_generic_tests(tmp_path):
    """A loader registered without an entry in FORMATS would escape the fuzz and bad-input tests."""
    from inspector.loaders import choose_loader

    covered = set()
    for name, maker in FORMATS:
        d = tmp_path / name
        d.mkdir()
        covered.add(choose_loader(str(maker(d))).name)
    assert {lo.name for lo in LOADERS if lo.suffixes} <= covered
