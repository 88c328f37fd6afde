"""Look at a generator: a grid of its samples per class beside real images, with the teacher's
label and confidence on each, and per-class teacher agreement / confidence numbers.

    python -m bench.look GENERATOR_DIR TEACHER_DIR DATA_DIR OUT.png

Exploration aid for issue 21 (what does the student learn from?); not a benchmark.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from gandistill.data.dataset import as_float, load_split
from gandistill.stages.common import load_classifier, load_generator


def grid(images: np.ndarray, rows: int, cols: int, scale: int = 3) -> Image.Image:
    n, c, h, w = images.shape
    canvas = np.ones((rows * (h + 2), cols * (w + 2), 3), np.float32)
    for i in range(min(n, rows * cols)):
        r, k = divmod(i, cols)
        img = images[i].transpose(1, 2, 0)
        canvas[r * (h + 2): r * (h + 2) + h, k * (w + 2): k * (w + 2) + w] = img if c == 3 else img.repeat(3, 2)
    out = Image.fromarray((canvas * 255).clip(0, 255).astype(np.uint8))
    return out.resize((out.width * scale, out.height * scale), Image.NEAREST)


@torch.no_grad()
def main(gen_dir: str, teacher_dir: str, data_dir: str, out: str, per_class: int = 10) -> None:
    generator, teacher = load_generator(gen_dir), load_classifier(teacher_dir)
    k = generator.num_classes
    labels = torch.arange(k).repeat_interleave(per_class)
    torch.manual_seed(0)
    fake, _ = generator.sample(len(labels), labels=labels)
    probs = teacher(fake).softmax(1)
    conf, pred = probs.max(1)
    val = load_split(data_dir, "val")
    real = []
    for c in range(k):
        real.append(val.x[val.y == c][:per_class])
    real_t = as_float(torch.from_numpy(np.concatenate(real)))
    rprobs = teacher(real_t).softmax(1)
    for c in range(k):
        m = labels == c
        print(f"class {c}: fake agreement {float((pred[m] == c).float().mean()):.2f} conf {float(conf[m].mean()):.2f}"
              f" | real conf {float(rprobs[labels == c].max(1).values.mean()):.2f}"
              f" | fake pixel std {float(fake[m].std()):.3f} real {float(real_t[labels == c].std()):.3f}")
    # rows = classes: generated then real side by side
    both = torch.cat([fake.view(k, per_class, *fake.shape[1:]), real_t.view(k, per_class, *fake.shape[1:])], 1)
    img = grid(both.flatten(0, 1).numpy(), k, 2 * per_class)
    draw = ImageDraw.Draw(img)
    h = fake.shape[-1] + 2
    for i in range(len(labels)):
        r, col = divmod(i, per_class)
        colour = (0, 160, 0) if pred[i] == labels[i] else (220, 0, 0)
        draw.text((col * h * 3 + 2, r * h * 3), f"{int(pred[i])}:{float(conf[i]):.1f}", fill=colour)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    print(out)


if __name__ == "__main__":
    main(*sys.argv[1:5])
