"""launch/setup.sh's decisions (which Python environment, OS packages, apt-get, torch wheel), read from
its --print-plan, and the runs that stop before pip: no apt-get, no ensurepip. The script runs from a
copy so the checkout's own .venv never changes the answer; the PATH is this machine's /usr/bin without
apt-get, sudo, espeak-ng and chromium, as on a machine where the user has neither root nor sudo."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HIDDEN = {"apt-get", "apt", "sudo", "espeak-ng", "espeak", "chromium", "chromedriver"}
HAS_ICONS = os.path.isdir("/usr/share/icons/Adwaita/48x48")
# The optional packages setup.sh finds missing on the PATH below, in its order (the icons are a folder, not hidden).
MISSING = ["espeak-ng", *([] if HAS_ICONS else ["adwaita-icon-theme"]), "chromium", "chromium-driver"]


@pytest.fixture
def checkout(tmp_path):
    """A folder holding launch/setup.sh (all that --print-plan reads)."""
    (tmp_path / "repo" / "launch").mkdir(parents=True)
    shutil.copy(ROOT / "launch" / "setup.sh", tmp_path / "repo" / "launch" / "setup.sh")
    return tmp_path / "repo"


@pytest.fixture(scope="module")
def bin_without_apt(tmp_path_factory):
    """/usr/bin (Debian's /bin is the same folder) less apt-get, sudo, espeak-ng and chromium."""
    out = tmp_path_factory.mktemp("bin")
    for name in os.listdir("/usr/bin"):
        if name not in HIDDEN:
            (out / name).symlink_to(Path("/usr/bin") / name)
    return out


@pytest.fixture(scope="module")
def other_env(tmp_path_factory):
    """A real virtual environment (no pip: the plan only needs its bin/python)."""
    env = tmp_path_factory.mktemp("env") / "myenv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    return env


def setup_sh(checkout, path, *args, **env):
    return subprocess.run(["bash", str(checkout / "launch" / "setup.sh"), *args], capture_output=True, text=True,
                          env={"PATH": str(path), "HOME": os.environ["HOME"], **env}, timeout=120)


def plan(checkout, path, *args, **env):
    proc = setup_sh(checkout, path, "--print-plan", *args, **env)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split(": ", 1) for line in proc.stdout.splitlines())


def test_plan_without_an_active_environment_makes_dot_venv_with_python3(checkout, bin_without_apt):
    got = plan(checkout, bin_without_apt)
    python, version = got["python"].rsplit(" ", 1)
    assert os.path.realpath(python) == os.path.realpath("/usr/bin/python3")  # the python3 on PATH
    assert version == "(%d.%d.%d)" % tuple(int(x) for x in subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print(*sys.version_info[:3])"], capture_output=True, text=True,
        check=True).stdout.split())
    assert got["environment"] == f"{checkout}/.venv, ./.venv (new: python -m venv)"
    assert got["os packages missing"] == " ".join(MISSING)
    assert got["apt-get"] == "no (apt-get not found)"
    assert got["torch"] == "cuda, PyPI's wheel (the CUDA build on Linux x86_64)"
    assert got["pip install"] == "-e .[dev]"


def test_plan_uses_the_active_environment(checkout, bin_without_apt, other_env):
    got = plan(checkout, bin_without_apt, VIRTUAL_ENV=str(other_env), EXTRAS="bench")
    assert got["python"].startswith(f"{other_env}/bin/python ")
    assert got["environment"] == f"{other_env}, the active virtual environment"
    assert got["pip install"] == "-e .[dev,bench]"
    got = plan(checkout, bin_without_apt, CONDA_PREFIX=str(other_env))
    assert got["environment"] == f"{other_env}, the active conda environment"
    proc = setup_sh(checkout, bin_without_apt, "--print-plan", VIRTUAL_ENV=str(checkout / "gone"))
    assert proc.returncode == 1 and proc.stderr == (
        f"error: the active virtual environment {checkout}/gone has no bin/python: deactivate it or repair it\n")


def test_plan_torch_choice(checkout, bin_without_apt):
    cpu = "cpu, the CPU-only wheel from https://download.pytorch.org/whl/cpu"
    assert plan(checkout, bin_without_apt, "--torch", "cpu")["torch"] == cpu
    assert plan(checkout, bin_without_apt, TORCH="cpu")["torch"] == cpu
    assert plan(checkout, bin_without_apt, "--torch=cuda", TORCH="cpu")["torch"].startswith("cuda, PyPI")
    proc = setup_sh(checkout, bin_without_apt, "--torch", "rocm")
    assert proc.returncode == 1 and proc.stderr == "error: --torch/TORCH: 'rocm' is not cuda or cpu\n"


