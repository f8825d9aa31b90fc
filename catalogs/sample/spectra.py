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
WAVELENGTHS_NM = np.array([400, 450, 500, 550, 600, 650, 700, 750, 800, 900, 1000, 1300, 1400,
                           1600, 1800, 2000, 2200, 2400], dtype=np.float64)
_SPECTRA = {
    "water": [.060, .070, .070, .060, .050, .040, .030, .020, .020, .010, .010, .005, .003, .003,
              .002, .002, .002, .002],
    "tree": [.030, .030, .040, .070, .050, .030, .050, .250, .350, .360, .350, .250, .080, .180,
             .100, .050, .090, .060],
    "shrub": [.040, .050, .060, .090, .080, .070, .100, .250, .300, .310, .310, .280, .120, .250,
              .180, .080, .150, .100],
    "grass": [.030, .040, .050, .100, .070, .050, .080, .350, .450, .460, .450, .350, .120, .270,
              .180, .070, .150, .100],
    "crop": [.030, .040, .060, .120, .080, .050, .100, .400, .500, .500, .480, .380, .120, .280,
             .190, .080, .160, .110],
    "impervious": [.080, .090, .100, .110, .120, .130, .140, .150, .160, .170, .180, .200, .170,
                   .220, .210, .180, .200, .190],
    "roof": [.060, .070, .080, .100, .150, .220, .260, .280, .300, .320, .330, .350, .300, .360,
             .350, .320, .300, .280],
    "bare_soil": [.070, .090, .110, .140, .170, .200, .220, .240, .260, .280, .300, .330, .280,
                  .360, .340, .300, .330, .300],
    "wetland": [.030, .040, .050, .070, .060, .050, .070, .180, .220, .200, .180, .120, .060, .100,
                .070, .040, .060, .050],
    "car": [.050, .060, .070, .080, .090, .100, .100, .110, .110, .120, .120, .120, .100, .120,
            .110, .100, .100, .100],
}
SPECTRA = np.array([_SPECTRA[m] for m in MATERIALS], dtype=np.float64)
# Optically thick cloud: bright and flat in the visible, darker in the SWIR (ice/water absorption).
CLOUD_SPECTRUM = np.array([.70, .72, .72, .72, .71, .70, .70, .69, .68, .66, .64, .55, .40, .45,
                           .35, .25, .30, .25], dtype=np.float64)

# C-band sigma0 (dB) per material: (VV, VH). Water is a specular sink, roofs double-bounce.
_BACKSCATTER_DB = {
    "water": (-22.0, -29.0), "tree": (-7.5, -13.0), "shrub": (-9.0, -16.0),
    "grass": (-11.0, -18.0), "crop": (-10.0, -16.5), "impervious": (-9.0, -17.0),
    "roof": (-1.0, -8.0), "bare_soil": (-13.0, -21.0), "wetland": (-12.0, -19.0),
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
        j = int(np.clip(np.searchsorted(WAVELENGTHS_NM, wavelength) - 1, 0,
                        len(WAVELENGTHS_NM) - 2))
        t = np.clip((wavelength - WAVELENGTHS_NM[j]) /
                    (WAVELENGTHS_NM[j + 1] - WAVELENGTHS_NM[j]), 0.0, 1.0)
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
