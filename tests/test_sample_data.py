"""The demo's sample data is real enough to analyse: pyFAI integrates the
diffraction stack with the shipped geometry and finds LaB6's rings where
Bragg's law puts them; h5py reads the XRF map and tomography projections.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from daas_hub import sampledata

from conftest import make_world_dir


@pytest.fixture(scope="module")
def data_dir():
    import shutil

    folder = make_world_dir("daas-hub-sample-")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_pyfai_integrates_the_diffraction_stack(data_dir):
    import pyFAI

    sampledata.diffraction_stack(data_dir / "scan.h5", frames=2)
    sampledata.poni_file(data_dir / "geometry.poni")
    ai = pyFAI.load(str(data_dir / "geometry.poni"))
    with h5py.File(data_dir / "scan.h5") as f:
        assert f.attrs["default"] == "entry"
        image = f["entry/data/data"][0]  # through the NXdata soft link
    result = ai.integrate1d(image, 500, unit="2th_deg")
    i, tth = result.intensity, result.radial
    peaks = [tth[k] for k in range(1, len(i) - 1) if i[k] > i[k - 1] and i[k] >= i[k + 1] and i[k] > 3 * np.median(i)]
    lam = sampledata.WAVELENGTH * 1e10
    expected = [np.degrees(2 * np.arcsin(lam * np.sqrt(h * h + k * k + l * l) / (2 * sampledata.LAB6_A)))
                for h, k, l in sampledata.LAB6_HKL[:4]]  # noqa: E741
    assert len(peaks) >= 4
    assert np.allclose(peaks[:4], expected, atol=0.15), (peaks, expected)


def test_xrf_map_and_tomography_are_nexus(data_dir):
    sampledata.xrf_map(data_dir / "xrf.h5")
    sampledata.tomo_projections(data_dir / "tomo.h5")
    with h5py.File(data_dir / "xrf.h5") as f:
        spectra = f["entry/data/spectra"]
        assert spectra.shape == (32, 32, 512) and f["entry/data"].attrs["signal"] == "spectra"
        fe_channel = int(round(sampledata.XRF_LINES["Fe"] / 0.02))
        total = spectra[...].sum(axis=(0, 1))
        assert total[fe_channel] > 3 * np.median(total)
    with h5py.File(data_dir / "tomo.h5") as f:
        assert f["entry/data/projections"].shape == (32, 64, 64)
