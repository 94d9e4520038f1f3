"""`rmt-lab trace`: a trace folder from the command line, and clear errors."""

from rmt_lab.cli import main
from rmt_lab.trace import Trace


def test_trace_command_writes_a_loadable_folder(tmp_path, capsys):
    out = tmp_path / "trace"
    code = main(["trace", "--backbone", "tiny-bert", "--num-mem", "4", "--segment-size", "32", "--task",
                 "detect_memorize", "--segments", "5", "--samples", "2", "--maps", "facts,last", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "traced 2 detect_memorize sample(s)" in printed and "write_precision" in printed
    trace = Trace.load(out)
    assert trace.n_segments == 5 and trace.batch == 2 and 4 in trace.map_segments


def test_trace_command_errors(tmp_path, capsys):
    assert main(["trace", "--backbone", "tiny-bert", "--segment-size", "32"]) == 2
    assert "--out is required" in capsys.readouterr().err
    code = main(["trace", "--backbone", "tiny-bert", "--num-mem", "4", "--segment-size", "32", "--layers", "5",
                 "--out", str(tmp_path / "t")])
    assert code == 2 and "layer [5] does not exist" in capsys.readouterr().err
    code = main(["trace", "--backbone", "tiny-bert", "--segment-size", "32", "--maps", "every:x",
                 "--out", str(tmp_path / "t")])
    assert code == 2 and "TraceConfig.segments" in capsys.readouterr().err
