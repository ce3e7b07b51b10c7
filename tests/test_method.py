"""The method's core as the stages run it, on answers whose right values are known by construction:
the Challenger's reward closure (the one TRL calls), the Solver's reward, and the label stage's
vote, band and true-label upper bound through a scripted Solver behind the `server` backend."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stage_helpers import reply_json, run

SCRIPTED = {  # question -> the Solver's m = 10 answers, in the order it gives them
    "What is 1 + 1?": ["3", "2", "2", "2", "2", "2", "4", "5", "6", "7"],  # majority 2 at p = 0.5; first answer 3
    "What is 2 + 2?": ["4"] * 10,  # p = 1.0: too easy, outside the band
    "What is 3 + 3?": ["5", "6", "6", "6", "6", "6", "6", "6", "1", "2"],  # p = 0.7: inside
    "What is 4 + 4?": ["8", "8", "1", "2", "3", "4", "5", "6", "7", "9"],  # p = 0.2: too hard, outside
    "What is 5 + 5?": ["11", "10", "11", "10", "11", "10", "11", "1", "2", "3"],  # majority 11 (wrong) at p = 0.4
    "What is 6 + 6?": [None] * 6 + ["12"] * 4,  # 4 of 10 box an answer: p = 0.4 counts the empty ones
}
FORMS = {  # answers that only math-verify can group (the vote's exact paths cannot): its checks are counted
    "What is 1 / 2?": ["1/2", "0.5", "\\frac{1}{2}", "0.50", "2", "1/2", "3", "0.5", "x", "1"],
}
PROBE = {  # the gold probe's rows (tests/fixtures/benchmarks, in GSM8K's and MATH's train schemas) -> answers
    "Natalia sold clips": ["72"] * 6 + ["48", "24", "96", "70"],  # gold 72: right, p = 0.6, in the band
    "Weng earns $12": ["10"] * 10,  # gold 10: right, p = 1.0, outside
    "How many vertical asymptotes": ["3"] * 5 + ["2"] * 4 + [None],  # gold 2 (the boxed solution): wrong, p = 0.5
    "What is the value of $\\sqrt{36": ["12"] * 8 + ["6", "4"],  # gold 12: right, p = 0.8, outside
}
QUESTION_OF_PROMPT = "<|im_start|>user\n"


class ScriptedSolver(BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/completions endpoint that answers each question as SCRIPTED says."""

    requests: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        choices = []
        for i, prompt in enumerate(prompts):
            question = prompt.split(QUESTION_OF_PROMPT)[-1].split("<|im_end|>")[0]
            answers = {**SCRIPTED, **FORMS}.get(question) or next(
                (a for start, a in PROBE.items() if question.startswith(start)), ["0"] * body["n"])
            for j in range(body["n"]):
                a = answers[j % len(answers)]
                text = "no answer" if a is None else f"Step by step: ...\n\\boxed{{{a}}}"
                choices.append(dict(index=i * body["n"] + j, text=text, finish_reason="stop"))
        reply_json(self, dict(id="x", object="text_completion", choices=choices))

    def do_GET(self):  # /v1/models: what the server serves (the sampler asks for the base's name)
        reply_json(self, dict(object="list", data=[dict(id="base", object="model")]))

    def log_message(self, *_):
        pass


@pytest.fixture(scope="module")
def solver_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedSolver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


# --- the Challenger's reward, as TRL calls it -------------------------------------------------------

def scripted_solve(questions, m):
    return [[f"\\boxed{{{a}}}" if a is not None else "" for a in SCRIPTED[q][:m]] for q in questions]


def completion(question: str | None) -> str:
    return "no block here" if question is None else f"<question>{question}</question>\n\\boxed{{1}}"


# Four distinct, unrelated questions: each is its own cluster, so r_rep = |C| / B = 1/4.
DISTINCT = ["What is 1 + 1?", "What is 2 + 2?", "What is 3 + 3?", "What is 4 + 4?"]


