"""The report is a view of the summaries it reads: on a run folder whose every number is different,
each cell of its table is the number of the summary (or stage_times.tsv entry) it names."""

import json

from stage_helpers import run

TASKS = ("rzero_micro_ops2", "rzero_micro")


def write(folder, summary):
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "DONE").write_text("")


def fake_run(root):
    """Iterations 0-2 with distinct values everywhere; iteration 2's labels are incomplete (no DONE)."""
    for k in range(3):
        it = root / f"iter{k:02d}"
        scores = {t: 0.1 * k + 0.01 * i + 0.003 for i, t in enumerate(TASKS)}
        write(it / "evaluate", dict(stage="evaluate", scores=scores))
        if k == 0:
            continue
        write(it / "challenger", dict(stage="train_challenger", reward_mean=0.41 + 0.1 * k))
        write(it / "questions", dict(stage="generate_questions", parsed=190 + k))
        write(it / "solver", dict(stage="train_solver"))
        labeled = dict(stage="label_questions", kept=90 + 7 * k, distinct=180 + k, consistency_mean=0.37 + 0.1 * k,
                       pseudo_label_accuracy=0.452 + 0.1 * k, kept_pseudo_label_accuracy=0.516 + 0.1 * k,
                       trained_label_accuracy=0.516 + 0.1 * k,
                       consistency_histogram={f"{v}/10": v + k for v in range(11)})
        if k == 2:
            (it / "labeled").mkdir()
            (it / "labeled" / "summary.json").write_text(json.dumps(labeled))  # killed before DONE: not shown
        else:
            write(it / "labeled", labeled)
    (root / "stage_times.tsv").write_text("0\tevaluate\t25\n1\tchallenger\t37\n1\tsolver\t50\n1\tsolver\t66\n")


def test_every_cell_is_the_number_of_its_summary(tmp_path):
    root = tmp_path / "runs" / "r"
    fake_run(root)
    run("report", "--run", root, "--output", tmp_path / "report")
    lines = (tmp_path / "report" / "report.md").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| iter |"))
    head = [c.strip() for c in lines[at].strip("|").split("|")]
    rows = {}
    for line in lines[at + 2 :]:
        if not line.startswith("|"):
            break
        cells = dict(zip(head, [c.strip() for c in line.strip("|").split("|")]))
        rows[cells["iter"]] = cells
    assert list(rows) == ["0", "1", "2"]
    for k in range(3):
        for i, task in enumerate(TASKS):
            assert rows[str(k)][task] == f"{100 * (0.1 * k + 0.01 * i + 0.003):.1f}"
    one, two = rows["1"], rows["2"]
    assert one["generated"] == "191" and one["kept"] == "97" and one["mean p"] == "0.47"
    assert one["vote label acc (all / kept)"] == "55.2 / 61.6" and one["trained-on label acc"] == "61.6"
    assert one["Challenger reward"] == "0.51"
    assert one["minutes per stage"] == "challenger 0.6, solver 1.1"  # the last entry of a rerun wins
    assert rows["0"]["minutes per stage"] == "evaluate 0.4"
    assert two["generated"] == "192" and two["Challenger reward"] == "0.61"
    assert two["kept"] == "-" and two["mean p"] == "-"  # an incomplete stage is not read
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["iterations"] == {str(root): [0, 1, 2]}
