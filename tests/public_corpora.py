"""Tiny copies of the public corpora in their published layouts (real JPEG drawings, espeak-ng speech),
for the converter tests. Each writer returns what it wrote, so a test can count it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from unimodal_free.data.corpora.icons import speak

COLOURS = ("red", "green", "blue", "orange", "purple", "black", "teal", "brown")
SHAPES = ("circle", "square")


@dataclass
class Written:
    """What a fixture holds, per our split name: pictures, captions, recordings."""

    pictures: dict[str, int] = field(default_factory=dict)
    captions: dict[str, int] = field(default_factory=dict)
    recordings: dict[str, int] = field(default_factory=dict)

    def add(self, split: str, captions: int, recordings: int = 0, pictures: int = 1) -> None:
        for counts, n in ((self.pictures, pictures), (self.captions, captions), (self.recordings, recordings)):
            counts[split] = counts.get(split, 0) + n


def picture(path: Path, i: int) -> None:
    """A JPEG drawing: a coloured circle or square on white, different per ``i``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", (64 + 8 * (i % 3), 48), "white")
    shape = ImageDraw.Draw(im).ellipse if i % 2 == 0 else ImageDraw.Draw(im).rectangle
    shape((8 + i, 6, 40 + i, 38), fill=COLOURS[i % len(COLOURS)])
    im.save(path, format="JPEG", quality=90)


def caption(i: int, k: int) -> str:
    return f"a {COLOURS[i % len(COLOURS)]} {SHAPES[i % 2]} drawn {('small', 'big', 'left', 'right', 'up', 'low')[k]}"


def record(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    speak(text, "en", path)


def captions_per_picture(i: int) -> int:
    return 6 if i == 3 else 5  # SpokenCOCO and COCO have a few pictures with more than five


def spokencoco(root: Path, coco: Path) -> Written:
    """SpokenCOCO_{train,val}.json + wavs/ (layout of the SpokenCOCO release, Hsu et al. 2021,
    https://groups.csail.mit.edu/sls/downloads/placesaudio/ and its README), pictures under coco/{train,val}2014/."""
    written = Written()
    for part, split, ids in (("train", "train", range(4)), ("val", "heldout", range(4, 7))):
        data = []
        for i in ids:
            name = f"{part}2014/COCO_{part}2014_{i:012d}.jpg"
            picture(coco / name, i)
            caps = []
            for k in range(captions_per_picture(i)):
                wav = f"wavs/{part}/{i}/m{i}k{k}-UTT{i}{k}_{i}_{k}.wav"
                record(root / wav, caption(i, k))
                caps.append({"text": caption(i, k), "wav": wav, "speaker": f"m{i}k{k}", "uttid": f"UTT{i}{k}"})
            data.append({"image": name, "captions": caps})
            written.add(split, len(caps), len(caps))
        (root / f"SpokenCOCO_{part}.json").write_text(json.dumps({"data": data}))
    return written


def flickr8k_audio(root: Path, missing_wav: str | None = None) -> Written:
    """Flickr8k_text (Flickr8k.token.txt, Flickr_8k.*Images.txt), Flicker8k_Dataset/ and flickr_audio/wavs/
    (layouts of Hodosh et al. 2013's release and https://groups.csail.mit.edu/sls/downloads/flickraudio/)."""
    written = Written()
    tokens, lists = [], {"train": [], "dev": [], "test": []}
    splits = ("train", "train", "train", "dev", "test", "test")
    ours = {"train": "train", "dev": "val", "test": "heldout"}
    for i, split in enumerate(splits):
        stem = f"{1000268201 + i}_693b08cb0e"
        picture(root / "Flicker8k_Dataset" / f"{stem}.jpg", i)
        lists[split].append(f"{stem}.jpg")
        for k in range(5):
            tokens.append(f"{stem}.jpg#{k}\t{caption(i, k)}")
            wav = f"{stem}_{k}.wav"
            if wav != missing_wav:
                record(root / "flickr_audio" / "wavs" / wav, caption(i, k))
        written.add(ours[split], 5, 5)
    (root / "Flickr8k.token.txt").write_text("\n".join(tokens) + "\n")
    for split, names in lists.items():
        (root / f"Flickr_8k.{split}Images.txt").write_text("\n".join(names) + "\n")
    return written


def coco_captions(root: Path) -> Written:
    """annotations/captions_{train,val}2014.json + train2014/, val2014/ (https://cocodataset.org/#format-data)."""
    written = Written()
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for part, split, ids in (("train", "train", range(5)), ("val", "heldout", range(5, 8))):
        images, anns = [], []
        for i in ids:
            name = f"COCO_{part}2014_{i:012d}.jpg"
            picture(root / f"{part}2014" / name, i)
            images.append({"id": 100 + i, "file_name": name, "width": 64, "height": 48})
            anns += [{"id": 1000 + 10 * i + k, "image_id": 100 + i, "caption": caption(i, k)}
                     for k in range(captions_per_picture(i))]
            written.add(split, captions_per_picture(i))
        (root / "annotations" / f"captions_{part}2014.json").write_text(
            json.dumps({"info": {}, "images": images, "annotations": anns}))
    return written


def karpathy(path: Path, pictures: dict[str, str], captions: dict[str, list[str]] | None = None) -> None:
    """Karpathy's split file (dataset_coco.json / dataset_flickr30k.json: images[].filename/.split/.sentences)."""
    images = [{"filename": name, "filepath": name.split("_")[1] if name.startswith("COCO_") else "", "split": split,
               "sentences": [{"raw": c, "tokens": c.split()} for c in (captions or {}).get(name, [])]}
              for name, split in pictures.items()]
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))