@pytest.mark.parametrize("questions, expected", [
    # p = 0.5 -> r_unc 1; p = 1.0 -> 0; p = 0.7 -> 0.6; p = 0.2 -> 0.4; each minus r_rep = 1/4
    (DISTINCT, [0.75, 0.0, 0.35, 0.15]),
    # no question: 0, whatever the others; the penalty counts parsed questions only (B = 3)
    ([None, "What is 1 + 1?", "What is 3 + 3?", "What is 5 + 5?"], [0.0, 1 - 1 / 3, 0.6 - 1 / 3, 0.8 - 1 / 3]),
    # duplicates in one batch share a cluster: r_rep = 2/4 for each copy, 1/4 for the others
    (["What is 1 + 1?", "What is 1 + 1?", "What is 3 + 3?", "What is 6 + 6?"], [0.5, 0.5, 0.35, 0.55]),
    # a penalty larger than the uncertainty is clipped at 0: four copies, r_rep = 1 > r_unc = 1
    (["What is 1 + 1?"] * 4, [0.0, 0.0, 0.0, 0.0]),
    # empty answers count in m: 4 of 10 agree, p = 0.4, r_unc 0.8; B = 2, r_rep = 1/2
    (["What is 6 + 6?", "What is 2 + 2?", None, None], [0.8 - 0.5, 0.0, 0.0, 0.0]),
])
def test_the_challenger_reward_closure(questions, expected):
    import train_challenger

    logged = {}
    reward = train_challenger.reward_function(scripted_solve, 10, tau=0.5, penalty_weight=1.0)
    got = reward([completion(q) for q in questions], log_metric=logged.__setitem__)
    assert got == pytest.approx([max(0.0, e) for e in expected], abs=1e-9)
    parsed = [q for q in questions if q]
    assert logged["format_rate"] == len(parsed) / len(questions)
    assert logged["zero_reward_share"] == sum(r == 0 for r in got) / len(got)


def test_the_challenger_reward_asks_each_distinct_question_once():
    import train_challenger

    asked = []

    def solve(questions, m):
        asked.extend(questions)
        return scripted_solve(questions, m)

    train_challenger.reward_function(solve, 10, 0.5, 1.0)([completion(q) for q in ["What is 1 + 1?"] * 3 + [None]])
    assert asked == ["What is 1 + 1?"]


def test_lambda_zero_turns_the_penalty_off():
    import train_challenger

    reward = train_challenger.reward_function(scripted_solve, 10, tau=0.5, penalty_weight=0.0)
    assert reward([completion(q) for q in DISTINCT]) == pytest.approx([1.0, 0.0, 0.6, 0.4])


# --- the Solver's reward -------------------------------------------------------------------------

@pytest.mark.parametrize("text, label, expected", [
    ("so \\boxed{12}", "12", 1.0),  # agrees with the pseudo-label
    ("so \\boxed{13}", "12", 0.0),  # disagrees
    ("no box at all: 12", "12", 0.0),  # the answer must be boxed
    ("\\boxed{1/2}", "0.5", 1.0),  # equivalent forms agree
    ("\\boxed{12} then \\boxed{7}", "12", 0.0),  # the last box is the answer
])
def test_the_solver_reward(text, label, expected):
    import train_solver

    logged = {}
    assert train_solver.correctness([text], label=[label], log_metric=logged.__setitem__) == [expected]
    assert logged["boxed_rate"] == (1.0 if "\\boxed" in text else 0.0)


# --- label-decay mitigations (--mitigation) -----------------------------------------------------------

VOTES = ["12"] * 4 + ["13"] * 2 + ["0.5", "7", None, None]  # m = 10: majority 12 with p = 0.4


@pytest.mark.parametrize("text, answers, p, expected", [
    ("\\boxed{12}", VOTES, 0.4, 1.0),  # the majority's answer scores 1
    ("\\boxed{13}", VOTES, 0.4, 0.5),  # half as many votes: half the reward (the plain reward gives 0)
    ("\\boxed{1/2}", VOTES, 0.4, 0.25),  # equivalent to one vote (0.5): 1 of the majority's 4
    ("\\boxed{99}", VOTES, 0.4, 0.0),  # an answer no vote gave
    ("no box: 12", VOTES, 0.4, 0.0),  # no answer at all
    ("\\boxed{3}", [None] * 10, 0.0, 0.0),  # no vote had an answer (p = 0)
])
def test_restrain_rewards_each_answer_by_its_share_of_the_votes(text, answers, p, expected):
    import train_solver

    logged = {}
    assert train_solver.vote_share([text], answers=[answers], consistency=[p], log_metric=logged.__setitem__) == [
        pytest.approx(expected)]
    assert logged["boxed_rate"] == (1.0 if "\\boxed" in text else 0.0)


@pytest.mark.parametrize("mitigation, p, expected", [
    ("none", [0.3, 0.7], [1.0, -0.5]),  # the paper: TRL's advantages as they are
    ("adpo", [0.3, 0.7], [0.3, -0.35]),  # scaled by the label's vote share p
    ("restrain", [0.3, 0.7], [-0.2, -0.5]),  # p < kappa: every completion pushed down by the penalty
    ("restrain", [0.5, 0.5], [1.0, -0.5]),  # p = kappa is trusted
])
def test_the_solver_advantages_under_each_mitigation(mitigation, p, expected):
    import rzero

    assert rzero.solver_advantages([1.0, -0.5], p, mitigation, kappa=0.5, penalty=0.2) == pytest.approx(expected)


