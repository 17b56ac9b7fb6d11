"""Typed records at the seams: metrics, architecture records, Pareto records, compare rows and
table rows go to JSON and back unchanged, the files on disk stay byte for byte what they were,
and a malformed dict is refused with a DataError naming the bad key."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robustnas.plugins.bench import load_benchmark, pack_table, read_rows
from robustnas.plugins.bench._table import DATA_DIR, Benchmark, TableRow
from robustnas.plugins.compare import CompareConfig, CompareRow, RunFolder, compare
from robustnas.plugins.errors import DataError
from robustnas.plugins.evaluator import METRIC_KEYS, EvaluatorConfig, Metrics, RobustnessEvaluator, metrics_from_dict
from robustnas.plugins.report import summarise
from robustnas.search_spaces import ArchitectureRecord, build_model, get_space, load_record, random_sample, save_record
from robustnas.strategies.pareto import ParetoArchive, ParetoRecord

REPO = Path(__file__).resolve().parents[2]
#: Committed: a benchmark's retrained architectures (records and the evaluator's metrics).
QUALITY = REPO / "benchmarks" / "results" / "quality_digits.json"
#: Committed: the shipped robust201-digits table.
PACKED = DATA_DIR / "robust201-digits.json.gz"


@pytest.fixture(scope="module")
def quality_rows() -> list[dict]:
    return json.loads(QUALITY.read_text())["results"]["groups"][0]["rows"]


def _same_output(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a.eval(), b.eval()
    with torch.no_grad():
        return torch.equal(a(x), b(x))


# ---------------------------------------------------------------------- metrics
def test_the_metrics_of_evaluate_on_digits_round_trip_through_json():
    space = get_space("robust201", input_shape=(1, 8, 8), num_classes=10, width=8, cells_per_stage=1)
    record = ArchitectureRecord.from_space(space, random_sample(space, seed=0))
    config = EvaluatorConfig(dataset="digits", recipe="standard", epochs=1, batch_size=64, n_examples=16,
                             latency_repeats=2, device="cpu", progress=False)
    torch.manual_seed(0)
    metrics = RobustnessEvaluator(config).evaluate(record.build())
    assert set(METRIC_KEYS) <= set(Metrics.__annotations__) and set(METRIC_KEYS) <= set(metrics)
    assert metrics_from_dict(metrics) == metrics
    assert json.loads(json.dumps(metrics_from_dict(metrics))) == metrics
    assert 0.0 <= metrics["robust_acc"] <= 1.0 and 0.2 < metrics["clean_acc"] <= 1.0  # trained: above chance
    assert (metrics["dataset"], metrics["recipe"], metrics["epochs"]) == ("digits", "standard", 1)
    # NumPy scalars (as strategies produce them) become plain numbers; extra keys are kept.
    mixed = {**metrics, "clean_acc": np.float32(0.5), "params": np.int64(12), "jacobian_norm": 3.5}
    plain = metrics_from_dict(mixed)
    assert type(plain["clean_acc"]) is float and type(plain["params"]) is int and plain["jacobian_norm"] == 3.5
    json.dumps(plain)


def test_committed_metrics_are_read_back_unchanged(quality_rows):
    read = [row[key] for row in quality_rows for key in ("metrics", "search_metrics") if row.get(key)]
    assert len(read) > len(quality_rows)
    for metrics in read:
        assert metrics_from_dict(metrics) == metrics
        assert json.dumps(metrics_from_dict(metrics)) == json.dumps(metrics)


def test_malformed_metrics_are_refused_naming_the_key():
    with pytest.raises(DataError, match=r"metrics\['clean_acc'\] must be a number in \[0, 1\] or None, got 'high'"):
        metrics_from_dict({"clean_acc": "high"})
    with pytest.raises(DataError, match=r"metrics\['params'\] must be a number >= 0"):
        metrics_from_dict({"params": -3})
    with pytest.raises(DataError, match=r"row\['metrics'\]\['flags'\] must be a list of strings"):
        metrics_from_dict({"flags": "none"}, "row['metrics']")
    with pytest.raises(DataError, match="must be a mapping.*metric keys: clean_acc, robust_acc"):
        metrics_from_dict([0.9, 0.4])


# ---------------------------------------------------------------------- architecture records
def test_committed_architecture_records_round_trip_and_rebuild(quality_rows, tmp_path):
    for row in quality_rows:
        record = ArchitectureRecord.from_dict(row["record"])
        assert record.to_dict() == row["record"]
        assert json.dumps(record.to_dict()) == json.dumps(row["record"])  # key order too
    record = ArchitectureRecord.from_dict(quality_rows[0]["record"])
    # save_record writes the same bytes for the dataclass and for its dict; load_record reads the dict.
    save_record(record, tmp_path / "typed.json")
    save_record(quality_rows[0]["record"], tmp_path / "plain.json")
    assert (tmp_path / "typed.json").read_bytes() == (tmp_path / "plain.json").read_bytes()
    assert ArchitectureRecord.from_dict(load_record(tmp_path / "typed.json")) == record
    # build_model takes either form, and a dict that carries more than the record (a search entry).
    torch.manual_seed(0)
    typed = build_model(record)
    torch.manual_seed(0)
    plain = build_model({**quality_rows[0]["record"], "name": "ARNAS"})
    assert _same_output(typed, plain)


def test_a_record_from_a_space_is_export_records_dict():
    space = get_space("robust201", input_shape=(1, 8, 8), num_classes=10, width=8, cells_per_stage=1)
    sample = random_sample(space, seed=3)
    record = ArchitectureRecord.from_space(space, sample)
    assert record.space == "robust201" and record.format == 1 and record.kwargs["input_shape"] == [1, 8, 8]
    assert ArchitectureRecord.from_dict(record.to_dict()) == record
    torch.manual_seed(0)
    first = record.build()
    torch.manual_seed(0)
    assert _same_output(first, build_model(record.to_dict()))


def test_malformed_architecture_records_are_refused_naming_the_key(quality_rows):
    good = quality_rows[0]["record"]
    with pytest.raises(DataError, match=r"lacks key\(s\) \['sample'\]; a record has \['space', 'kwargs', 'sample'\]"):
        ArchitectureRecord.from_dict({"space": "arnas", "kwargs": {}})
    with pytest.raises(DataError, match=r"unknown key\(s\) \['name'\]; a record has"):
        ArchitectureRecord.from_dict({**good, "name": "ARNAS"})
    with pytest.raises(DataError, match="format 2 is not supported; supported: \\[1\\]"):
        ArchitectureRecord.from_dict({**good, "format": 2})
    with pytest.raises(DataError, match=r"record\['space'\] must be the name of a registered space, got None"):
        ArchitectureRecord.from_dict({**good, "space": None})
    with pytest.raises(DataError, match=r"record\['kwargs'\] must be a dict"):
        build_model({**good, "kwargs": [1, 8, 8]})


# ---------------------------------------------------------------------- Pareto records
def _archive_inputs(quality_rows: list[dict]) -> list[dict]:
    """Archive records as strategies add them: sample and metrics, plus a key of their own,
    in the key order each strategy uses (TAM-NAS puts ``generation`` last, NNI's records lead
    with the trial)."""
    inputs = []
    for number, row in enumerate(quality_rows):
        sample, metrics = row["record"]["sample"], row["metrics"]
        if number % 2:
            inputs.append({"trial": number, "sample": sample, "metrics": metrics})
        else:
            inputs.append({"sample": sample, "metrics": {**metrics, "params": np.int64(metrics["params"])},
                           "generation": number})
    return inputs


def test_an_archive_of_pareto_records_writes_the_json_it_wrote_as_dicts(quality_rows, tmp_path):
    inputs = _archive_inputs(quality_rows)
    archive = ParetoArchive(("clean_acc", "robust_acc", "params"))
    archive.extend(inputs)
    plain = [json.loads(json.dumps(record, default=int)) for record in inputs]  # NumPy ints to ints
    # What the archive stored as plain dicts: the JSON copy of each input, keys in the input's order.
    assert archive.records == plain
    assert [list(r) for r in archive.records] == [list(r) for r in inputs]
    text = archive.to_json(str(tmp_path / "archive.json"))
    assert text == json.dumps({"objectives": list(archive.objectives), "records": plain, "front": archive.front()},
                              indent=2)
    assert (tmp_path / "archive.json").read_text() == text
    restored = ParetoArchive.from_json(str(tmp_path / "archive.json"))
    assert restored.to_json() == text and restored.hypervolume() == archive.hypervolume() > 0
    # A typed record goes in as well as its dict, and gives the same dict back.
    typed = ParetoRecord.from_dict(inputs[1])
    assert typed.extra == {"trial": 1} and typed.to_dict() == plain[1]
    other = ParetoArchive(archive.objectives)
    assert other.add(typed) == plain[1] and other.records == [plain[1]]


def test_malformed_pareto_records_are_refused_naming_the_key():
    with pytest.raises(DataError, match=r"needs 'sample' and 'metrics' keys, got \['sample'\]"):
        ParetoRecord.from_dict({"sample": {"a": 1}})
    with pytest.raises(DataError, match=r"record\['metrics'\] must be a dict of metric values, got list"):
        ParetoRecord.from_dict({"sample": {"a": 1}, "metrics": [0.9]})
    with pytest.raises(DataError, match="needs 'sample' and 'metrics'"):
        ParetoArchive().add({"metrics": {"clean_acc": 0.9, "robust_acc": 0.1, "params": 3}})


# ---------------------------------------------------------------------- table rows
def test_the_shipped_tables_rows_round_trip_and_repack_to_the_same_bytes(tmp_path):
    with gzip.open(PACKED, "rt") as handle:
        packed = json.load(handle)
    rows = packed["rows"]
    assert len(rows) > 100
    for row in rows:
        assert TableRow.from_dict(row).to_dict() == row
    folder = tmp_path / "build"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps(packed["meta"], indent=2) + "\n")
    (folder / "rows.jsonl").write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
    dest = pack_table(folder, tmp_path / "repacked.json.gz")
    with gzip.open(dest, "rb") as new, gzip.open(PACKED, "rb") as old:
        assert new.read() == old.read()
    assert dest.read_bytes() == PACKED.read_bytes()
    assert load_benchmark(path=dest).entries() == load_benchmark("robust201-digits").entries()


def test_the_committed_build_rows_round_trip_line_for_line():
    path = REPO / "benchmarks" / "tables" / "robust201-digits" / "rows.jsonl"
    rows = read_rows(path)  # the build may be appending: a line cut short is dropped
    lines = path.read_text().splitlines()[: len(rows)]
    assert len(rows) > 1000 and {row["phase"] for row in rows} >= {"main", "seed", "validity"}
    for row, line in zip(rows, lines):
        assert json.dumps(TableRow.from_dict(row).to_dict(), sort_keys=True) == line


def test_malformed_table_rows_are_refused_naming_the_key():
    good = {"phase": "main", "key": "k", "seed": 0, "sample": {"cell/0_1": "none"}, "metrics": {"pgd_acc": 0.3}}
    with pytest.raises(DataError, match=r"lacks key\(s\) \['seed'\]; a row has \['phase', 'key', 'seed'"):
        TableRow.from_dict({k: v for k, v in good.items() if k != "seed"})
    with pytest.raises(DataError, match=r"unknown key\(s\) \['note'\]"):
        TableRow.from_dict({**good, "note": "x"})
    with pytest.raises(DataError, match="unknown phase 'mian'.*valid phases: main, seed, autoattack, validity"):
        TableRow.from_dict({**good, "phase": "mian"})
    with pytest.raises(DataError, match=r"the main row of cell 'k' needs row\['sample'\]"):
        TableRow.from_dict({k: v for k, v in good.items() if k != "sample"})
    assert TableRow.from_dict({**good, "phase": "seed", "sample": None}).sample is None
    with pytest.raises(DataError, match=r"my-table: a table row lacks key\(s\) \['metrics'\]"):
        Benchmark({"space": "robust201"}, [{k: v for k, v in good.items() if k != "metrics"}], "my-table")


# ---------------------------------------------------------------------- compare rows
TINY = {
    "preset": "demo",
    "space_kwargs": {"width": 4, "num_cells": 4},
    "strategies": ["optuna-random"],
    "seeds": [0],
    "budget": 1,
    "top_k": 1,
    "search": {"recipe": "standard", "epochs": 1, "batch_size": 64, "attack": "fast", "n_examples": 16, "eps": 0.1},
    "final": {"recipe": "standard", "epochs": 1, "batch_size": 64, "attack": "fast", "n_examples": 16, "eps": 0.1},
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real comparison (one Optuna random search of one candidate, retrained): its config and folder."""
    out = tmp_path_factory.mktemp("records") / "run"
    config = CompareConfig.from_options({**TINY, "out": str(out)})
    compare(config, progress=False)
    return config, out


