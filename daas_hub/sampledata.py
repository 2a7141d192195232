"""Synthetic but physically shaped sample data for the demo (NeXus/HDF5).

- a powder diffraction image stack of LaB6 (Debye-Scherrer rings at the right
  angles for the geometry in :func:`poni_file`, so pyFAI integrates it);
- an XRF map (a spectrum per pixel with Ca, Fe, Cu, Zn lines);
- tomography projections of a simple phantom.

Needs numpy and h5py (the ``demo`` extra).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

# geometry shared by the image and its PONI file
PIXEL = 172e-6  # m
SHAPE = (256, 256)
DISTANCE = 0.05  # m
WAVELENGTH = 1.0e-10  # m
LAB6_A = 4.15689  # Angstrom
LAB6_HKL = [(1, 0, 0), (1, 1, 0), (1, 1, 1), (2, 0, 0), (2, 1, 0), (2, 1, 1), (2, 2, 0)]


def _nx(group, nx_class: str, **attrs):
    group.attrs["NX_class"] = nx_class
    for k, v in attrs.items():
        group.attrs[k] = v
    return group


def diffraction_stack(path: Path, *, frames: int = 8, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    y, x = np.indices(SHAPE, dtype=np.float64)
    c = (SHAPE[0] / 2, SHAPE[1] / 2)
    r = np.hypot((y - c[0]) * PIXEL, (x - c[1]) * PIXEL)
    tth = np.arctan2(r, DISTANCE)  # radians
    lam = WAVELENGTH * 1e10
    stack = np.empty((frames, *SHAPE), dtype=np.uint16)
    for i in range(frames):
        image = 20 + 200 * np.exp(-tth / 0.15)  # air scatter background
        for h, k, l in LAB6_HKL:  # noqa: E741
            d = LAB6_A / np.sqrt(h * h + k * k + l * l)
            if lam / (2 * d) >= 1:
                continue
            peak = 2 * np.arcsin(lam / (2 * d))
            width = np.radians(0.12 + 0.01 * i)  # the ring broadens during the scan
            image += 3000 / (h * h + k * k + l * l) * np.exp(-0.5 * ((tth - peak) / width) ** 2)
        stack[i] = np.clip(rng.poisson(image), 0, 65535)
    with h5py.File(path, "w") as f:
        entry = _nx(f.create_group("entry"), "NXentry", default="data")
        entry["title"] = "LaB6 calibrant, in situ cathode scan"
        inst = _nx(entry.create_group("instrument"), "NXinstrument")
        inst["name"] = "ID11"
        det = _nx(inst.create_group("detector"), "NXdetector")
        det.create_dataset("data", data=stack, chunks=(1, *SHAPE), compression="gzip")
        det["distance"] = DISTANCE
        det["distance"].attrs["units"] = "m"
        det["x_pixel_size"] = PIXEL
        det["y_pixel_size"] = PIXEL
        mono = _nx(inst.create_group("monochromator"), "NXmonochromator")
        mono["wavelength"] = WAVELENGTH * 1e10
        mono["wavelength"].attrs["units"] = "angstrom"
        data = _nx(entry.create_group("data"), "NXdata", signal="data", interpretation="image")
        data["data"] = h5py.SoftLink("/entry/instrument/detector/data")
        f.attrs["default"] = "entry"


def poni_file(path: Path) -> None:
    path.write_text(
        "# Nota: C-Order, 1 refers to the Y axis, 2 to the X axis\n"
        "poni_version: 2.1\n"
        "Detector: Detector\n"
        f'Detector_config: {{"pixel1": {PIXEL}, "pixel2": {PIXEL}, "max_shape": [{SHAPE[0]}, {SHAPE[1]}], "orientation": 3}}\n'
        f"Distance: {DISTANCE}\n"
        f"Poni1: {SHAPE[0] / 2 * PIXEL}\n"
        f"Poni2: {SHAPE[1] / 2 * PIXEL}\n"
        "Rot1: 0.0\nRot2: 0.0\nRot3: 0.0\n"
        f"Wavelength: {WAVELENGTH}\n"
    )


XRF_LINES = {"Ca": 3.69, "Fe": 6.40, "Cu": 8.04, "Zn": 8.63}  # K-alpha, keV


def xrf_map(path: Path, *, shape=(32, 32), channels: int = 512, seed: int = 2) -> None:
    rng = np.random.default_rng(seed)
    energy = np.arange(channels) * 0.02  # keV
    y, x = np.indices(shape, dtype=np.float64) / max(shape)
    maps = {
        "Ca": 0.5 + 0.5 * np.cos(6 * x),
        "Fe": np.exp(-((x - 0.3) ** 2 + (y - 0.6) ** 2) / 0.02),
        "Cu": 0.8 * (y > 0.4 + 0.2 * np.sin(8 * x)),
        "Zn": 0.3 * rng.random(shape),
    }
    spectra = np.full((*shape, channels), 2.0)
    for element, e0 in XRF_LINES.items():
        spectra += 400 * maps[element][..., None] * np.exp(-0.5 * ((energy - e0) / 0.07) ** 2)
    counts = rng.poisson(spectra).astype(np.uint32)
    with h5py.File(path, "w") as f:
        entry = _nx(f.create_group("entry"), "NXentry", default="data")
        entry["title"] = "XRF map"
        data = _nx(entry.create_group("data"), "NXdata", signal="spectra", axes=[".", ".", "energy"])
        data.create_dataset("spectra", data=counts, chunks=(8, 8, channels), compression="gzip")
        data["energy"] = energy
        data["energy"].attrs["units"] = "keV"
        fit = _nx(entry.create_group("elements"), "NXdata", signal="Fe", auxiliary_signals=["Ca", "Cu", "Zn"])
        for element, m in maps.items():
            fit[element] = m.astype(np.float32)
        f.attrs["default"] = "entry"


def tomo_projections(path: Path, *, angles: int = 32, size: int = 64) -> None:
    y, x = np.indices((size, size), dtype=np.float64) - size / 2
    theta = np.linspace(0, np.pi, angles, endpoint=False)
    projections = np.empty((angles, size, size), dtype=np.float32)
    for i, t in enumerate(theta):
        u = x * np.cos(t)  # a rotating ellipsoid, projected
        proj = np.clip(1 - (u / (size / 3)) ** 2 - (y / (size / 2.5)) ** 2, 0, None)
        projections[i] = np.exp(-2 * np.sqrt(proj))
    with h5py.File(path, "w") as f:
        entry = _nx(f.create_group("entry"), "NXentry", default="data")
        data = _nx(entry.create_group("data"), "NXdata", signal="projections", interpretation="image")
        data.create_dataset("projections", data=projections, compression="gzip")
        data["rotation_angle"] = np.degrees(theta)
        f.attrs["default"] = "entry"