def flickr30k(root: Path) -> Written:
    """results_20130124.token + flickr30k-images/ (Young et al. 2014's release) and Karpathy's
    dataset_flickr30k.json."""
    written = Written()
    tokens, split_of, caps = [], {}, {}
    for i, split in enumerate(("train", "train", "train", "val", "test", "test")):
        name = f"{36979 + i}.jpg"
        picture(root / "flickr30k-images" / name, i)
        caps[name] = [caption(i, k) for k in range(5)]
        tokens += [f"{name}#{k}\t{c}" for k, c in enumerate(caps[name])]
        split_of[name] = split
        written.add({"train": "train", "val": "val", "test": "heldout"}[split], 5)
    (root / "results_20130124.token").write_text("\n".join(tokens) + "\n")
    karpathy(root / "dataset_flickr30k.json", split_of, caps)
    return written


def places_audio(root: Path, places205: Path) -> Written:
    """metadata/{train,dev_seen}_2020.json + wavs/ of the Places Audio Captions release
    (https://groups.csail.mit.edu/sls/downloads/placesaudio/; the 2020 split files DAVEnet and
    "Talk, Don't Write" read), pictures under the Places205 folder."""
    written = Written()
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    for name, split, ids in (("train_2020.json", "train", range(4)), ("dev_seen_2020.json", "heldout", range(4, 6))):
        data = []
        for i in ids:
            image = f"{'abg'[i % 3]}/{('abbey', 'beach', 'garden')[i % 3]}/gsun_{i:032x}.jpg"
            picture(places205 / image, i)
            wav = f"wavs/{i}/utterance_{2800 + i}.wav"
            record(root / wav, caption(i, 0))
            data.append({"uttid": f"A{i}-GSUN{i}", "speaker": f"A{i}", "wav": wav, "image": image,
                         "asr_text": caption(i, 0)})
            written.add(split, 0, 1)
        (root / "metadata" / name).write_text(json.dumps({
            "image_base_path": "/data/sls/scratch/places205/images", "audio_base_path": "/data/sls/placesaudio",
            "data": data}))
    return written