@pytest.mark.slow
def test_results_json_rows_round_trip_through_compare_rows_byte_for_byte(tiny_run):
    _, out = tiny_run
    text = (out / "results.json").read_text()
    data = json.loads(text)
    assert len(data["rows"]) == 1
    rows = [CompareRow.from_dict(row) for row in data["rows"]]
    row = rows[0]
    assert (row.strategy, row.seed, row.search_cost["candidates"]) == ("optuna-random", 0, 1)
    assert set(METRIC_KEYS) <= set(row.metrics) and row.metrics["recipe"] == "standard"
    assert json.dumps({**data, "rows": [r.to_dict() for r in rows]}, indent=2) == text
    # The report reads typed rows and their dicts alike.
    assert summarise(rows, ["optuna-random"]) == summarise(data["rows"], ["optuna-random"])
    assert summarise(rows)[0]["best_robust_acc"] == row.metrics["robust_acc"]
    torch.manual_seed(0)
    assert row.record.build() is not None and row.record.to_dict() == data["rows"][0]["record"]


@pytest.mark.slow
def test_a_malformed_row_is_refused_naming_the_key_and_a_resumed_results_file_names_the_row(tiny_run, tmp_path):
    config, out = tiny_run
    row = json.loads((out / "results.json").read_text())["rows"][0]
    with pytest.raises(DataError, match=r"lacks key\(s\) \['metrics'\]; a row has \['strategy', 'seed', 'record'"):
        CompareRow.from_dict({k: v for k, v in row.items() if k != "metrics"})
    with pytest.raises(DataError, match=r"unknown key\(s\) \['name'\]"):
        CompareRow.from_dict({**row, "name": "x"})
    with pytest.raises(DataError, match=r"row\['metrics'\]\['clean_acc'\] must be a number in \[0, 1\]"):
        CompareRow.from_dict({**row, "metrics": {**row["metrics"], "clean_acc": 96.5}})
    with pytest.raises(DataError, match=r"row\['search_cost'\] must be a mapping of \['wall_seconds'"):
        CompareRow.from_dict({**row, "search_cost": {"wall_seconds": 1.0}})
    with pytest.raises(DataError, match=r"row\['seed'\] must be an integer >= 0"):
        summarise([{**row, "seed": "0"}])
    # Resuming a run whose results.json holds a damaged row names the file and the row.
    copy = tmp_path / "copy"
    copy.mkdir()
    data = json.loads((out / "results.json").read_text())
    data["rows"][0]["record"].pop("sample")
    (copy / "results.json").write_text(json.dumps(data, indent=2))
    with pytest.raises(DataError, match=r"results file '.*results.json', row 1: record lacks key\(s\) \['sample'\]"):
        RunFolder(dataclasses.replace(config, out=str(copy)), resume=True)
