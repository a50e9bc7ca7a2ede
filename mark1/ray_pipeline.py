"""Stage one on Ray Data (`extract.engine: ray`): decoding where the CPUs are, encoding where the GPUs are.

videos to do → decode: Ray tasks of one CPU each, anywhere in the cluster, with the local engine's
`load_clip` → encode: one actor per GPU of the cluster (one on a CPU when there is none), batched → this
process, the cache's one writer (`mark1.stages.extract`).

Why the features come back here rather than each encoder writing shards of its own: an encoder actor that
is killed would take the clips of its open shard with it, although Ray counts their tasks done. Here Ray
retries a killed decode task or encoder, and a clip is written once, when its features arrive whole. A clip's
features are 5.8 MB at full size (ViT-g, pool 1), a few per second per GPU: well within what one writer on
the cache's filesystem takes.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from mark1.cache import CLIP_FIELDS
from mark1.cache_writer import EncodedClip
from mark1.config import Config
from mark1.encoder import EncoderOutput, VideoEncoder
from mark1.errors import ConfigError, Mark1Error, VideoError
from mark1.video import load_clip

try:
    import ray
    import ray.data
except ImportError as err:  # the optional extra
    raise ConfigError(
        'extract.engine=ray needs Ray Data: pip install -e ".[ray]" (or use --engine local)'
    ) from err

log = logging.getLogger(__name__)
# A decode task or an encoder whose process dies (killed, out of memory, a decoder crash) is run again this
# many times (Ray Data's default is forever); a video that fails to decode is not retried at all: its error is
# recorded in failures.jsonl.
RETRIES = 3


class RayPipeline:
    """A connection to a Ray cluster (the one at `extract.address`, or a local one) and the stage-one pipeline
    run on it."""

    def __init__(self, cfg: Config, backend: str, started_here: bool) -> None:
        self.cfg, self.backend, self.started_here = cfg, backend, started_here
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        if not self.gpus and resources.get("CPU", 0) < 2:
            raise ConfigError(
                "extract.engine=ray on CPUs only needs at least 2 of them (one encodes, the others decode); "
                "use --engine local"
            )
        self.encode_seconds = 0.0  # summed over the encoders, as the local engine's
        # What the cluster's encoder writes (the cache's spec needs its weights' fingerprint), read where an
        # encoder runs.
        describe = _describe.options(**self._encoder_resources()).remote(cfg)
        try:
            self.encoder: EncoderOutput = ray.get(describe)
        except ray.exceptions.RayTaskError as err:
            raise _user_error(err) from err

    @classmethod
    def start(cls, cfg: Config, backend: str) -> RayPipeline:
        started_here = not ray.is_initialized()  # a caller (a test, a notebook) may have started one
        if started_here:
            try:
                ray.init(address=cfg.extract.address, logging_level=logging.WARNING, log_to_driver=True)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise ConfigError(
                    f"cannot reach the Ray cluster at {cfg.extract.address!r} ({err}); start it with "
                    "`ray start --head`, or leave out --address for a local one"
                ) from err
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the CLI draws its own, per clip written
        return cls(cfg, backend, started_here)

    def _encoder_resources(self) -> dict[str, float]:
        return {"num_gpus": 1} if self.gpus else {"num_cpus": 1}

    def run(self, todo: list[tuple[str, Path]]) -> Iterator[EncodedClip]:
        """Decode and encode `todo` across the cluster; each clip comes back once, in no fixed order."""
        items = [{"key": key, "path": str(path)} for key, path in todo]
        crop = self.encoder.crop_size
        encoders = max(1, self.gpus)
        log.info(
            "Ray: decoding on the cluster's CPUs, encoding on %d %s",
            encoders,
            "GPU(s)" if self.gpus else "CPU",
        )
        with warnings.catch_warnings():
            # Ray 2.60 takes retry counts only as `ray_remote_args` (deprecated for 2.64; the extra pins below it)
            warnings.simplefilter("ignore", ray.util.annotations.RayDeprecationWarning)
            dataset = (
                ray.data.from_items(items, override_num_blocks=len(items))  # a block a clip: decoding spreads
                .map(
                    _decode,
                    fn_kwargs={"shape": (self.encoder.num_frames, 3, crop, crop), "backend": self.backend},
                    num_cpus=1,
                    max_retries=RETRIES,
                )
                .map_batches(
                    _Encode,
                    fn_constructor_kwargs={"cfg": self.cfg},
                    batch_size=self.cfg.extract.batch_size,
                    compute=ray.data.ActorPoolStrategy(size=encoders),
                    max_restarts=RETRIES,
                    max_task_retries=RETRIES,
                    **self._encoder_resources(),
                )
            )
        try:
            for row in dataset.iter_rows():
                self.encode_seconds += float(row["encode_s"])
                if row["error"]:
                    yield EncodedClip(row["key"], error=row["error"])
                else:
                    yield EncodedClip(row["key"], row["features"], json.loads(row["meta"]))
        except ray.exceptions.RayError as err:
            raise _user_error(err) from err

    def close(self) -> None:
        if self.started_here:  # a cluster someone else started stays up
            ray.shutdown()


def _user_error(err: Exception) -> Mark1Error:
    """A worker's own Mark1Error (a missing encoder, say) as it was raised there; any other failure as one
    line that says the cache keeps what was written."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, Mark1Error):
        return cause
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return Mark1Error(
        f"the Ray pipeline stopped ({first}); every clip written so far is kept: run the same command "
        "again to resume"
    )


@ray.remote
def _describe(cfg: Config) -> EncoderOutput:
    return VideoEncoder.load(cfg, _device()).describe()


def _device() -> torch.device:
    # Ray gives an actor its GPU as the only visible one.
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def _decode(row: dict, shape: tuple[int, int, int, int], backend: str) -> dict:
    """One video → its frames (T, 3, crop, crop) and metadata, or its error; a video that cannot be decoded
    is a value, so the pipeline goes on (as the local engine's decode workers). A failure carries zero frames
    of the same shape: one fixed shape keeps the column a plain tensor for Arrow."""
    key = row["key"]
    try:
        clip = load_clip(Path(row["path"]), shape[0], shape[-1], num_threads=1, backend=backend)
    except VideoError as err:
        return {"key": key, "frames": np.zeros(shape, np.uint8), "meta": "", "error": str(err)}
    meta = {name: getattr(clip, name) for name in CLIP_FIELDS}
    return {"key": key, "frames": clip.frames.numpy(), "meta": json.dumps(meta), "error": ""}


class _Encode:
    """One encoder actor: the frozen encoder loaded once, then a batch of decoded clips per call."""

    def __init__(self, cfg: Config) -> None:
        self.encoder = VideoEncoder.load(cfg, _device())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.flatnonzero(batch["error"] == "")
        features = np.zeros((len(batch["key"]), *self.encoder.grid), np.float16)  # a failure's stay zero
        seconds = np.zeros(len(batch["key"]))
        if len(ok):
            began = time.perf_counter()
            frames = torch.from_numpy(batch["frames"][ok])  # (B, T, 3, crop, crop) uint8
            features[ok] = self.encoder(frames).to("cpu", torch.float16).numpy()
            seconds[ok] = (time.perf_counter() - began) / len(ok)
        return {
            "key": batch["key"],
            "features": features,
            "meta": batch["meta"],
            "error": batch["error"],
            "encode_s": seconds,
        }
