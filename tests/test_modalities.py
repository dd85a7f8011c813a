"""The modality table (unimodal_free/modalities.py) is the one place modalities are described."""

import dataclasses
import subprocess
import sys

from unimodal_free.batch import modality_specs
from unimodal_free.config import MaskingConfig, load_config
from unimodal_free.data.reading.elements import DECODERS, KNOWN_EXTS
from unimodal_free.embedder import file_modality
from unimodal_free.modalities import MODALITIES, MODALITY, SUFFIX_MODALITY, TABLE
from unimodal_free.objective.masking import mask_spec


def test_config_loads_without_data_or_torch():
    """The config sits below data (no import cycle) and stays light: loading and validating one
    (the speech relations included) imports neither unimodal_free.data nor torch."""
    code = ("import sys; from unimodal_free.config import load_config; load_config(None, ['data.n_mels=80']); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('unimodal_free.data', "
            "'unimodal_free.batch'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_row_has_a_decoder_and_its_masking_keys():
    """A row without a decoder, or a masking key no row names, fails here (not at the first sample)."""
    assert list(DECODERS) == list(MODALITIES)
    fields = {f.name for f in dataclasses.fields(MaskingConfig)}
    named = {key for m in TABLE for key in (m.masking.ratio, m.masking.block, m.masking.inverse) if key}
    assert named == fields


def test_mask_spec_reads_the_keys_its_row_names():
    cfg = load_config(None, ["masking.image_ratio=0.6", "masking.image_block=2", "masking.image_inverse_block=false",
                             "masking.speech_ratio=0.3", "masking.speech_span=7", "masking.text_ratio=0.2",
                             "masking.text_span=3"])
    got = {m: dataclasses.astuple(mask_spec(cfg.masking, m)) for m in MODALITIES}
    assert got == {"image": (0.6, 2, False), "speech": (0.3, 7, False), "text": (0.2, 3, False)}
    assert mask_spec(load_config(None).masking, "image").inverse  # the data2vec 2.0 default


def test_element_widths_and_suffixes_come_from_the_table():
    data = load_config(None, ["data.patch_size=4", "data.image_size=64", "data.n_mels=40",
                              "data.frames_per_element=3"]).data
    specs = modality_specs(data, vocab_size=99)
    assert [(s.name, s.coord_dims, s.value_dim, s.vocab_size) for s in specs.values()] == [
        ("image", 2, 48, 0), ("speech", 1, 120, 0), ("text", 1, 0, 99)]
    assert set(KNOWN_EXTS) == set(SUFFIX_MODALITY) | {"json"}
    assert [file_modality(f"x.{ext.upper()}") for ext in ("jpeg", "ogg", "txt")] == ["image", "speech", "text"]
    assert MODALITY["text"].tokens and not MODALITY["image"].tokens
