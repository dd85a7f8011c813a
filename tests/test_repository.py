"""The repository as a user meets it: licence, citation, documents and their links, the config
reference, and the shipped configs as package data."""

import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_license_is_the_full_apache_2_text():
    text = (ROOT / "LICENSE").read_text()
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    for section in ("1. Definitions.", "3. Grant of Patent License.", "9. Accepting Warranty or Additional Liability.",
                    "END OF TERMS AND CONDITIONS", "Copyright 2026 the unimodal_free authors"):
        assert section in text, section
    assert len(text.split()) > 1500  # the whole licence, not a pointer to it


def test_citation_cff_parses_and_agrees_with_pyproject():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    for key in ("cff-version", "message", "title", "authors", "version", "date-released", "license", "keywords",
                "references"):
        assert key in cff, key
    assert cff["cff-version"] == "1.2.0"
    assert cff["version"] == PROJECT["version"] and cff["license"] == PROJECT["license"]
    assert str(cff["date-released"]) == "2026-11-28"
    assert all(a.get("name") or a.get("family-names") for a in cff["authors"])
    refs = {r["authors"][0]["family-names"]: r for r in cff["references"]}
    assert set(refs) == {"Baevski", "Jaegle"}
    assert refs["Baevski"]["title"].startswith("data2vec") and refs["Baevski"]["year"] == 2022
    assert refs["Jaegle"]["title"].startswith("Perceiver IO") and refs["Jaegle"]["year"] == 2022
    assert all(r["type"] and r["title"] and r["authors"] for r in cff["references"])
    # CFF 1.2.0's schema allows no other keys (additionalProperties: false at both levels).
    assert set(cff) <= {"abstract", "authors", "cff-version", "commit", "contact", "date-released", "doi",
                        "identifiers", "keywords", "license", "license-url", "message", "preferred-citation",
                        "references", "repository", "repository-artifact", "repository-code", "title", "type", "url",
                        "version"}
    assert all(set(r) <= {"type", "title", "authors", "year", "collection-title", "conference", "url", "doi"}
               for r in cff["references"])
    assert all(set(a) <= {"family-names", "given-names"} for r in cff["references"] for a in r["authors"])


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^(```|    ).*$", "", path.read_text(), flags=re.M)
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, flags=re.M)}


DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: p.name)
def test_every_relative_link_resolves_inside_the_repository(doc):
    text = doc.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links or doc.name == "CONFIG.md"
    for link in links:
        if re.match(r"[a-z]+:", link):  # https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        assert path.is_relative_to(ROOT.resolve()), f"{doc.name}: {link} points outside the repository"
        assert path.exists(), f"{doc.name}: {link} does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{doc.name}: {link}: no heading with that anchor"


# Words that tell how the project got here instead of what is true: issue numbers, work sessions,
# commit hashes in prose, "before this change", "used to", "now" (a state contrasted with an unnamed
# earlier one). A comparison of two configurations names both configs instead.
HISTORY = [r"\bissues? #?\d+", r"\bissue-\d+", r"\bsessions?\b", r"\bbefore (this|these|the) (change|fix)",
           r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b", r"\bwe changed\b", r"\bused to\b",
           r"\bpreviously\b", r"\bno longer\b", r"\bnow\b", r"\brefactor", r"\bshared/", r"\bprevious default\b",
           r"\(before,", r"\bbefore\s*(->|/)\s*after\b", r"\bas before\b", r"\bthe old\b", r"\bearlier (days?|code)\b",
           r"\bcode changes\b", r"\bnot re-?run\b", r"\bwas lent\b"]


def _prose(path: Path) -> str:
    """The text outside code blocks, lines joined: quoted commands and their output (hex digests, log lines)
    are verbatim tool text, not the document's voice, and a phrase may wrap across lines."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return " ".join(line for line in text.splitlines() if not line.startswith("    "))


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: p.name)
def test_user_documents_state_what_is_true_not_how_it_came_about(doc):
    """CONFIG.md included: its text is the help strings in unimodal_free/config/sections.py, which users read too."""
    prose = _prose(doc)
    found = [f"{m.group(0)!r} in ...{prose[max(0, m.start() - 60):m.end() + 20]}..."
             for pattern in HISTORY for m in re.finditer(pattern, prose, flags=re.I)]
    assert not found, f"{doc.name}: development history in a user document:\n" + "\n".join(found)


def test_readme_fits_a_few_screens():
    """The README is the entry point (a few screens); details live in docs/ and the README links to them."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_config_reference_is_current():
    """docs/CONFIG.md is generated; regenerate it with the command it names when this fails."""
    from unimodal_free.config_reference import COMMAND, markdown

    assert (ROOT / "docs" / "CONFIG.md").read_text() == markdown(), f"stale: run `{COMMAND}`"


def test_config_reference_lists_every_key():
    from unimodal_free.config import Config, config_to_dict
    from unimodal_free.config.validation import iter_options

    text = (ROOT / "docs" / "CONFIG.md").read_text()
    for where, _, _ in iter_options(Config(), ""):
        assert f"| `{where}` |" in text, where
    assert "| `data.demo_dir` | `\"~/.cache/unimodal_free/demo\"` | str | not empty |" in text
    assert "| `optim.betas` | `[0.9, 0.98]` | list of float | each in [0, 1), exactly 2 |" in text
    assert "| `path` | `\"\"` | str | not empty |" in text  # a source's fields
    assert len(config_to_dict(Config())) == text.count("\n## `")


def test_configs_folder_is_the_packaged_one():
    """One copy of each shipped config: configs/ in a checkout is a link to the package's folder."""
    from unimodal_free.config import CONFIG_DIR

    assert (ROOT / "configs").is_symlink() and (ROOT / "configs").resolve() == CONFIG_DIR
    assert sorted(p.name for p in CONFIG_DIR.glob("*.json")) == ["joint-base.json", "joint.json", "tiny.json"]


@pytest.mark.slow
def test_wheel_ships_the_configs_and_model_sizes_runs_from_it(tmp_path):
    """Build the wheel, install it alone into a folder, run ``model.sizes`` from elsewhere and read the explorer's page:
    no checkout needed."""
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT), "-w", str(wheels)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = wheels.glob("unimodal_free-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = next(z.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert {f"unimodal_free/configs/{c}.json" for c in ("joint", "joint-base", "tiny")} <= names
    assert {f"unimodal_free/explore/{f}" for f in ("page.html", "page.js", "page.css")} <= names  # the explorer's page
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names) and "License-Expression: Apache-2.0" in meta
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import unimodal_free; print(unimodal_free.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(target)), where  # the installed wheel, not this checkout
    page = subprocess.run([sys.executable, "-c", "from importlib import resources; "
                           "print(resources.files('unimodal_free.explore').joinpath('page.js').read_text()[:40])"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert page.startswith("// The explorer page."), page  # what the explorer's server reads, from the wheel
    proc = subprocess.run([sys.executable, "-m", "unimodal_free.model.sizes"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[:2] for line in lines[1:]] == [["tiny", "configs/tiny.json"], ["default", "configs/joint.json"],
                                                       ["base", "configs/joint-base.json"]]
