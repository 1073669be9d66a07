"""How many candidates each simulated critic accepts that are false of their Shapes-X scene.

Samples candidates as the loop does (10 per item: 5 at T=0.3 + 5 at T=0.8, deduplicated)
with the demo model (or --model, with --adapter), on Shapes-X items of a split, and judges
each with the method's ROUGE-L critic (default and paper tokens) and with the scene critic
(illume.datasets.shapes_truth). For each critic: candidates accepted, and how many of those
are false of the scene, outside the checker's vocabulary, or true but beside the answer.
The scene critic accepts nothing false by construction: its checker is validated on its own
by tests/demo/test_shapes_truth.py (every reference explanation accepted, every remark of the
generator true, every reference with the answer swapped false).

    python benchmarks/critic_truth.py [--items 200] [--split train] [--out DIR]

Measured 2026-12-02 on the demo's round-1 items (--split feedback --items 200, seed 0), with the
freshly built seed-0 demo model (1273 candidates), and again after one ILLUME round trained on
what the ROUGE-L critic accepted (data_efficiency.py --critic rouge-l --feedback-items 200
--iterations 1 --arms illume; --adapter of illume-1; 972 candidates):

    critic                    model as built          after one ROUGE-L-fed round
    rouge-l (default tokens)  93 accepted, 19 false (20.4%)   140 accepted, 44 false (31.4%)
    rouge-l (paper tokens)    78 accepted, 17 false (21.8%)   128 accepted, 43 false (33.6%)
    scene                     165 accepted, 0 false            165 accepted, 0 false
    scene+rouge-l             60 accepted, 0 false             76 accepted, 0 false

(plus, under the ROUGE-L critic, 3 and 5 accepted candidates outside the checker's vocabulary,
and 11 and 15 true but beside the answer.)
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from illume import demo_model  # noqa: E402
from illume.critic import RougeCritic, Subject, make_critic  # noqa: E402
from illume.datasets import shapes  # noqa: E402
from illume.datasets.shapes_truth import judge, scene_of  # noqa: E402
from illume.records import atomic_write_text  # noqa: E402
from illume.vlm import VLM, Query, SamplingConfig  # noqa: E402

CRITICS = {"rouge-l (default tokens)": RougeCritic(), "rouge-l (paper tokens)": RougeCritic(scoring="paper"),
           "scene": make_critic("scene"), "scene+rouge-l": make_critic("scene+rouge-l")}


def verdict_kind(text: str, subject: Subject) -> str:
    verdict = judge(text, subject.question, subject.answer, subject.scene or {})
    if not verdict.parsed:
        return "unparsed"
    if not verdict.true:
        return "false"
    return "true, supports" if verdict.supports else "true, beside the answer"


def measure(vlm: VLM, items, batch: int = 40, seed: int = 0) -> dict:
    accepted = {name: Counter() for name in CRITICS}
    examples: dict[str, list] = {name: [] for name in CRITICS}
    total = Counter()
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        queries = [Query(image, item.question, item.answer) for item, image in chunk]
        for (item, _), candidates in zip(chunk, vlm.sample(queries, SamplingConfig(seed=seed))):
            subject = Subject(item.question, item.answer, scene_of(item.meta))
            texts = [c.text for c in candidates]
            kinds = [verdict_kind(t, subject) for t in texts]
            total.update(kinds)
            for name, critic in CRITICS.items():
                for text, kind, ok in zip(texts, kinds, critic.tick(texts, item.explanations, subject)):
                    if ok:
                        accepted[name][kind] += 1
                        if kind != "true, supports" and len(examples[name]) < 8:
                            examples[name].append({"question": item.question, "answer": item.answer,
                                                   "candidate": text, "verdict": kind})
        print(f"judged {min(start + batch, len(items))}/{len(items)} items", file=sys.stderr, flush=True)
    result = {"candidates": sum(total.values()), "candidates_by_verdict": dict(total), "critics": {}}
    for name, counts in accepted.items():
        n = sum(counts.values())
        result["critics"][name] = {"accepted": n, "by_verdict": dict(counts),
                                   "false_share": round(counts["false"] / n, 4) if n else None,
                                   "not_true_share": round((counts["false"] + counts["unparsed"]) / n, 4) if n else None,
                                   "examples": examples[name]}
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200, help="Shapes-X items to sample candidates for")
    parser.add_argument("--split", default="train", help="Shapes-X split the items come from (the demo's feedback split)")
    parser.add_argument("--seed", type=int, default=0, help="data, sampling and demo-model seed")
    parser.add_argument("--model", help="model directory (default: the demo model, built when missing)")
    parser.add_argument("--adapter", help="LoRA adapter directory on top of --model")
    parser.add_argument("--out", type=Path, help="write critic_truth.json here")
    args = parser.parse_args(argv)
    model = args.model or str(demo_model.ensure_demo_model(seed=args.seed, progress=lambda m: print(m, file=sys.stderr)))
    vlm = VLM.load(model, adapter=args.adapter, device="cpu")
    result = measure(vlm, shapes.generate_split(args.split, args.items, args.seed), seed=args.seed)
    result.update(model=model, adapter=args.adapter, items=args.items, split=args.split, seed=args.seed)
    for name, figures in result["critics"].items():
        share = figures["false_share"]
        print(f"{name:<26} accepted {figures['accepted']:>5}  false {figures['by_verdict'].get('false', 0):>4}"
              f" ({'-' if share is None else f'{100 * share:.1f}%'})  {figures['by_verdict']}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "critic_truth.json", json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