def test_plan_as_root_with_apt_get_and_as_a_user_without_sudo(checkout, bin_without_apt, tmp_path):
    with_apt = tmp_path / "bin-with-apt"
    shutil.copytree(bin_without_apt, with_apt, symlinks=True)
    (with_apt / "apt-get").symlink_to("/usr/bin/apt-get")
    if os.getuid() != 0:
        assert plan(checkout, with_apt)["apt-get"] == "no (not root and no passwordless sudo)"
        return
    assert plan(checkout, with_apt)["apt-get"] == "yes (root)"
    with tempfile.TemporaryDirectory() as shared:  # pytest's folders are private to root
        os.chmod(shared, 0o755)
        shutil.copytree(checkout, Path(shared) / "repo")
        shutil.copytree(with_apt, Path(shared) / "bin", symlinks=True)
        for folder in (Path(shared) / "repo", Path(shared) / "repo" / "launch", Path(shared) / "bin"):
            folder.chmod(0o755)
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash",
                               f"{shared}/repo/launch/setup.sh", "--print-plan"],
                              capture_output=True, text=True, env={"PATH": f"{shared}/bin", "HOME": "/"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "apt-get: no (not root and no passwordless sudo)" in proc.stdout.splitlines()


def test_without_apt_get_notes_what_is_lost_and_without_ensurepip_names_python3_venv(
        checkout, bin_without_apt, tmp_path):
    """A real run, not the plan: no apt-get, so one note per missing package; then a python3 lacking
    ensurepip (Debian without python3-venv: here a module that fails to import stands in for it) stops
    with the package to install, before anything is created."""
    shadow = tmp_path / "no-ensurepip" / "ensurepip"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'ensurepip'\")\n")
    proc = setup_sh(checkout, bin_without_apt, PYTHONPATH=str(shadow.parent))
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    notes = [line for line in lines if line.startswith("note: ")]
    assert notes[0] == "note: not installing OS packages: apt-get: no (apt-get not found)"
    assert notes[1].startswith("note: espeak-ng is not installed: the demo data cannot be generated")
    assert notes[-2].startswith("note: chromium is not installed: the explorer's browser test")
    assert notes[-1].startswith("note: chromium-driver is not installed: the explorer's browser test")
    assert len(notes) == 1 + len(MISSING)
    assert lines[-1].startswith("error: ") and lines[-1].endswith(
        "cannot create a virtual environment (no venv/ensurepip module): apt-get install python3-venv, "
        "or activate an environment of your own and run again")
    assert not (checkout / ".venv").exists()


def test_torch_and_torchaudio_are_pinned_to_one_release_and_this_environment_has_it():
    """`torchaudio==2.11.*` let a fresh install pair torch 2.11.0 with torchaudio 2.11.1, whose
    libtorchaudio.so does not load with it (undefined symbol): every speech decode failed. setup.sh's
    --torch cpu reads the same pins."""
    import importlib.metadata

    pins = dict(re.findall(r'"(torch|torchaudio)==([^"]+)"', (ROOT / "pyproject.toml").read_text()))
    assert set(pins) == {"torch", "torchaudio"} and pins["torch"] == pins["torchaudio"], pins
    assert re.fullmatch(r"\d+\.\d+\.\d+", pins["torch"]), pins
    for name, version in pins.items():
        assert importlib.metadata.version(name).split("+")[0] == version


@pytest.mark.slow
def test_cpu_wheel_from_an_unreachable_index_stops_with_one_line_and_changes_nothing(
        checkout, bin_without_apt, tmp_path):
    """--torch cpu with an index that cannot be reached (a closed local port; download.pytorch.org
    itself is unreachable from the reference machine): one error line, the environment as it was."""
    shutil.copy(ROOT / "pyproject.toml", checkout / "pyproject.toml")
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=300)
    index = "http://127.0.0.1:9/simple"
    proc = setup_sh(checkout, bin_without_apt, "--torch", "cpu", VIRTUAL_ENV=str(env), TORCH_CPU_INDEX=index,
                    PIP_CONFIG_FILE=os.devnull)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert last.startswith(f"error: pip could not install torch==") and f"(CPU) from {index} (unreachable" in last
    log = Path(last.split("pip's messages: ")[1].split(")")[0])
    assert "No matching distribution found for torch==" in log.read_text()
    log.unlink()
    installed = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
                               capture_output=True, text=True, check=True).stdout
    assert "torch" not in installed and os.readlink(checkout / ".venv") == str(env)
