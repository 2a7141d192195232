"""Technique profiles: the default catalogue, memory sizes, errors admins read, selection."""

from __future__ import annotations

import copy

import pytest
import yaml

from daas_hub.errors import SettingsError
from daas_hub.profiles import (
    _BUILTIN_DEFAULT,
    Profile,
    ProfileCatalogue,
    Resources,
    default_catalogue_path,
    load_catalogue,
    parse_catalogue,
    parse_memory,
)

G = 1024**3
M = 1024**2
SIX = ["python", "diffraction", "spectroscopy", "tomography", "crystallography", "ptychography"]


@pytest.fixture(scope="module")
def default():
    return load_catalogue()


def test_default_catalogue_has_six_complete_profiles(default):
    assert default.slugs == SIX
    assert default.file == str(default_catalogue_path())
    for p in default.profiles:
        assert p.name and p.description, p.slug
        assert p.backends and set(p.backends) <= {"local", "kubernetes", "slurm"}, p.slug
        # every default profile with an image runs on Kubernetes (ptychography: Slurm only,
        # PyNX has no package an image could install; tests/test_images_static.py)
        assert bool(p.image) == ("kubernetes" in p.backends), p.slug
        assert not p.slurm_environment, p.slug  # works on a cluster without environment modules
        for field in ("cpu", "memory", "gpu", "hours"):
            assert getattr(p.default, field) <= getattr(p.max, field), (p.slug, field)


def test_default_python_profile_in_full(default):
    assert default.get("python") == Profile(
        slug="python",
        name="General Python",
        description="JupyterLab with the scientific Python stack (NumPy, SciPy, h5py, silx, matplotlib).",
        backends=("local", "kubernetes", "slurm"),
        instruments=(),
        image="registry.facility.example/daas/python:2026.11",
        slurm_environment="",
        apptainer_image=None,
        local_environment={},
        default=Resources(cpu=2, memory=4 * G, gpu=0, hours=4),
        max=Resources(cpu=16, memory=64 * G, gpu=1, hours=12),
    )
    assert default.get("python").gpu_allowed
    assert not default.get("spectroscopy").gpu_allowed


def test_minimal_profile_takes_the_builtin_resources():
    cat = parse_catalogue({"profiles": [{"slug": "p", "name": "P", "description": "", "backends": ["local"]}]},
                          "cat.yaml")
    assert cat == ProfileCatalogue((Profile(slug="p", name="P", description="", backends=("local",)),), "cat.yaml")
    assert cat.profiles[0].default == cat.profiles[0].max == _BUILTIN_DEFAULT == Resources(1, 2 * G, 0, 4)


def test_max_alone_caps_the_builtin_default():
    """A small profile that only sets a maximum is not refused for the default it did not write."""
    cat = parse_catalogue({"profiles": [{
        "slug": "tiny", "name": "Tiny", "description": "", "backends": ["local"],
        "resources": {"max": {"cpu": 0.5, "memory": "1G"}},
    }]}, "cat.yaml")
    p = cat.profiles[0]
    assert p.max == Resources(cpu=0.5, memory=1 * G, gpu=0, hours=4)
    assert p.default == Resources(cpu=0.5, memory=1 * G, gpu=0, hours=4)


def test_partial_default_takes_the_rest_capped_by_the_max():
    cat = parse_catalogue({"profiles": [{
        "slug": "small", "name": "Small", "description": "", "backends": ["local"],
        "resources": {"default": {"cpu": 2}, "max": {"cpu": 4, "memory": "1G", "hours": 2}},
    }]}, "cat.yaml")
    assert cat.profiles[0].default == Resources(cpu=2, memory=1 * G, gpu=0, hours=2)
    assert cat.profiles[0].max == Resources(cpu=4, memory=1 * G, gpu=0, hours=2)


def test_default_alone_is_also_the_max():
    cat = parse_catalogue({"profiles": [{
        "slug": "big", "name": "Big", "description": "", "backends": ["local"],
        "resources": {"default": {"cpu": 8, "memory": "16G", "gpu": 1}},
    }]}, "cat.yaml")
    assert cat.profiles[0].default == cat.profiles[0].max == Resources(8, 16 * G, 1, 4)


@pytest.mark.parametrize("text, size", [
    ("4G", 4 * G),
    ("512M", 512 * M),
    ("1.5G", int(1.5 * G)),
    ("64K", 64 * 1024),
    ("2T", 2 * 1024**4),
    ("1000", 1000),
    (" 8G ", 8 * G),
])
def test_parse_memory(text, size):
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["4 GB", "4GB", "4g", "G", "", "-1G", "1,5G", "4Gi"])
def test_parse_memory_refuses(text):
    with pytest.raises(ValueError, match="is not a memory size such as 4G or 512M"):
        parse_memory(text)


BASE = {"profiles": [
    {"slug": "python", "name": "Python", "description": "d", "backends": ["local", "kubernetes"],
     "kubernetes": {"image": "img:1"},
     "resources": {"default": {"cpu": 2, "memory": "4G"}, "max": {"cpu": 4, "memory": "8G"}}},
    {"slug": "tomo", "name": "Tomo", "description": "d", "backends": ["slurm"]},
]}


