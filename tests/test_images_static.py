"""Static checks on every image definition under images/ (no build: fast).

Each Containerfile: the base is pinned (an exact tag or a digest, never ``latest``), the
final USER is not root, no ENV/ARG carries a password, secret or token; every technique
image's Python packages are pinned; every profile of the packaged catalogue that names an
image names one built from images/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from daas_hub.profiles import load_catalogue

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "images"
CONTAINERFILES = sorted(IMAGES.glob("*/Containerfile"))
SECRET_WORDS = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|PRIVATE_KEY", re.I)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def arg_defaults(path: Path) -> dict[str, str]:
    defaults = {}
    for word, rest in instructions(path):
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
    return defaults


def resolve(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), text)


def is_pinned(reference: str) -> bool:
    """An exact tag or a digest: ``name:1.2.3``, ``name@sha256:...``; never latest or none."""
    if re.search(r"@sha256:[0-9a-f]{64}$", reference):
        return True
    name, _, tag = reference.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest") and not tag.startswith("$")


@pytest.mark.parametrize("path", CONTAINERFILES, ids=lambda p: p.parent.name)
def test_base_is_pinned(path):
    args = arg_defaults(path)
    froms = [rest.split()[0] for word, rest in instructions(path) if word == "FROM"]
    assert froms, f"{path} has no FROM"
    for ref in froms:
        resolved = resolve(ref, args)
        assert is_pinned(resolved), f"{path}: FROM {ref} resolves to {resolved!r}, not an exact tag or digest"


@pytest.mark.parametrize("path", CONTAINERFILES, ids=lambda p: p.parent.name)
def test_final_user_is_not_root(path):
    # NB_UID/NB_GID come from the base image's ARGs when the file does not declare them
    values = {**arg_defaults(IMAGES / "base" / "Containerfile"), **arg_defaults(path)}
    users = [rest for word, rest in instructions(path) if word == "USER"]
    assert users, f"{path} never sets USER: it would run as its base's user"
    final = resolve(users[-1], values)
    uid = final.split(":")[0]
    assert "$" not in final, f"{path}: USER {users[-1]} does not resolve"
    assert uid not in ("root", "0"), f"{path}: the final USER is root"


@pytest.mark.parametrize("path", CONTAINERFILES, ids=lambda p: p.parent.name)
def test_no_secrets_and_no_latest(path):
    for word, rest in instructions(path):
        if word in ("ENV", "ARG", "LABEL"):
            for name in re.findall(r"(\w+)\s*=", rest) or [rest.split()[0]]:
                assert not SECRET_WORDS.search(name), f"{path}: {word} {name} looks like a secret; pass it at run time"
        assert not re.search(r":latest\b", rest), f"{path}: {word} {rest} uses a latest tag"


@pytest.mark.parametrize("lock", sorted(IMAGES.glob("*/requirements.lock")), ids=lambda p: p.parent.name)
def test_technique_packages_are_pinned(lock):
    lines = [ln.strip() for ln in lock.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines
    for ln in lines:
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", ln), f"{lock}: {ln!r} is not NAME==VERSION"
    wanted = {re.split(r"[<>=!~ ]", ln)[0].lower().replace("_", "-")
              for ln in (lock.parent / "requirements.in").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")}
    locked = {ln.split("==")[0].lower().replace("_", "-") for ln in lines}
    assert wanted <= locked, f"{lock}: {sorted(wanted - locked)} from requirements.in are not locked"


def image_dir(reference: str) -> Path:
    """``registry.example/daas/diffraction:0.1.0`` is built from ``images/diffraction``."""
    last = reference.split("@")[0].rsplit("/", 1)[-1]
    return IMAGES / last.split(":")[0]


def test_every_profile_image_is_built_here():
    catalogue = load_catalogue()
    named = [(p.slug, p.image) for p in catalogue.profiles if p.image]
    assert named, "the packaged catalogue names no image"
    for slug, ref in named:
        assert is_pinned(ref), f"profile {slug}: image {ref} is not an exact tag"
        assert (image_dir(ref) / "Containerfile").is_file(), (
            f"profile {slug} names {ref}, but images/{image_dir(ref).name}/Containerfile does not exist"
        )


@pytest.mark.parametrize(("reference", "expected"), [
    ("registry.facility.example/daas/diffraction:0.1.0", "diffraction"),
    ("localhost/daas-hub/base:0.1.0", "base"),
    ("registry:5000/daas/python@sha256:" + "0" * 64, "python"),
])
def test_image_dir(reference, expected):
    assert image_dir(reference).name == expected


@pytest.mark.parametrize(("reference", "pinned"), [
    ("quay.io/jupyterhub/k8s-hub:4.4.0", True),
    ("debian:12.11-slim", True),
    ("debian@sha256:" + "a" * 64, True),
    ("debian:latest", False),
    ("debian", False),
    ("registry:5000/debian", False),
    ("debian:${TAG}", False),
])
def test_is_pinned(reference, pinned):
    assert is_pinned(reference) is pinned


def test_the_images_copy_every_top_level_folder_the_package_is_built_from():
    """pyproject.toml's packages and data files come from these folders; an image that does not
    COPY one cannot build daas-hub (a data file added later broke that once)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    roots = {p.split("/")[0] for p in setuptools.get("package-dir", {}).values()}
    for files in setuptools.get("data-files", {}).values():
        roots |= {f.split("/")[0] for f in files}
    roots.discard("")
    for name in ("base", "hub"):
        text = (REPO / "images" / name / "Containerfile").read_text()
        copied = {line.split()[1].split("/")[0] for line in text.splitlines()
                  if line.startswith("COPY ") and "/tmp/daas-hub-src" in line}
        assert roots <= copied, f"images/{name}/Containerfile does not COPY {sorted(roots - copied)}"
