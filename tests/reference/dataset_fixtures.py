"""Writes tests/fixtures/datasets/: a Hugging Face cache holding a tiny dataset in the layout of
lambdalabs/pokemon-blip-captions (parquet under data/, columns image = struct{bytes, path} and
text), written by pyarrow as `datasets` writes it, with refs/main pointing at its snapshot.
The PNGs are small generated pictures (stripes and discs) so the test data is real images.
Run with pyarrow and pillow: python tests/reference/dataset_fixtures.py"""
import io
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

ROOT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "datasets", "hub")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
COLOURS = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (230, 200, 40), (150, 60, 180), (30, 180, 190)]
CAPTIONS = ["a red disc on stripes", "a green disc on stripes", "a blue disc on stripes",
            "a yellow disc on stripes", "a purple disc on stripes", "a cyan disc on stripes"]


def picture(colour, size=(48, 40)):
    img = Image.new("RGB", size, (245, 245, 245))
    draw = ImageDraw.Draw(img)
    for x in range(0, size[0], 8):
        draw.rectangle([x, 0, x + 3, size[1]], fill=(200, 200, 200))
    draw.ellipse([10, 6, 38, 34], fill=colour)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def main():
    if os.path.exists(ROOT):
        shutil.rmtree(ROOT)
    repo = os.path.join(ROOT, "datasets--tiny--disc-captions")
    snapshot = os.path.join(repo, "snapshots", COMMIT, "data")
    os.makedirs(snapshot)
    os.makedirs(os.path.join(repo, "refs"))
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(COMMIT)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = [{"bytes": picture(c), "path": None} for c in COLOURS]
    table = pa.table({"image": pa.array(images, type=image_type), "text": CAPTIONS})
    pq.write_table(table.slice(0, 4), os.path.join(snapshot, "train-00000-of-00002.parquet"))
    pq.write_table(table.slice(4), os.path.join(snapshot, "train-00001-of-00002.parquet"))
    print(f"wrote {repo}")


if __name__ == "__main__":
    main()