def _edit(fn):
    def mutate():
        d = copy.deepcopy(BASE)
        fn(d)
        return d
    return mutate


P0 = 'profiles[0] "python"'

ERRORS = [
    pytest.param(_edit(lambda d: d["profiles"][0]["resources"]["default"].update(cpu=8)),
                 f"{P0} > resources > default > cpu", "the default cpu is larger than the maximum",
                 "lower resources.default.cpu or raise resources.max.cpu", id="default-cpu-over-max"),
    pytest.param(_edit(lambda d: d["profiles"][0]["resources"]["default"].update(memory="16G")),
                 f"{P0} > resources > default > memory", "the default memory is larger than the maximum",
                 "lower resources.default.memory", id="default-memory-over-max"),
    pytest.param(_edit(lambda d: d["profiles"][0].pop("kubernetes")), P0,
                 "offers the kubernetes backend but names no image", "add kubernetes: {image: ...}",
                 id="kubernetes-without-image"),
    pytest.param(_edit(lambda d: d["profiles"][1].update(slug="python")), 'profiles[1] "python"',
                 "this profile slug is listed twice", "give each profile its own slug", id="duplicate-slug"),
    pytest.param(_edit(lambda d: d["profiles"][1].update(gpus=1)), 'profiles[1] "tomo"',
                 "'gpus' was unexpected",
                 "remove or rename the key; the keys allowed here are: backends, description, instruments, "
                 "kubernetes, local, name, resources, slug, slurm", id="unknown-key"),
    pytest.param(_edit(lambda d: d["profiles"][0]["resources"]["max"].update(memory="4 GB")),
                 f"{P0} > resources > max > memory", "'4 GB' does not match",
                 'write memory as a number with K, M, G or T, e.g. "4G"', id="bad-memory"),
    pytest.param(_edit(lambda d: d["profiles"][0]["resources"]["max"].update(memory=4)),
                 f"{P0} > resources > max > memory", "4 is not of type 'string'",
                 'write memory as a number with K, M, G or T', id="memory-without-unit"),
    pytest.param(_edit(lambda d: d["profiles"][1].update(backends=["cloud"])),
                 'profiles[1] "tomo" > backends[0]', "'cloud' is not one of",
                 "use one of: local, kubernetes, slurm", id="unknown-backend"),
    pytest.param(_edit(lambda d: d["profiles"][1].update(slug="Tomo X")),
                 'profiles[1] "Tomo X" > slug', "does not match", "use lower-case letters", id="bad-slug"),
    pytest.param(lambda: {"profiles": []}, "profiles", "should be non-empty", "", id="no-profiles"),
]


@pytest.mark.parametrize("make, entry, problem, fix", ERRORS)
def test_catalogue_errors(tmp_path, make, entry, problem, fix):
    file = tmp_path / "profiles.yaml"
    file.write_text(yaml.safe_dump(make(), sort_keys=False))
    with pytest.raises(SettingsError) as e:
        load_catalogue(file)
    message = str(e.value)
    assert message.startswith(f"{file}: {entry}: "), message
    assert problem in message
    assert f"\n  Fix: {fix}" in message


def test_missing_catalogue_file(tmp_path):
    with pytest.raises(SettingsError) as e:
        load_catalogue(tmp_path / "nope.yaml")
    assert str(e.value) == (
        f"{tmp_path / 'nope.yaml'}: the profile catalogue file does not exist\n"
        "  Fix: create it (docs/profiles.md) or remove profiles.catalogue to use the default"
    )


def test_select_keeps_the_order_given(default):
    chosen = default.select(["spectroscopy", "python"], entry="profiles > enabled", settings_file="site.yaml")
    assert chosen.slugs == ["spectroscopy", "python"]
    assert chosen.file == default.file


def test_select_unknown_slug(default):
    with pytest.raises(SettingsError) as e:
        default.select(["python", "tomogrpahy"], entry="profiles > enabled", settings_file="/etc/daas/site.yaml")
    assert str(e.value) == (
        '/etc/daas/site.yaml: profiles > enabled[1]: unknown profile "tomogrpahy"\n'
        f"  Fix: use one of the profiles in {default.file}: {', '.join(SIX)}"
    )


@pytest.mark.parametrize("backend, instrument, slugs", [
    (None, None, SIX),
    ("local", None, ["python", "diffraction", "spectroscopy"]),
    ("kubernetes", None, SIX[:-1]),
    (None, "BM05", ["python", "tomography"]),
    ("local", "ID21", ["python", "spectroscopy"]),
    ("local", "BM05", ["python"]),
    ("slurm", "P06", ["python", "spectroscopy", "ptychography"]),
    ("cloud", None, []),
])
def test_available(default, backend, instrument, slugs):
    assert [p.slug for p in default.available(backend=backend, instrument=instrument)] == slugs


def test_the_shipped_catalogues_module_lines_are_disabled_examples():
    """A cluster without environment modules runs every shipped profile; the module
    lines stay in the file as commented examples that say what they need."""
    text = default_catalogue_path().read_text()
    module_lines = [line.strip() for line in text.splitlines() if 'environment: "module load' in line]
    assert module_lines and all(line.startswith("# slurm:") and "example" in line for line in module_lines)
