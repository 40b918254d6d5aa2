"""The HDF5 mutation fuzz (tests/hdf5_fuzz.py) at a size for CI; the full run is recorded in docs/safety.md."""

from __future__ import annotations

import shutil

from tests import hdf5_fuzz

MUTANTS_PER_FIXTURE = 8


def test_hdf5_mutation_fuzz(tmp_path):
    trace = shutil.which("strace") is not None
    report = hdf5_fuzz.run(hdf5_fuzz.FIXTURES, MUTANTS_PER_FIXTURE, 2, 300.0, tmp_path, trace)
    for fixture, counts in report["results"].items():
        assert sum(counts.values()) == MUTANTS_PER_FIXTURE, (fixture, counts)
        assert not any(counts.get(k) for k in hdf5_fuzz.FAILURES), (fixture, counts, report["examples"])
    assert not report["outside"]


def test_mutations_are_reproducible_and_change_the_file():
    data = (hdf5_fuzz.ROOT / "fixtures" / "digits_keras_legacy.h5").read_bytes()
    a = hdf5_fuzz.mutate(data, hdf5_fuzz.case_seed("digits_keras_legacy.h5", 3))
    assert a == hdf5_fuzz.mutate(data, hdf5_fuzz.case_seed("digits_keras_legacy.h5", 3))
    assert len(a) == len(data) and a != data


def test_outside_reads_are_detected(tmp_path):
    """The strace check names a file opened beside the case files, and ignores the case's own files."""
    work = tmp_path / "work"
    case = work / "digits_keras_legacy.h5.0"
    trace = tmp_path / "strace.0"
    trace.write_text(
        f'11 openat(AT_FDCWD, "{case}/digits_keras_legacy.h5", O_RDONLY|O_CLOEXEC) = 3\n'
        f'11 openat(AT_FDCWD, "{case}/.tensors.csv.x1y2.tmp", O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, 0600) = 4\n'
        '12 openat(AT_FDCWD, "/home/user/.ssh/id_rsa", O_RDONLY) = 5\n'
        f'12 open("{work}/secret", O_RDONLY) = -1 ENOENT (No such file or directory)\n'
    )
    found = hdf5_fuzz.outside_reads([trace], work, hdf5_fuzz.FIXTURES)
    assert found == sorted(["/home/user/.ssh/id_rsa", f"{work}/secret"])
