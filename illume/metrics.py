"""Rationale and answer metrics of the method (SPEC section 1), on a 0-100 scale.

BLEU-1..4, METEOR and CIDEr come from the COCO caption evaluation (pycocoevalcap; METEOR
runs its Java jar, so without a Java runtime it is left out with one warning: missing, never 0),
ROUGE-L is the critic's rouge_l, the same formula as COCO's (LCS F-measure, beta 1.2), so the
acceptance threshold and the reported ROUGE-L can never disagree. Texts are tokenised as the
`scoring` mode says (illume.critic.SCORINGS), never by the Java PTB tokenizer:
- "default": the critic's tokens (lower case, letters and digits); answer accuracy is the exact
  match after normalisation (case, punctuation and spaces ignored);
- "paper": nlg-eval's, as the reference implementation scores: the lower-cased, stripped text
  split on spaces, punctuation attached; answer accuracy is substring overlap in either
  direction of the lower-cased, stripped answers (an empty answer is wrong).
"""
from __future__ import annotations

import shutil
import warnings
from typing import Sequence

from illume.critic import DEFAULT_SCORING, PAPER_SCORING, SCORINGS, check_scoring, rouge_l, tokenize
from illume.errors import IllumeError
from illume.records import Feedback
from illume.text import normalise

RATIONALE_METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")


def _tokens(text: str, scoring: str) -> str:
    """The text as pycocoevalcap's scorers get it (they split it on whitespace)."""
    return " ".join(tokenize(text, scoring)) if scoring == DEFAULT_SCORING else text.lower().strip()


def rationale_scores(candidates: Sequence[str], references: Sequence[Sequence[str]],
                     meteor: bool = True, scoring: str = DEFAULT_SCORING) -> dict[str, float]:
    """Corpus-level scores of one candidate per item against that item's references."""
    if len(candidates) != len(references):
        raise IllumeError(f"{len(candidates)} candidates but {len(references)} reference lists",
                          "Pass one candidate and one list of references per item.")
    keep = [i for i, refs in enumerate(references) if any(r and r.strip() for r in refs)]
    if not keep:
        raise IllumeError("no item has a reference explanation, so rationales cannot be scored",
                          "Evaluate on items with at least one explanation (e.g. VQA-X val/test).")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    check_scoring(scoring)
    res = {str(i): [_tokens(candidates[i], scoring)] for i in keep}
    gts = {str(i): [_tokens(r, scoring) for r in references[i] if r and r.strip()] for i in keep}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    scores = {f"bleu_{n + 1}": 100 * float(b) for n, b in enumerate(bleu)}
    scores["rouge_l"] = 100 * sum(rouge_l(candidates[i], references[i], scoring) for i in keep) / len(keep)
    scores["cider"] = 100 * float(cider)
    if meteor and (value := meteor_score(gts, res)) is not None:
        scores["meteor"] = 100 * value
    return scores


_warned_no_java = False


def meteor_score(gts: dict[str, list[str]], res: dict[str, list[str]]) -> float | None:
    """Corpus METEOR 1.5 from pycocoevalcap's Java jar (one JVM per call); None without Java."""
    global _warned_no_java
    if shutil.which("java") is None:
        if not _warned_no_java:
            warnings.warn("METEOR skipped: no `java` on PATH (install a Java runtime, e.g. "
                          "`apt-get install default-jre-headless`); the other metrics are unaffected",
                          RuntimeWarning, stacklevel=2)
            _warned_no_java = True
        return None
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        scorer = Meteor()
        score, _ = scorer.compute_score(gts, res)
    except (OSError, ValueError) as exc:  # no java, or the JVM died and answered nothing
        raise IllumeError(f"METEOR could not run its Java scorer ({type(exc).__name__}: {exc})",
                          "Install a Java runtime (e.g. `apt-get install default-jre-headless`), "
                          "or pass meteor=False.") from exc
    finally:
        if "scorer" in locals():
            del scorer  # its __del__ stops the JVM
    return float(score)


def answer_correct(predicted: str, gold: str, scoring: str = DEFAULT_SCORING) -> bool:
    """Exact match after normalisation; paper: either answer contains the other (lower-cased, stripped)."""
    if check_scoring(scoring) == PAPER_SCORING:
        p, g = predicted.lower().strip(), gold.lower().strip()
        return bool(p) and (p in g or g in p)
    return normalise(predicted) == normalise(gold)


def answer_accuracy(predicted: Sequence[str], gold: Sequence[str], scoring: str = DEFAULT_SCORING) -> float:
    """Percentage of predicted answers that count as the gold answer (`answer_correct`)."""
    if len(predicted) != len(gold):
        raise IllumeError(f"{len(predicted)} predicted answers but {len(gold)} gold answers",
                          "Pass one predicted answer per item.")
    if not gold:
        return 0.0
    return 100 * sum(answer_correct(p, g, scoring) for p, g in zip(predicted, gold)) / len(gold)


def score_all(rationales: Sequence[str], references: Sequence[Sequence[str]], answers: Sequence[str],
              gold_answers: Sequence[str], meteor: bool = True, scoring: str = DEFAULT_SCORING) -> dict[str, float]:
    """Everything the training job writes per epoch: rationale metrics + answer accuracy.

    Items without reference explanations count for the accuracy only.
    """
    has_refs = any(r and r.strip() for refs in references for r in refs)
    scores = rationale_scores(rationales, references, meteor=meteor, scoring=scoring) if has_refs else {}
    scores["accuracy"] = answer_accuracy(answers, gold_answers, scoring)
    scores["items"] = len(gold_answers)
    return scores


def scored_as(scores: dict, scoring: str) -> dict:
    """The figures of one scoring mode from an evaluation (illume.evaluation writes the first mode's
    at the top, with "scoring" naming it, and each other under its name); empty when not scored so."""
    check_scoring(scoring)
    if scores.get("scoring", DEFAULT_SCORING) == scoring:
        return {k: v for k, v in scores.items() if k not in SCORINGS}
    return dict(scores.get(scoring) or {})


def candidate_diversity(feedback: Sequence[Feedback]) -> dict[str, float]:
    """Distinct candidates per item, and distinct bigrams over all bigrams of the candidates."""
    if not feedback:
        return {"candidates_per_item": 0.0, "distinct_2": 0.0}
    bigrams: list[tuple[str, str]] = []
    for record in feedback:
        for text in record.candidates:
            words = normalise(text).split()
            bigrams += list(zip(words, words[1:]))
    per_item = sum(len({normalise(t) for t in f.candidates}) for f in feedback) / len(feedback)
    return {"candidates_per_item": round(per_item, 3),
            "distinct_2": round(len(set(bigrams)) / len(bigrams), 4) if bigrams else 0.0}


def annotation_effort(feedback: Sequence[Feedback]) -> dict[str, float | int | None]:
    """Annotator-seconds (Label Studio's lead_time per annotation) and seconds per accepted rationale."""
    seconds = [t for record in feedback for t in record.lead_times if t is not None]
    accepted = sum(len(record.accepted) + len(record.written) for record in feedback)
    total = sum(seconds)
    return {"annotator_seconds": round(total, 1), "annotations_timed": len(seconds), "accepted_rationales": accepted,
            "seconds_per_accepted_rationale": round(total / accepted, 1) if accepted and seconds else None}
