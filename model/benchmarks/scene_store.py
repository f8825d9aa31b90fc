"""The loader benchmark's input: scene-sized S2 + S1 COGs and the store built from them.

The Sentinel-2 + Sentinel-1 COGs are rendered from the sample world; the GeoPile-2 store is
the one the pipeline builds from them.

Scene-sized files, not the sample world's 256 px SEN12MS patches: a TorchGeo user reads
chips out of scene COGs (a Sentinel-2 tile, a Sentinel-1 swath on another UTM zone), and that
is where warping on the fly costs what it costs in practice. The store is built by the
pipeline's own command, ``python -m pipeline run``, in a subprocess (model/ never imports
pipeline/; they meet in the store format) and cached beside the scenes; the pipeline
publishes a store whole, so a store that exists is complete.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from catalogs.atomic_files import write_text
from catalogs.sample.scenes import COLLECTION, SceneSet, ensure_scenes, write_scene_catalog
from catalogs.store_format import FORMAT_VERSION

LAYOUT = "stacked"  # one 12-band 10 m COG per scene: what a TorchGeo RasterDataset reads as is
CHIP_PX = 256
CATALOG_DIR = "catalog"
STORE = "geopile2.zarr"
PARAMS = "params.yaml"
REPO = Path(__file__).resolve().parents[2]  # where ``pipeline`` is, installed or not


@dataclass(frozen=True)
class SceneStore:
    """A built store and the catalog of the scenes it was cut from."""

    store: Path
    catalog: Path


def ensure_scene_store(
    bench_dir: Path,
    scenes: int,
    scene_px: int = 1024,
    seed: int = 0,
    progress: Callable[[str], None] = print,
) -> SceneStore:
    """Render (or reuse) ``scenes`` scenes and build (or reuse) their store.

    Raises:
        RuntimeError: with the pipeline's output, when the build fails.
    """
    scene_set = SceneSet(bench_dir, seed=seed, scene_px=scene_px, layout=LAYOUT)
    rendered = ensure_scenes(scene_set, scenes, processes=os.cpu_count() or 1)
    if rendered:
        progress(f"rendered {rendered} scenes of {scene_px} px into {scene_set.root}")
    folder = bench_dir / f"loader-{scene_set.root.name}-n{scenes}-format{FORMAT_VERSION}"
    built = SceneStore(folder / STORE, folder / CATALOG_DIR / "catalog.json")
    if built.store.exists() and built.catalog.exists():
        return built
    folder.mkdir(parents=True, exist_ok=True)
    write_scene_catalog(scene_set, scenes, folder / CATALOG_DIR)
    pipeline = {
        "catalog": f"{CATALOG_DIR}/catalog.json",
        "collections": [COLLECTION],
        "work_dir": "work",
        "store": STORE,
        "reports_dir": "reports",
        "workers": 0,
        "coregister": {
            "sources": {COLLECTION: {"reference": "s2", "chip_px": CHIP_PX, "stride_px": CHIP_PX}}
        },
        # The catalog names the rendered scenes, which live outside its folder.
        "fetch": {"allowed_local_folders": [str(scene_set.root.resolve())]},
    }
    write_text(folder / PARAMS, yaml.safe_dump({"pipeline": pipeline}, sort_keys=False))
    progress(f"building their GeoPile-2 store: python -m pipeline run (in {folder})")
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--params", PARAMS, "--workers", "0", "--quiet"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": path},
    )
    if done.returncode != 0:
        raise RuntimeError(f"building {built.store} failed:\n{done.stdout}\n{done.stderr}")
    return built
