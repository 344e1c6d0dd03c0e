"""The command line's own parsing (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.cli import build_parser


def test_a_rename_without_an_equals_sign_is_a_usage_error_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["replay", "c.jsonl.gz", "--rename", "a=b"]).rename == [("a", "b")]
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["replay", "c.jsonl.gz", "--rename", "transactions"])
    assert exited.value.code == 2 and "is not OLD=NEW" in capsys.readouterr().err


def test_clicks_imported_from_the_epoch_start_there(tmp_path: Path) -> None:
    from streamer.cli import main
    from streamer.replay.capture_file import read_capture

    data, out = tmp_path / "seq.txt", tmp_path / "clicks.jsonl.gz"
    data.write_text("1 10 11\n")
    assert main(["import", "sequences", "--data", str(data), "--out", str(out), "--start", "1970-01-01T00:00:00Z"]) == 0
    assert [r.timestamp for r in read_capture(out)] == [0, 60_000]  # not the default start of 2018-08-01


@pytest.mark.parametrize("argv", [
    ["capture", "--topics", "transactions", "--out", "c.jsonl.gz", "--from-time", "2018-08-01"],
    ["import", "fraud", "--data", "d.csv", "--out", "c.jsonl.gz", "--end", "yesterday"],
])
def test_a_time_that_is_not_rfc_3339_is_a_usage_error_not_a_traceback(argv: list[str],
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2 and "is not RFC 3339" in capsys.readouterr().err
    assert build_parser().parse_args(argv[:-1] + ["2018-08-01T00:00:00Z"]).__dict__[argv[-2].lstrip("-").replace("-", "_")] \
        == 1533081600000
