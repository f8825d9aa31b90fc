"""Physical constants of the sample world.

Material reflectance spectra, SAR backscatter and a simple atmosphere. A sensor band sees a spectrum
through its registry response (centre, width).
"""

from __future__ import annotations

import numpy as np

from catalogs.sample.world import MATERIALS
from catalogs.sensors import Sensor

# Hemispherical reflectance of each material at these wavelengths (nm), typical of library
# spectra (vegetation red edge at 700-750 nm, water absorption beyond 900 nm, dry soil and
# roofs rising into the short-wave infrared, the leaf-water dips at 1400 and 1900 nm).
WAVELENGTHS_NM = np.array(
    [
        400,
        450,
        500,
        550,
        600,
        650,
        700,
        750,
        800,
        900,
        1000,
        1300,
        1400,
        1600,
        1800,
        2000,
        2200,
        2400,
    ],
    dtype=np.float64,
)
_SPECTRA = {
    "water": [
        0.060,
        0.070,
        0.070,
        0.060,
        0.050,
        0.040,
        0.030,
        0.020,
        0.020,
        0.010,
        0.010,
        0.005,
        0.003,
        0.003,
        0.002,
        0.002,
        0.002,
        0.002,
    ],
    "tree": [
        0.030,
        0.030,
        0.040,
        0.070,
        0.050,
        0.030,
        0.050,
        0.250,
        0.350,
        0.360,
        0.350,
        0.250,
        0.080,
        0.180,
        0.100,
        0.050,
        0.090,
        0.060,
    ],
    "shrub": [
        0.040,
        0.050,
        0.060,
        0.090,
        0.080,
        0.070,
        0.100,
        0.250,
        0.300,
        0.310,
        0.310,
        0.280,
        0.120,
        0.250,
        0.180,
        0.080,
        0.150,
        0.100,
    ],
    "grass": [
        0.030,
        0.040,
        0.050,
        0.100,
        0.070,
        0.050,
        0.080,
        0.350,
        0.450,
        0.460,
        0.450,
        0.350,
        0.120,
        0.270,
        0.180,
        0.070,
        0.150,
        0.100,
    ],
    "crop": [
        0.030,
        0.040,
        0.060,
        0.120,
        0.080,
        0.050,
        0.100,
        0.400,
        0.500,
        0.500,
        0.480,
        0.380,
        0.120,
        0.280,
        0.190,
        0.080,
        0.160,
        0.110,
    ],
    "impervious": [
        0.080,
        0.090,
        0.100,
        0.110,
        0.120,
        0.130,
        0.140,
        0.150,
        0.160,
        0.170,
        0.180,
        0.200,
        0.170,
        0.220,
        0.210,
        0.180,
        0.200,
        0.190,
    ],
    "roof": [
        0.060,
        0.070,
        0.080,
        0.100,
        0.150,
        0.220,
        0.260,
        0.280,
        0.300,
        0.320,
        0.330,
        0.350,
        0.300,
        0.360,
        0.350,
        0.320,
        0.300,
        0.280,
    ],
    "bare_soil": [
        0.070,
        0.090,
        0.110,
        0.140,
        0.170,
        0.200,
        0.220,
        0.240,
        0.260,
        0.280,
        0.300,
        0.330,
        0.280,
        0.360,
        0.340,
        0.300,
        0.330,
        0.300,
    ],
    "wetland": [
        0.030,
        0.040,
        0.050,
        0.070,
        0.060,
        0.050,
        0.070,
        0.180,
        0.220,
        0.200,
        0.180,
        0.120,
        0.060,
        0.100,
        0.070,
        0.040,
        0.060,
        0.050,
    ],
    "car": [
        0.050,
        0.060,
        0.070,
        0.080,
        0.090,
        0.100,
        0.100,
        0.110,
        0.110,
        0.120,
        0.120,
        0.120,
        0.100,
        0.120,
        0.110,
        0.100,
        0.100,
        0.100,
    ],
}
SPECTRA = np.array([_SPECTRA[m] for m in MATERIALS], dtype=np.float64)
# Optically thick cloud: bright and flat in the visible, darker in the SWIR (ice/water absorption).
CLOUD_SPECTRUM = np.array(
    [
        0.70,
        0.72,
        0.72,
        0.72,
        0.71,
        0.70,
        0.70,
        0.69,
        0.68,
        0.66,
        0.64,
        0.55,
        0.40,
        0.45,
        0.35,
        0.25,
        0.30,
        0.25,
    ],
    dtype=np.float64,
)

# C-band sigma0 (dB) per material: (VV, VH). Water is a specular sink, roofs double-bounce.
_BACKSCATTER_DB = {
    "water": (-22.0, -29.0),
    "tree": (-7.5, -13.0),
    "shrub": (-9.0, -16.0),
    "grass": (-11.0, -18.0),
    "crop": (-10.0, -16.5),
    "impervious": (-9.0, -17.0),
    "roof": (-1.0, -8.0),
    "bare_soil": (-13.0, -21.0),
    "wetland": (-12.0, -19.0),
    "car": (0.0, -8.0),
}
BACKSCATTER_LINEAR = 10.0 ** (np.array([_BACKSCATTER_DB[m] for m in MATERIALS]) / 10.0)
SPECKLE_LOOKS = 4.4  # equivalent number of looks of Sentinel-1 IW GRD high resolution


def _band_weights(center_nm: float, width_nm: float) -> np.ndarray:
    """Weights over WAVELENGTHS_NM of a box response [centre - width/2, centre + width/2].

    Integrated on a 1 nm grid with linear interpolation of the spectra.
    """
    fine = np.arange(center_nm - width_nm / 2.0, center_nm + width_nm / 2.0 + 0.5, 1.0)
    weights = np.zeros(len(WAVELENGTHS_NM))
    for wavelength in fine:
        j = int(
            np.clip(np.searchsorted(WAVELENGTHS_NM, wavelength) - 1, 0, len(WAVELENGTHS_NM) - 2)
        )
        t = np.clip(
            (wavelength - WAVELENGTHS_NM[j]) / (WAVELENGTHS_NM[j + 1] - WAVELENGTHS_NM[j]), 0.0, 1.0
        )
        weights[j] += 1.0 - t
        weights[j + 1] += t
    return weights / len(fine)


def response_matrix(sensor: Sensor) -> np.ndarray:
    """(n_bands, n_wavelengths) weights: band reflectance = weights @ spectrum."""
    rows = []
    for band in sensor.bands:
        if band.center_wavelength_nm is None or band.full_width_half_max_nm is None:
            raise ValueError(f"sensor {sensor.name!r} band {band.name!r} has no wavelength")
        rows.append(_band_weights(band.center_wavelength_nm, band.full_width_half_max_nm))
    return np.stack(rows)


def transmittance(sensor: Sensor) -> np.ndarray:
    """Two-way atmospheric transmittance per band.

    Water-vapour absorption near 940 nm and 1375 nm (where the Sentinel-2 cirrus band sees almost
    nothing of the ground).
    """
    centers = np.array([b.center_wavelength_nm for b in sensor.bands], dtype=np.float64)
    t = np.full(len(centers), 0.92)
    t[np.abs(centers - 945.0) < 30.0] = 0.55
    t[np.abs(centers - 1375.0) < 40.0] = 0.01
    return t


def path_reflectance(sensor: Sensor) -> np.ndarray:
    """Rayleigh path reflectance per band (falls with wavelength to the fourth power)."""
    centers = np.array([b.center_wavelength_nm for b in sensor.bands], dtype=np.float64)
    return 0.08 * (450.0 / centers) ** 4
