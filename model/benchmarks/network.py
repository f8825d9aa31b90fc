"""The network benchmark: training images/s of msGFM and two comparisons.

Its MoE layer against a dense MLP of the same active FLOPs, and its dense encoder against
timm's Swin of the same configuration.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from catalogs.sensors import get_sensor
from model.nn.encoder import EncoderConfig, SwinEncoder
from model.nn.msgfm import MsGFM
from model.nn.sensors import SensorPatchEmbed

SENSORS = ("sentinel2_l2a", "sentinel1_grd", "rgb", "dsm")  # one of each kind
# Dense bf16 tensor-core peaks (FLOP/s) for model FLOPs utilisation, by device name.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}


@dataclass(frozen=True)
class TrainRate:
    """Training throughput of one configuration."""

    images_per_s: float
    flops_per_image: float | None = None
    mfu: float | None = None


def random_batch(config: EncoderConfig, per_sensor: int, device: torch.device) -> dict:
    """Normalised-looking chips of every benchmark sensor; S2 paired with S1."""
    px = config.input_px
    sensors = {
        name: {"image": torch.randn(per_sensor, get_sensor(name).num_bands, px, px, device=device)}
        for name in SENSORS
    }
    s2 = sensors["sentinel2_l2a"]
    s2["image_sentinel1_grd"] = torch.randn(per_sensor, 2, px, px, device=device)
    s2["rows_sentinel1_grd"] = torch.arange(per_sensor, device=device)
    return {"sensors": sensors}


def best_seconds(step: Callable[[], object], repeats: int, device: torch.device) -> float:
    """The fastest of ``repeats`` runs of ``step`` after one warm-up (as timeit)."""
    step()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def train_rate(
    config: EncoderConfig, per_sensor: int, repeats: int, device: torch.device, bf16: bool = False
) -> TrainRate:
    """Images per second of forward + backward + AdamW step over every benchmark sensor."""
    torch.manual_seed(0)
    channels = {name: get_sensor(name).num_bands for name in SENSORS}
    network = MsGFM(channels, config).to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)
    batch = random_batch(config, per_sensor, device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = network(batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    images = per_sensor * len(SENSORS)
    seconds = best_seconds(step, repeats, device)
    if device.type != "cuda":
        return TrainRate(images / seconds)
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops() / images
    peak = next(
        (v for k, v in PEAK_BF16_FLOPS.items() if k in torch.cuda.get_device_name(device)), None
    )
    return TrainRate(images / seconds, flops, flops * images / seconds / peak if peak else None)


def interleaved_best_seconds(
    first: Callable[[], object], second: Callable[[], object], repeats: int
) -> tuple[float, float]:
    """The fastest of ``repeats`` runs of each of two CPU steps, after one warm-up each.

    Their runs alternate so that a busy spell of the machine slows both alike.
    """
    first()
    second()
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for slot, step in enumerate((first, second)):
            start = time.perf_counter()
            step()
            best[slot] = min(best[slot], time.perf_counter() - start)
    return best[0], best[1]


def encoder_vs_timm_seconds(config: EncoderConfig, batch: int, repeats: int) -> tuple[float, float]:
    """Forward + backward seconds of our dense encoder and of timm's Swin V2, timed alternately.

    Ours has an RGB patch embedding; timm's is its ``forward_features`` of the same
    configuration; both run on the same input.
    """
    dense = replace(config, moe=None)
    torch.manual_seed(0)
    ours_encoder = SwinEncoder(dense)
    ours_embed = SensorPatchEmbed(3, dense.embed_dim, dense.patch_px)
    reference = timm.create_model(
        "swinv2_tiny_window8_256",
        pretrained=False,
        img_size=dense.input_px,
        window_size=dense.window_size,
        embed_dim=dense.embed_dim,
        depths=dense.depths,
        num_heads=dense.num_heads,
        num_classes=0,
        drop_path_rate=dense.drop_path_rate,
    )
    image = torch.randn(batch, 3, dense.input_px, dense.input_px)

    def ours() -> None:
        ours_encoder(ours_embed(image)).sum().backward()

    def timms() -> None:
        reference.forward_features(image).sum().backward()

    return interleaved_best_seconds(ours, timms, repeats)
