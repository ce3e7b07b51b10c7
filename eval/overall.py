"""The paper's headline numbers from an lm-eval results JSON of `rzero_all`.

lm-eval averages a group over its leaf tasks, never over its subgroups, so `rzero_all` cannot
report the paper's Overall itself; this is where it is computed (the report stage uses it):
- MATH-avg  = the `rzero_math` group score (plain mean of the seven math accuracies),
- Overall   = plain mean of MATH-avg, MMLU-Pro, SuperGPQA and BBEH.
Scores are accuracies in [0, 1]; a score whose task is missing from the results is left out and
Overall is then None.

    python eval/overall.py results.json
"""

import json
import sys

METRIC = "acc,none"
PARTS = {  # paper column -> lm-eval task or group
    "MATH-avg": "rzero_math",
    "MMLU-Pro": "rzero_mmlu_pro",
    "SuperGPQA": "rzero_supergpqa",
    "BBEH": "rzero_bbeh",
}


def paper_scores(results: dict) -> dict[str, float | None]:
    """{"MATH-avg", "MMLU-Pro", "SuperGPQA", "BBEH", "Overall"} from `results` (the dict that
    `simple_evaluate` returns, or the JSON lm-eval writes; groups and tasks both sit under
    results["results"])."""
    table = results["results"]
    scores = {name: table[task][METRIC] for name, task in PARTS.items() if METRIC in table.get(task, {})}
    scores["Overall"] = sum(scores.values()) / len(PARTS) if len(scores) == len(PARTS) else None
    return scores


if __name__ == "__main__":
    for name, value in paper_scores(json.load(open(sys.argv[1]))).items():
        print(f"{name:>10}: {'n/a' if value is None else f'{100 * value:.2f}'}")