def test_an_unknown_mitigation_is_refused():
    import rzero

    with pytest.raises(ValueError, match="none, adpo, restrain"):
        rzero.solver_advantages([1.0], [0.5], "ttrl")


# --- the label stage, with a scripted Solver -------------------------------------------------------

@pytest.fixture(scope="module")
def scripted_questions(tmp_path_factory):
    questions = list(SCRIPTED) + ["What is 1 + 1?", None]  # an exact repeat, and a sample without a question
    return questions_artifact(tmp_path_factory.mktemp("questions") / "questions", questions)


def questions_artifact(folder, questions):
    from datasets import Dataset

    folder.mkdir()
    Dataset.from_dict(dict(sample_id=list(range(len(questions))), completion=[completion(q) for q in questions],
                           question=questions)).to_parquet(str(folder / "questions.parquet"))
    (folder / "summary.json").write_text(json.dumps({"iteration": 1}))
    (folder / "DONE").write_text("")
    return folder


def label(quick_base, questions, output, solver_url, *extra):
    run("label_questions", "--base-model", quick_base, "--iteration", "1", "--questions", questions,
        "--output", output, "--m", "10", "--delta", "0.25", "--backend", "server", "--server-url", solver_url,
        "--max-new-tokens", "16", *extra)
    from datasets import Dataset

    labeled = {r["sample_id"]: r for r in Dataset.from_parquet(str(output / "labeled.parquet")).to_list()}
    train = Dataset.from_parquet(str(output / "train.parquet")).to_list()
    return labeled, train, json.loads((output / "summary.json").read_text())


def test_labels_are_the_majority_and_the_band_keeps_3_to_7_votes(quick_base, scripted_questions, solver_url, tmp_path):
    labeled, train, summary = label(quick_base, scripted_questions, tmp_path / "labeled", solver_url)
    by_question = {r["question"]: r for r in labeled.values() if not r["repeat"]}
    assert {q: (r["label"], r["consistency"]) for q, r in by_question.items()} == {
        "What is 1 + 1?": ("2", 0.5), "What is 2 + 2?": ("4", 1.0), "What is 3 + 3?": ("6", 0.7),
        "What is 4 + 4?": ("8", 0.2), "What is 5 + 5?": ("11", 0.4), "What is 6 + 6?": ("12", 0.4)}
    # kept: inside |p - 1/2| <= 0.25, first copy only
    assert [r["question"] for r in train] == ["What is 1 + 1?", "What is 3 + 3?", "What is 5 + 5?", "What is 6 + 6?"]
    assert [r["label"] for r in train] == ["2", "6", "11", "12"]  # the vote's labels, one of them wrong
    assert labeled[len(SCRIPTED)]["repeat"] and not labeled[len(SCRIPTED)]["kept"]
    assert summary["kept"] == 4 and summary["distinct"] == 6 and summary["repeats"] == 1
    assert summary["consistency_histogram"]["5/10"] == 1 and summary["consistency_histogram"]["4/10"] == 2
    assert summary["pseudo_label_accuracy"] == pytest.approx(5 / 6)  # only 5 + 5 = 11 is wrong
    assert summary["kept_pseudo_label_accuracy"] == pytest.approx(3 / 4)
    assert summary["label_source"] == "vote"
    assert ScriptedSolver.requests and all(b["n"] == 10 for b in ScriptedSolver.requests)


def test_true_labels_replace_the_vote_for_the_upper_bound(quick_base, scripted_questions, solver_url, tmp_path):
    labeled, train, summary = label(quick_base, scripted_questions, tmp_path / "labeled", solver_url,
                                    "--label-source", "truth")
    # the same band, but the Solver trains on the safe evaluator's answers: 5 + 5 is 10, not the vote's 11
    assert [(r["question"], r["label"]) for r in train] == [
        ("What is 1 + 1?", "2"), ("What is 3 + 3?", "6"), ("What is 5 + 5?", "10"), ("What is 6 + 6?", "12")]
    assert summary["label_source"] == "truth"
    assert summary["trained_label_accuracy"] == 1.0 and summary["kept_pseudo_label_accuracy"] == pytest.approx(3 / 4)


def test_two_label_shards_give_one_process_votes_and_verifier_counts(quick_base, scripted_questions, solver_url,
                                                                     tmp_path):
    # the same scripted Solver answers both shards (4 and 3 distinct questions), so every row must be the same, and the
    # verifier's counts of the merged summary are the two shards' together
    questions = questions_artifact(tmp_path / "questions", list(SCRIPTED) + list(FORMS) + ["What is 1 + 1?"])
    one = label(quick_base, questions, tmp_path / "one", solver_url)
    two = label(quick_base, questions, tmp_path / "two", solver_url, "--data-parallel", "2")
    assert one[0][6]["label"] == "1/2" and one[0][6]["consistency"] == 0.6  # 1/2, 0.5, \frac{1}{2}, 0.50 alike
    assert two[0] == one[0] and two[1] == one[1]
    assert two[2]["verifier_failures"] == one[2]["verifier_failures"] and one[2]["verifier_failures"]["checked"] > 0
    assert (two[2]["data_parallel"], one[2]["data_parallel"]) == (2, 1)
    assert {k: two[2][k] for k in ("kept", "distinct", "pseudo_label_accuracy", "consistency_histogram")} == \
        {k: one[2][k] for k in ("kept", "distinct", "pseudo_label_accuracy", "consistency_histogram")}


