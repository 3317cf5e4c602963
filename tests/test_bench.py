"""The benchmark suite's timing protocol (no timings are asserted)."""

import io
import json

import pytest

from fastconv import bench


def test_side_by_side_takes_turns_in_rounds(monkeypatch):
    monkeypatch.setattr(bench.time, "sleep", lambda seconds: None)
    calls = []
    steps = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    times = bench.side_by_side(steps, repeats=2, rounds=3)
    assert set(times) == {"a", "b", "c"}
    assert all(t >= 0 for t in times.values())
    # each round times every step in one block, in turn: a..a b..b c..c, three times
    blocks = [calls[0]]
    for name in calls[1:]:
        if name != blocks[-1]:
            blocks.append(name)
    assert blocks == ["a", "b", "c"] * 3


@pytest.mark.parametrize("option", ["--rounds", "--repeats"])
@pytest.mark.parametrize("value", ["0", "-2"])
def test_bench_rejects_non_positive_counts(option, value, capsys):
    with pytest.raises(SystemExit):
        bench.main([option, value, "--cases", "lenet1"])
    assert "positive integer" in capsys.readouterr().err


def test_table_shows_each_convolution_against_the_fma_peak():
    """%fma is a convolution's rate over the run's FMA peak, and the summary
    gives the reference ratio every direct convolution would have at that
    peak (winograd's effective rates are not bounded by it)."""
    machine = {"gemm_gflops_float32": 90.0, "gemm_gflops_float64": 45.0, "copy_gbs": 20.0,
               "fma_gflops_float32": 100.0, "fma_gflops_float64": 50.0,
               "ukernel_gflops_float32": 95.0, "ukernel_gflops_float64": 48.0}

    def row(case, kind, rate, unit, vs_reference, path="implicit"):
        return {"case": case, "kind": kind, "dtype": "float32", "threads": 1, "time_s": 1e-3,
                "rate": rate, "unit": unit, "vs_reference": vs_reference, "vs_torch": None,
                "peak_bytes": 2**20, "path": path}

    result = {"fastconv": "x", "numpy": "x", "torch": None, "rounds": 1, "repeats": 1,
              "processor": "cpu", "cores": 1, "isa": "avx2", "machine": {"1": machine},
              "rows": [row("a", "conv", 50.0, "GFLOP/s", 2.0),
                       row("b", "conv", 25.0, "GFLOP/s", 2.0),
                       row("p", "pool_max", 10.0, "GB/s", 8.0)]}
    lines = bench.format_table(result).splitlines()
    cells = {line.split()[0]: line.split() for line in lines if line[:2] in ("a ", "b ", "p ")}
    assert cells["a"][7] == "50%" and cells["b"][7] == "25%" and cells["p"][7] == "-"
    # geomean of 2, 2 and 8 is 3.17; of the convolutions 2.00; at the peak
    # they would be 2/0.5 = 4 and 2/0.25 = 8, geomean 5.66
    assert lines[-1] == ("geometric mean, float32, 1 thread(s): x numpy 3.17, x torch nan; "
                         "convolutions x numpy 2.00 (2 direct: 2.00, 5.66 at the FMA peak)")
    assert not any(line.startswith("winograd:") for line in lines)
    # a winograd row at 120% of the peak: counted with the convolutions,
    # not in the ceiling, and the table says why its rate passes the peak
    result["rows"].append(row("w", "conv", 120.0, "GFLOP/s", 4.0, "winograd"))
    lines = bench.format_table(result).splitlines()
    assert any(line.startswith("winograd: rates count the direct sum") for line in lines)
    # convolutions: geomean of 2, 2 and 4 is 2.52
    assert lines[-1] == ("geometric mean, float32, 1 thread(s): x numpy 3.36, x torch nan; "
                         "convolutions x numpy 2.52 (2 direct: 2.00, 5.66 at the FMA peak)")


@pytest.mark.parametrize("cpuinfo, slug", [
    ({"vendor_id": "AuthenticAMD", "cpu family": "25", "model": "1",
      "model name": "AMD EPYC 7B13 64-Core Processor"}, "epyc-7b13-zen3"),
    ({"vendor_id": "AuthenticAMD", "cpu family": "26", "model": "2",
      "model name": "AMD EPYC Processor"}, "epyc-zen5"),
    # a virtual machine's Intel name hides the core: family and model tell it
    ({"vendor_id": "GenuineIntel", "cpu family": "6", "model": "167",
      "model name": "Intel(R) Xeon(R) Processor"}, "xeon-f6m167"),
    ({"vendor_id": "GenuineIntel", "cpu family": "6", "model": "85",
      "model name": "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz"}, "xeon-gold-f6m85"),
])
def test_cpu_slug_names_the_core(monkeypatch, cpuinfo, slug):
    text = "".join(f"{key}\t: {value}\n" for key, value in cpuinfo.items())
    monkeypatch.setattr(bench, "open", lambda path: io.StringIO(text), raising=False)
    assert bench.cpu_slug() == slug


def test_bench_writes_json_only_where_asked(monkeypatch, tmp_path):
    result = {"fastconv": "x", "numpy": "x", "torch": None, "rounds": 1, "repeats": 1,
              "processor": "cpu", "cpu": "test-cpu", "cores": 1, "isa": "avx2",
              "machine": {}, "rows": []}
    monkeypatch.setattr(bench, "run", lambda *args: result)
    monkeypatch.chdir(tmp_path)
    assert bench.main(["--cases", "lenet1"]) == 0
    assert list(tmp_path.iterdir()) == []
    assert bench.main(["--cases", "lenet1", "--json", "out.json", "--save", "."]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out.json", "results-test-cpu-avx2.json", "results-test-cpu-avx2.txt"]
    assert json.loads((tmp_path / "out.json").read_text())["cpu"] == "test-cpu"
    assert bench.main(["--cases", "lenet1", "--save", "new/dir"]) == 0
    assert sorted(p.name for p in (tmp_path / "new" / "dir").iterdir()) == [
        "results-test-cpu-avx2.json", "results-test-cpu-avx2.txt"]
