"""Shapes-X: a synthetic VQA-X-like dataset drawn with Pillow, deterministic from a seed.

Each scene is a 64x64 picture of 2-4 coloured shapes (circle, square, triangle, diamond;
small or large), every shape of a different kind, each centred in one cell of a 4x4 grid
(so a 16-pixel vision patch sees one shape). Each item asks one question about its scene
(colour, shape, count, relative position, size, yes/no), with a one-word answer and three
reference explanations written from a pool of varied wordings.

Layout written by `generate(out_dir, ...)`:
    out_dir/images/<split>-<nnnnn>.png
    out_dir/<split>.jsonl        one illume.records.Item per line
Image paths inside the JSONL are relative to out_dir (the directory of the JSONL file),
the same convention as an export directory.

`Item.meta` holds what tests and benchmarks check against, independent of the text:
    meta["scene"]     {"size", "grid", "shapes": [{"kind", "color", "size", "row", "col",
                       "x", "y", "radius"}, ...]}
    meta["qtype"]     one of QUESTION_TYPES
    meta["targets"]   indices into scene["shapes"] the question is about
    meta["asked"]     for yes/no questions, the {"kind", "color"} asked about
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any, Callable

from PIL import Image, ImageDraw

from illume.errors import IllumeError
from illume.records import Item, write_jsonl

IMAGE_SIZE = 64
GRID = 4
CELL = IMAGE_SIZE // GRID
RADIUS = {"small": 4, "large": 7}
KINDS = ("circle", "square", "triangle", "diamond")
COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
          "yellow": (235, 210, 40), "purple": (150, 60, 190)}
BACKGROUND = (245, 245, 245)
QUESTION_TYPES = ("color", "shape", "count", "position", "size", "yesno")
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
DEFAULT_SIZES = {"train": 400, "val": 100, "test": 100}

Scene = dict[str, Any]
Shape = dict[str, Any]


# ---------------------------------------------------------------- scenes and pictures
def make_scene(rng: random.Random) -> Scene:
    count = rng.randint(2, 4)
    kinds = rng.sample(KINDS, count)
    cells = rng.sample(range(GRID * GRID), count)
    shapes = []
    for kind, cell in zip(kinds, cells):
        row, col = divmod(cell, GRID)
        size = rng.choice(("small", "large"))
        shapes.append({"kind": kind, "color": rng.choice(sorted(COLORS)), "size": size, "row": row, "col": col,
                       "x": col * CELL + CELL // 2, "y": row * CELL + CELL // 2, "radius": RADIUS[size]})
    return {"size": IMAGE_SIZE, "grid": GRID, "shapes": shapes}


def render(scene: Scene) -> Image.Image:
    image = Image.new("RGB", (scene["size"], scene["size"]), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for shape in scene["shapes"]:
        x, y, r, fill = shape["x"], shape["y"], shape["radius"], COLORS[shape["color"]]
        if shape["kind"] == "circle":
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        elif shape["kind"] == "square":
            draw.rectangle((x - r, y - r, x + r, y + r), fill=fill)
        elif shape["kind"] == "triangle":
            draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=fill)
        else:  # diamond
            draw.polygon([(x, y - r - 1), (x + r + 1, y), (x, y + r + 1), (x - r - 1, y)], fill=fill)
    return image


def where(shape: Shape) -> str:
    vertical = "top" if shape["row"] < GRID // 2 else "bottom"
    horizontal = "left" if shape["col"] < GRID // 2 else "right"
    return f"{vertical} {horizontal}"


def caption(scene: Scene, rng: random.Random) -> str:
    """A plain description of the scene (used to pre-train the demo model)."""
    parts = [f"a {s['size']} {s['color']} {s['kind']} at the {where(s)}" for s in scene["shapes"]]
    rng.shuffle(parts)
    return f"{NUMBER_WORDS[len(parts)]} shapes: " + ", ".join(parts) + "."


# ---------------------------------------------------------------- questions
def _pick(rng: random.Random, options: list[str], k: int = 3) -> list[str]:
    """k differently worded explanations (sentences, lower case, ending with a period)."""
    return [text + "." for text in rng.sample(options, k)]


# Explanations, like VQA-X's, mention what is seen beyond the question and the answer
# (where a shape is, its size, the colours of the others), so they need the picture.
def _listing(shapes: list[Shape], colors: bool = False) -> str:
    names = [f"a {s['color']} {s['kind']}" if colors else f"a {s['kind']}" for s in shapes]
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]


def _color_q(scene: Scene, rng: random.Random) -> dict | None:
    i = rng.randrange(len(scene["shapes"]))
    s = scene["shapes"][i]
    k, c, z, w = s["kind"], s["color"], s["size"], where(s)
    return {"question": f"What color is the {k}?", "answer": c, "targets": [i], "explanations": _pick(rng, [
        f"the {k} at the {w} is {c}", f"the {z} {k} is {c}", f"the {k} in the {w} corner is painted {c}",
        f"the {k} is {c} and {z}", f"the only {k} is a {z} {c} one"])}


def _shape_q(scene: Scene, rng: random.Random) -> dict | None:
    colors = [s["color"] for s in scene["shapes"]]
    unique = [i for i, c in enumerate(colors) if colors.count(c) == 1]
    if not unique:
        return None
    i = rng.choice(unique)
    s = scene["shapes"][i]
    k, c, z, w = s["kind"], s["color"], s["size"], where(s)
    return {"question": f"What shape is the {c} object?", "answer": k, "targets": [i], "explanations": _pick(rng, [
        f"the {c} object at the {w} is a {k}", f"the {z} {c} shape is a {k}", f"the {c} thing in the {w} corner is a {k}",
        f"the {k} is the only {c} shape and it is {z}", f"the {c} object is a {z} {k}"])}


def _count_q(scene: Scene, rng: random.Random) -> dict | None:
    shapes = scene["shapes"]
    n = len(shapes)
    word = NUMBER_WORDS[n]
    return {"question": "How many shapes are there?", "answer": str(n), "targets": list(range(n)),
            "explanations": _pick(rng, [
                f"there are {word} shapes: {_listing(shapes)}", f"the picture shows {_listing(shapes)}",
                f"i can see {_listing(shapes, colors=True)}", f"{word} shapes are drawn: {_listing(shapes, colors=True)}",
                f"the image contains {_listing(shapes)}"])}


def _position_q(scene: Scene, rng: random.Random) -> dict | None:
    shapes = scene["shapes"]
    pairs = [(i, j) for i in range(len(shapes)) for j in range(len(shapes)) if i != j]
    rng.shuffle(pairs)
    for i, j in pairs:
        a, b = shapes[i], shapes[j]
        ka, kb, ca, cb = a["kind"], b["kind"], a["color"], b["color"]
        if rng.random() < 0.5 and a["col"] != b["col"]:
            side = "left" if a["col"] < b["col"] else "right"
            other = "right" if side == "left" else "left"
            return {"question": f"Is the {ka} left or right of the {kb}?", "answer": side, "targets": [i, j],
                    "explanations": _pick(rng, [
                        f"the {ca} {ka} is to the {side} of the {cb} {kb}",
                        f"the {cb} {kb} is on the {other} and the {ka} on the {side}",
                        f"the {a['size']} {ka} is further {side} than the {kb}",
                        f"the {kb} is to the {other} of the {ca} {ka}",
                        f"the {ka} sits on the {side} side of the {cb} {kb}"])}
        if a["row"] != b["row"]:
            side = "above" if a["row"] < b["row"] else "below"
            other = "below" if side == "above" else "above"
            high = "higher" if side == "above" else "lower"
            return {"question": f"Is the {ka} above or below the {kb}?", "answer": side, "targets": [i, j],
                    "explanations": _pick(rng, [
                        f"the {ca} {ka} is {side} the {cb} {kb}", f"the {cb} {kb} is {other} the {ka}",
                        f"the {ka} is drawn {high} than the {cb} {kb}",
                        f"the {a['size']} {ka} sits {side} the {kb} in the picture",
                        f"the {kb} is placed {other} the {ca} {ka}"])}
    return None


def _size_q(scene: Scene, rng: random.Random) -> dict | None:
    i = rng.randrange(len(scene["shapes"]))
    s = scene["shapes"][i]
    k, c, z, w = s["kind"], s["color"], s["size"], where(s)
    word = "big" if z == "large" else "tiny"
    return {"question": f"Is the {k} large or small?", "answer": z, "targets": [i], "explanations": _pick(rng, [
        f"the {c} {k} is drawn {word}", f"the {k} at the {w} is {z}", f"the {c} {k} is a {z} shape",
        f"the {c} {k} takes up {'most' if z == 'large' else 'little'} of its space", f"the {k} is {z} and {c}"])}


def _yesno_q(scene: Scene, rng: random.Random) -> dict | None:
    shapes = scene["shapes"]
    if rng.random() < 0.5:  # yes: ask about a shape that is there
        i = rng.randrange(len(shapes))
        s = shapes[i]
        k, c, z, w = s["kind"], s["color"], s["size"], where(s)
        return {"question": f"Is there a {c} {k}?", "answer": "yes", "targets": [i], "asked": {"kind": k, "color": c},
                "explanations": _pick(rng, [
                    f"there is a {c} {k} at the {w}", f"the {k} at the {w} is {c}", f"the picture shows a {z} {c} {k}",
                    f"a {z} {c} {k} is drawn in the image", f"the image contains a {k} that is {c}"])}
    present = {s["kind"]: (i, s) for i, s in enumerate(shapes)}
    if rng.random() < 0.5:  # no: a kind that is there, in another colour
        k = rng.choice(sorted(present))
        i, s = present[k]
        c = rng.choice([c for c in sorted(COLORS) if c != s["color"]])
        real, w = s["color"], where(s)
        return {"question": f"Is there a {c} {k}?", "answer": "no", "targets": [i], "asked": {"kind": k, "color": c},
                "explanations": _pick(rng, [
                    f"the {k} is {real}, not {c}", f"the only {k} in the picture is {real}",
                    f"the {k} at the {w} is {real}", f"the {k} has a {real} color instead",
                    f"there is a {real} {k} but no {c} one"])}
    missing = [k for k in KINDS if k not in present]
    if not missing:
        return None
    k = rng.choice(missing)
    c = rng.choice(sorted(COLORS))
    return {"question": f"Is there a {c} {k}?", "answer": "no", "targets": [], "asked": {"kind": k, "color": c},
            "explanations": _pick(rng, [
                f"there is no {k} in the picture", f"the picture only has {_listing(shapes)}",
                f"no {k} is drawn in the image", f"the shapes are {_listing(shapes, colors=True)}",
                f"the image shows {_listing(shapes)} but no {k}"])}


# ---------------------------------------------------------------- remarks
# A remark is a true statement about a picture that answers no question in particular:
# about one shape, about two shapes and where they are, or listing all of them. The demo
# model learns to make remarks after "<question> <answer>, seeing that" (like rationales
# scraped from the web, they are true but often beside the point); which remark explains
# the answer is what the ILLUME loop then teaches it.
REMARK_FAMILIES = {"one": 0.6, "two": 0.25, "all": 0.15}


def relation(a: Shape, b: Shape) -> list[str]:
    """Every true 'a is <relation> b' wording of where shape a is relative to shape b."""
    found = []
    if a["col"] != b["col"]:
        found.append("to the left of" if a["col"] < b["col"] else "to the right of")
    if a["row"] != b["row"]:
        found.append("above" if a["row"] < b["row"] else "below")
    return found


def remark(scene: Scene, rng: random.Random) -> dict:
    """{"text", "family", "about": shape indices}: one true remark about the scene."""
    shapes_ = scene["shapes"]
    family = rng.choices(list(REMARK_FAMILIES), weights=list(REMARK_FAMILIES.values()))[0]
    if family == "two":
        i, j = rng.sample(range(len(shapes_)), 2)
        a, b = shapes_[i], shapes_[j]
        text = f"the {a['color']} {a['kind']} is {rng.choice(relation(a, b))} the {b['color']} {b['kind']}"
        return {"text": text + ".", "family": family, "about": [i, j]}
    if family == "all":
        text = rng.choice([f"the picture shows {_listing(shapes_)}", f"i can see {_listing(shapes_, colors=True)}"])
        return {"text": text + ".", "family": family, "about": list(range(len(shapes_)))}
    i = rng.randrange(len(shapes_))
    s = shapes_[i]
    k, c, z, w = s["kind"], s["color"], s["size"], where(s)
    text = rng.choice([f"the {k} at the {w} is {c}", f"there is a {c} {k} at the {w}", f"the {z} {k} is {c}",
                       f"the {c} {k} is {z}", f"a {z} {c} {k} is drawn at the {w}",
                       f"the {c} object at the {w} is a {k}"])
    return {"text": text + ".", "family": "one", "about": [i]}


QUESTIONS: dict[str, Callable[[Scene, random.Random], dict | None]] = {
    "color": _color_q, "shape": _shape_q, "count": _count_q,
    "position": _position_q, "size": _size_q, "yesno": _yesno_q,
}


def ask(scene: Scene, qtype: str, rng: random.Random) -> dict | None:
    """One question of a type about a scene (None when the scene does not allow it)."""
    return QUESTIONS[qtype](scene, rng)


def questions_for(scene: Scene, rng: random.Random) -> list[dict]:
    """One question of every type the scene allows."""
    return [q for q in (ask(scene, t, rng) for t in QUESTION_TYPES) if q is not None]


# ---------------------------------------------------------------- items and files
def split_rng(seed: int, split: str) -> random.Random:
    """An independent random stream per (seed, split): splits never share scenes by construction."""
    digest = hashlib.sha256(f"shapes-x:{seed}:{split}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def make_item(rng: random.Random, split: str, index: int) -> tuple[Item, Image.Image]:
    """One item (question types in turn, so every split is balanced) and its picture."""
    while True:
        scene = make_scene(rng)
        qtype = QUESTION_TYPES[index % len(QUESTION_TYPES)]
        q = ask(scene, qtype, rng)
        if q is not None:
            break
    item_id = f"shapes-{split}-{index:05d}"
    meta = {"scene": scene, "qtype": qtype, "targets": q["targets"], "caption": caption(scene, rng)}
    if "asked" in q:
        meta["asked"] = q["asked"]
    item = Item(item_id=item_id, image=f"images/{split}-{index:05d}.png", question=q["question"],
                answer=q["answer"], explanations=q["explanations"], split=split, meta=meta)
    return item, render(scene)


def generate_split(split: str, count: int, seed: int = 0) -> list[tuple[Item, Image.Image]]:
    """Items and pictures of one split, in memory."""
    rng = split_rng(seed, split)
    return [make_item(rng, split, index) for index in range(count)]


def generate(out_dir: str | Path, seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, list[Item]]:
    """Write PNG images and one `<split>.jsonl` per split under out_dir; returns the items."""
    sizes = DEFAULT_SIZES if sizes is None else sizes
    for split, count in sizes.items():
        if not isinstance(count, int) or count < 0:
            raise IllumeError(f"Shapes-X split {split!r} has size {count!r}",
                              "Give each split a whole number of items >= 0, e.g. {'train': 400, 'val': 100}.")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    result: dict[str, list[Item]] = {}
    for split, count in sizes.items():
        items = []
        for item, image in generate_split(split, count, seed):
            image.save(out / item.image, format="PNG", optimize=False)
            items.append(item)
        write_jsonl(out / f"{split}.jsonl", items)
        result[split] = items
    return result


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Write the Shapes-X dataset (PNG images + JSONL items).")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=DEFAULT_SIZES["train"])
    parser.add_argument("--val", type=int, default=DEFAULT_SIZES["val"])
    parser.add_argument("--test", type=int, default=DEFAULT_SIZES["test"])
    args = parser.parse_args()
    items = generate(args.out, args.seed, {"train": args.train, "val": args.val, "test": args.test})
    print(", ".join(f"{split}: {len(v)} items" for split, v in items.items()), f"-> {args.out}")


if __name__ == "__main__":
    main()