def test_the_gold_probe_measures_label_accuracy_and_consistency(quick_base, scripted_questions, solver_url, tmp_path):
    # two probe sets in the real schemas (GSM8K's "#### 72", MATH's boxed solution), voted like the questions
    from stage_helpers import ROOT

    fixtures = ROOT / "tests" / "fixtures" / "benchmarks"
    sets = [f"{fixtures}/openai/gsm8k:main:train", f"{fixtures}/EleutherAI/hendrycks_math:algebra:train"]
    labeled, train, summary = label(quick_base, scripted_questions, tmp_path / "labeled", solver_url,
                                    "--probe", sets[0], "--probe", sets[1])
    got = summary["probe"]
    assert got["questions"] == 4 and got["pseudo_label_accuracy"] == pytest.approx(3 / 4)
    assert got["band_pseudo_label_accuracy"] == pytest.approx(1 / 2)  # Natalia right, the asymptotes wrong
    assert got["consistency_mean"] == pytest.approx((0.6 + 1.0 + 0.5 + 0.8) / 4) and got["band_share"] == 0.5
    assert got["sets"][sets[0]] == dict(questions=2, pseudo_label_accuracy=1.0, band_pseudo_label_accuracy=1.0,
                                        consistency_mean=pytest.approx(0.8), band_share=0.5)
    math = got["sets"][sets[1]]
    assert math["pseudo_label_accuracy"] == 0.5 and math["band_pseudo_label_accuracy"] == 0
    from datasets import Dataset

    rows = {r["question"][:8]: r for r in Dataset.from_parquet(str(tmp_path / "labeled" / "probe.parquet")).to_list()}
    assert (rows["How many"]["gold"], rows["How many"]["label"], rows["How many"]["in_band"]) == ("2", "3", True)
    # the probe is never trained on, and leaves the questions' own numbers as they were
    assert not {r["question"] for r in train} & {r["question"] for r in rows.values()}
    plain = label(quick_base, scripted_questions, tmp_path / "plain", solver_url)
    assert plain[1] == train and plain[2]["probe"] is None
    assert (plain[2]["kept"], plain[2]["pseudo_label_accuracy"]) == (summary["kept"], summary["pseudo_label_accuracy"])
    # --probe-size draws a fixed sample of each set
    small, again = (label(quick_base, scripted_questions, tmp_path / name, solver_url, "--probe", sets[0],
                          "--probe-size", "1") for name in ("small", "again"))
    assert small[2]["probe"]["questions"] == 1 and small[2]["probe"] == again[2]["probe"]


@pytest.mark.parametrize("spec, message", [
    ("openai/gsm8k", "use a file, <dataset>:<split> or <dataset>:<config>:<split>"),
    ("probe.txt", "a file must be .jsonl, .json or .parquet"),
])
def test_a_bad_probe_is_refused_before_any_work(quick_base, scripted_questions, tmp_path, spec, message):
    (tmp_path / "probe.txt").write_text("x")
    proc = run("label_questions", "--base-model", quick_base, "--iteration", "1", "--questions", scripted_questions,
               "--output", tmp_path / "labeled", "--probe", spec.replace("probe.txt", str(tmp_path / "probe.txt")),
               check=False)
    assert proc.returncode == 2 and message in proc.stderr and not (tmp_path / "labeled").exists()


def test_probe_rows_are_read_by_schema():
    import probe

    assert probe.question_and_gold(dict(question="q", answer="work\n#### 1,000")) == ("q", "1000")  # GSM8K
    assert probe.question_and_gold(dict(question="q", answer="#### 18")) == ("q", "18")
    assert probe.question_and_gold(dict(problem="p", solution="so \\boxed{\\frac{1}{2}}.")) == ("p", "\\frac{1}{2}")
    assert probe.question_and_gold(dict(problem="p", answer="3", solution="\\boxed{4}")) == ("p", "3")  # MATH-500
    assert probe.question_and_gold(dict(question="q", final_answer=["$69$"])) == ("q", "$69$")  # OlympiadBench
    assert probe.question_and_gold(dict(question="q")) is None  # no gold: not a probe row
    assert probe.question_and_gold(dict(text="x", answer="1")) is None  # no question
