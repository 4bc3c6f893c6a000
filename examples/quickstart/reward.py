"""Exact-match reward for the synthetic arithmetic task: last \\boxed{...} == ground truth.

Stand-in used until verl_lpreg.reward is available; same signature
(compute_score(data_source, solution_str, ground_truth, extra_info=None, **kw) -> {"score": ...}).
"""

from __future__ import annotations


def last_boxed(text: str) -> str | None:
    i = text.rfind("\\boxed{")
    if i < 0:
        return None
    j, depth = i + len("\\boxed{"), 1
    for k in range(j, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return text[j:k].strip()
    return None


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    pred = last_boxed(solution_str or "")
    ok = pred is not None and pred.replace(" ", "") == str(ground_truth).strip()
    return {"score": 1.0 if ok else 0.0, "acc": float(ok), "has_boxed": float(pred is not None)}
