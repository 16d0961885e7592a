"""The scan result: where a scan lives, reading its rows and record, the reference reset."""

import json

import pytest

from espnet_ext.scan.result import (
    MODES,
    REINIT,
    RERANDOMIZE,
    ScanResult,
    ScanResultError,
    ScanRow,
    find_scan_dirs,
    reference_variant,
    rows_of_variant,
    scan_dir,
    scan_dir_name,
    write_tsv,
)


def _row(dataset, group, mode, value, label="ambient", delta=0.0):
    return ScanRow(dataset, group, "enc_block", None, None, mode,
                   value if mode == REINIT else None, value if mode == RERANDOMIZE else None,
                   20.0, 10.0 + delta, 0.0, delta, label)


def _write_scan(d, rows, meta=None):
    d.mkdir(parents=True, exist_ok=True)
    write_tsv(d / "scan.tsv", rows)
    if meta is not None:
        (d / "scan.json").write_text(json.dumps(meta))
    return d


def test_modes_and_scan_dir_names(tmp_path):
    assert MODES == (REINIT, RERANDOMIZE) == ("reinit", "rerandomize")
    assert scan_dir_name("block", "dev") == "scan_block_dev"
    assert scan_dir(tmp_path, "submodule", "test") == tmp_path / "scan_submodule_test"


def test_find_scan_dirs_lists_only_dirs_with_a_scan_tsv(tmp_path):
    _write_scan(tmp_path / "scan_block_test", [_row("test", "g", REINIT, 0)])
    _write_scan(tmp_path / "scan_block_dev", [_row("dev", "g", REINIT, 0)])
    _write_scan(tmp_path / "scan_submodule_dev", [_row("dev", "g", REINIT, 0)])
    (tmp_path / "scan_block_empty").mkdir()
    assert find_scan_dirs(tmp_path, "block") == [tmp_path / "scan_block_dev", tmp_path / "scan_block_test"]
    assert [d.name for d in find_scan_dirs(tmp_path)] == ["scan_block_dev", "scan_block_test",
                                                         "scan_submodule_dev"]


def test_reference_variant_is_the_smallest_tau_else_the_first_seed():
    rows = [_row("dev", "g", REINIT, 5), _row("dev", "g", REINIT, 2), _row("dev", "g", RERANDOMIZE, 7)]
    assert reference_variant(rows) == (REINIT, 2)
    assert reference_variant([_row("dev", "g", RERANDOMIZE, 9), _row("dev", "g", RERANDOMIZE, 3)]) \
        == (RERANDOMIZE, 9)
    assert reference_variant([]) is None
    assert rows_of_variant(rows, REINIT, 2) == [rows[1]]


def test_load_reads_rows_identity_summary_and_baseline(tmp_path):
    rows = [_row(ds, g, m, v, label="critical" if g == "b" else "ambient")
            for ds in ("dev", "test") for g in ("a", "b") for m, v in ((REINIT, 0), (REINIT, 3), (RERANDOMIZE, 1))]
    meta = {"granularity": "block", "scoring": "ctc_greedy", "datasets": ["dev", "test"],
            "baseline": {"dev": {"WER": 20.0, "CER": 10.0}, "test": {"WER": 21.0, "CER": 11.0}},
            "summary": ["dev: 1 of 2 groups ambient", "test: 1 of 2 groups ambient"],
            "options": {"criterion": {"metric": "cer"}}, "status": "done"}
    d = _write_scan(tmp_path / "scan_block_dev", rows, meta)
    scan = ScanResult.load(d)
    assert scan.path == d
    assert (scan.granularity, scan.scoring, scan.datasets, scan.dataset) == ("block", "ctc_greedy",
                                                                            ["dev", "test"], "dev")
    assert scan.rows == rows
    assert scan.summary == meta["summary"]
    assert scan.baseline["test"]["CER"] == 11.0
    assert scan.criterion == {"metric": "cer"}
    assert scan.finished
    assert scan.reference_variant("test") == (REINIT, 0)
    ref = scan.reference_rows("test")
    assert [(r.dataset, r.group, r.tau) for r in ref] == [("test", "a", 0), ("test", "b", 0)]
    assert ScanResult.load(d / "scan.tsv").rows == rows  # the file itself names the scan too


def test_identity_of_a_scan_json_written_before_it_recorded_it(tmp_path):
    meta = {"identity": {"granularity": "submodule", "scoring": "beam",
                         "data_dirs": ["/data/dev_clean", "/data/test_clean"]}, "status": "running"}
    scan = ScanResult.load(_write_scan(tmp_path / "s", [_row("dev_clean", "g", REINIT, 0)], meta))
    assert (scan.granularity, scan.scoring) == ("submodule", "beam")
    assert scan.datasets == ["dev_clean", "test_clean"]
    assert not scan.finished


def test_rows_without_scan_json_are_readable(tmp_path):
    scan = ScanResult.load(_write_scan(tmp_path / "s", [_row("dev", "g", RERANDOMIZE, 4)]))
    assert (scan.granularity, scan.scoring, scan.status) == (None, None, None)
    assert scan.datasets == ["dev"] and scan.summary == [] and scan.baseline == {}
    assert scan.reference_rows("dev")[0].seed == 4
    assert scan.reference_rows("eval") == [] and scan.reference_variant("eval") is None


def test_errors_say_what_where_and_how(tmp_path):
    with pytest.raises(ScanResultError, match=r"scan result .*missing.*scan.tsv not found; run the layer-reset scan"):
        ScanResult.load(tmp_path / "missing")
    d = tmp_path / "bad"
    d.mkdir()
    (d / "scan.tsv").write_text("a\tb\n")
    with pytest.raises(ScanResultError, match="not a scan.tsv"):
        ScanResult.load(d)
    d = _write_scan(tmp_path / "s", [_row("dev", "g", REINIT, 0)])
    (d / "scan.json").write_text("{not json")
    with pytest.raises(ScanResultError, match="scan.json is not JSON"):
        ScanResult.load(d)
    (d / "scan.json").write_text("{}")
    with pytest.raises(ScanResultError, match="no rows for dataset 'eval'; datasets: dev"):
        ScanResult.load(d).check_dataset("eval")
    assert issubclass(ScanResultError, ValueError)
