"""The needle heatmap: numeric axis order, annotated cells, a PNG on disk; and the plain-text tables."""

from __future__ import annotations

import math

from chunkqa.evals.plot import figure, grids, write_heatmap
from chunkqa.evals.table import metric_table, needle_table, selftest_table


def needle_records():
    records = []
    for setting in ("no DCA", "DCA auto"):
        for length in (4096, 256, 1024):  # out of order on purpose; 1024 sorts before 256 as text
            for depth in (1.0, 0.0, 0.5):
                value = 1.0 if setting == "DCA auto" or length == 256 else depth / 2
                records.append(
                    {
                        "setting": setting,
                        "length": length,
                        "depth": depth,
                        "value": value,
                        "metric": "accuracy",
                    }
                )
    return records


def test_grids_sort_lengths_and_depths_numerically():
    first, second = grids(needle_records())
    assert (first.title, second.title) == ("no DCA", "DCA auto")
    assert first.lengths == (256, 1024, 4096)
    assert first.depths == (0.0, 0.5, 1.0)
    assert first.values == ((1.0, 0.0, 0.0), (1.0, 0.25, 0.25), (1.0, 0.5, 0.5))


def test_missing_cells_are_nan():
    grid = grids([{"setting": "s", "length": 1, "depth": 0.0, "value": 1.0},
                  {"setting": "s", "length": 2, "depth": 1.0, "value": 0.5}])[0]  # fmt: skip
    assert math.isnan(grid.values[0][1]) and math.isnan(grid.values[1][0])


def test_figure_axes_lengths_left_to_right_and_depth_top_to_bottom():
    fig = figure(grids(needle_records()), "needle")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["256", "1,024", "4,096"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0%", "50%", "100%"]
    bottom, top = ax.get_ylim()
    assert bottom > top  # row 0 (depth 0 %) is drawn at the top
    cells = {(round(t.get_position()[0]), round(t.get_position()[1])): t.get_text() for t in ax.texts}
    assert cells[(0, 0)] == "100%" and cells[(2, 2)] == "50%" and cells[(1, 0)] == "0%"


def test_heatmap_is_written_as_png(tmp_path):
    path = write_heatmap(tmp_path / "h.png", needle_records(), "needle")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000


def record(setting, length, value, metric="accuracy", **extra):
    return {"setting": setting, "length": length, "value": value, "metric": metric,
            "extension": length / 256, "mean_tokens": extra.pop("mean_tokens", length), **extra}  # fmt: skip


def test_metric_table_has_a_column_per_setting_and_sorted_rows():
    records = [record("no DCA", 512, 12.3456, "ppl"), record("DCA auto", 512, 10.0, "ppl"),
               record("no DCA", 256, 9.0, "ppl"), record("DCA auto", 256, 9.01, "ppl")]  # fmt: skip
    assert metric_table(records).splitlines() == [
        "length  x P  no DCA  DCA auto",
        "256       1    9.00      9.01",
        "512       2   12.35     10.00",
    ]


def test_accuracy_table_shows_the_actual_mean_length():
    records = [record("DCA auto", 1024, 0.96, mean_tokens=1021.5)]
    assert metric_table(records).splitlines()[1] == "1024      4  1021.5       96%"


def test_needle_table_blocks_per_setting_depth_rows_length_columns():
    text = needle_table(needle_records())
    assert text.split("\n\n")[0].splitlines() == [
        "no DCA",
        "depth   256  1024  4096",
        "0%     100%    0%    0%",
        "50%    100%   25%   25%",
        "100%   100%   50%   50%",
    ]


def test_selftest_table_marks_each_length():
    rows = [record("DCA auto", 512, 0.6, correct=3, n=5), record("DCA auto", 256, 1.0, correct=5, n=5)]
    assert selftest_table(rows, 0.8).splitlines() == [
        "length  x P  tokens  pass keys  result",
        "256       1     256        5/5    pass",
        "512       2     512        3/5    FAIL",
    ]
