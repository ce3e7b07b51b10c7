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
        write(it / "questions", dict(stage="generate_questions", parsed=190 + k, args=dict(max_new_tokens="12")))
        write(it / "solver", dict(stage="train_solver", mitigation="adpo"))
        labeled = dict(stage="label_questions", kept=90 + 7 * k, distinct=180 + k, consistency_mean=0.37 + 0.1 * k,
                       pseudo_label_accuracy=0.452 + 0.1 * k, kept_pseudo_label_accuracy=0.516 + 0.1 * k,
                       trained_label_accuracy=0.516 + 0.1 * k,
                       consistency_histogram={f"{v}/10": v + k for v in range(11)}, args=dict(max_new_tokens="64"))
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
    # what the Solver learned from is named, and a Challenger whose questions were capped shorter than the answers
    assert f"### {root} (Solver mitigation: adpo; Challenger capped at 12 new tokens)" in lines
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


def labeled_run(root, scores, labels, samples=None):
    """A run whose iteration k has held-out score scores[k] (None: not evaluated) and, from k = 1, the
    label stage's summary labels[k - 1]."""
    for k, score in enumerate(scores):
        if score is not None:
            write(root / f"iter{k:02d}" / "evaluate", dict(stage="evaluate", scores={"rzero_micro": score},
                                                           samples=samples or {}))
    for k, labeled in enumerate(labels, start=1):
        write(root / f"iter{k:02d}" / "labeled", dict(stage="label_questions", consistency_histogram={"5/10": 3},
                                                      **labeled))


def reading(tmp_path, root):
    run("report", "--run", root, "--output", tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    return text, json.loads((tmp_path / "report" / "summary.json").read_text())["reading"][str(root)]


def test_the_report_names_the_best_iteration_and_flags_label_decay(tmp_path):
    # the demo's shape: the gain comes in iteration 1, iterations 2 and 3 tie, kept-label accuracy decays
    root = tmp_path / "loop"
    labeled_run(root, [0.381, 0.600, 0.674, 0.674],
                [dict(kept_pseudo_label_accuracy=a, consistency_mean=p) for a, p in
                 ((0.675, 0.60), (0.551, 0.58), (0.438, 0.56))], samples={"rzero_micro": 800})
    text, got = reading(tmp_path, root)
    # the tie goes to the earlier iteration; 2 x sqrt(0.674 x 0.326 / 800) = 3.3 points
    assert "**Best iteration: 2** by rzero_micro: 67.4 +- 3.3 (two standard errors)." in text
    assert got["best"]["iteration"] == 2 and abs(got["best"]["two_se"] - 0.0331) < 1e-4
    assert ("**Label decay:** kept pseudo-label accuracy fell 67.5 -> 55.1 from iteration 1 to 2; kept pseudo-label "
            "accuracy fell 55.1 -> 43.8 from iteration 2 to 3 (flagged beyond 5 points of accuracy or 0.05 of mean "
            "p).") in text
    assert [f["iterations"] for f in got["decay"]["falls"]] == [[1, 2], [2, 3]]  # mean p fell 0.02 a time: not flagged


def test_with_a_probe_and_no_evaluation_the_probe_decides(tmp_path):
    root = tmp_path / "real"
    probe = [dict(questions=200, pseudo_label_accuracy=a, band_pseudo_label_accuracy=b, consistency_mean=p)
             for a, b, p in ((0.79, 0.70, 0.81), (0.76, 0.66, 0.80), (0.63, 0.55, 0.71))]
    labeled_run(root, [None] * 4, [dict(kept_pseudo_label_accuracy=None, consistency_mean=0.6, probe=q) for q in probe])
    text, got = reading(tmp_path, root)
    assert "**Best iteration: 1** by probe label accuracy: 79.0 +- 5.8 (two standard errors)." in text
    assert ("**Label decay:** probe label accuracy fell 76.0 -> 63.0 from iteration 2 to 3; probe mean p fell "
            "0.80 -> 0.71 from iteration 2 to 3") in text
    assert "| probe label acc (all / band) | probe mean p |" in text and "| 79.0 / 70.0 | 0.81 |" in text


def test_no_decay_is_said_in_one_line(tmp_path):
    root = tmp_path / "truth"
    labeled_run(root, [0.38, 0.77, 0.77], [dict(kept_pseudo_label_accuracy=a, consistency_mean=0.6) for a in (0.76, 0.74)])
    text, got = reading(tmp_path, root)
    assert ("No label decay: label accuracy and mean p (kept questions) fell by no more than 5 points and 0.05 "
            "between iterations.") in text and got["decay"]["falls"] == []
    assert "**Best iteration: 1** by rzero_micro: 77.0." in text  # no question count: no error bar


def test_arms_over_seeds_give_mean_two_standard_errors_and_the_difference(tmp_path):
    # two seeds of a loop; three of a control, one of which kept nothing at iteration 2 and so stopped there
    # with the Solver of iteration 1 (its score carries on)
    runs = {}
    for name, scores, kept in (("loop-s0", [0.50, 0.60, 0.70], [5, 5]), ("loop-s1", [0.50, 0.56, 0.66], [5, 5]),
                               ("control-s0", [0.50, 0.55, 0.60], [5, 5]), ("control-s1", [0.50, 0.52], [5, 0]),
                               ("control-s2", [0.50, 0.57, 0.58], [5, 5])):
        runs[name] = tmp_path / name
        labeled_run(runs[name], scores, [dict(kept=n, kept_pseudo_label_accuracy=0.5, consistency_mean=0.5) for n in kept])
    run("report", "--arm", f"loop={runs['loop-s0']},{runs['loop-s1']}",
        "--arm", f"control={runs['control-s0']},{runs['control-s1']},{runs['control-s2']}", "--output", tmp_path / "r")
    text = (tmp_path / "r" / "report.md").read_text()
    # loop at 2: mean 68.0, sd 2.83, 2 SE = 2 x 2.83 / sqrt 2 = 4.0; control at 2: 60, 52 (carried), 58: mean 56.67,
    # sd 4.16, 2 SE 4.8; the difference -11.3 +- sqrt(4.0^2 + 4.8^2) = 6.3
    assert "| loop | 2 | 50.0 +- 0.0 (50.0, 50.0) | 58.0 +- 4.0 (60.0, 56.0) | 68.0 +- 4.0 (70.0, 66.0) |" in text
    assert "| control | 3 | 50.0 +- 0.0 (50.0, 50.0, 50.0) | 54.7 +- 2.9 (55.0, 52.0, 57.0) | 56.7 +- 4.8 (60.0, 52.0, 58.0) |" in text
    assert ("**control - loop** at iteration 2: -11.3 points, two standard errors of the difference 6.3: beyond the "
            "noise.") in text
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())["across_seeds"]
    assert summary["task"] == "rzero_micro" and abs(summary["differences"]["control"]["difference"] + 0.1133) < 1e-3
    assert set(summary["arms"]) == {"loop", "control"} and f"### {runs['control-s1']}" in text  # each run's own table


def test_an_arm_without_runs_is_one_clear_error(tmp_path):
    proc = run("report", "--arm", "loop", "--output", tmp_path / "r", check=False)
    assert proc.returncode == 2 and "--arm 'loop': write NAME=RUN,RUN,..." in proc.stderr
    assert not (tmp_path / "r").exists()
