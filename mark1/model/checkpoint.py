"""Checkpoints: `runs/NAME/{best,last}/` with the projector (safetensors), config.json and the training state.

`save_checkpoint` writes one; `Checkpoint.open` is the one reader (config, projector, prompt format, training
state, fit to a cache) that resume, eval, predict, infer and the Python API all use. A checkpoint directory
is replaced atomically: written as NAME.tmp, the old one moved aside, the new one renamed in; a run killed
at any moment leaves the previous good checkpoint loadable.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mark1.cache import CacheSpec
from mark1.config import Config, saved_projector
from mark1.devices import parse_device_map
from mark1.errors import CacheError, CheckpointError
from mark1.files import fsync_tree, replace_dir
from mark1.model.llm import FrozenLLM
from mark1.model.projector import Projector
from mark1.model.video_qa import VideoQAModel
from mark1.prompt import PROMPT_FORMAT

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "mark1-checkpoint"
CHECKPOINT_VERSION = 1
META_FILE, STATE_FILE = "config.json", "training_state.pt"


def save_checkpoint(
    directory: Path,
    model: VideoQAModel,
    cfg: Config,
    spec: CacheSpec,
    state: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> None:
    """Write projector weights, config.json (backbones, the LLM's fingerprint, cache fingerprint, prompt format
    and template) and training state."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    cfg = dataclasses.replace(cfg, prompt=model.budget)  # the template resolved: answering uses the same
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "encoder": cfg.encoder,
        "llm": cfg.llm.name,
        "llm_fingerprint": model.llm.fingerprint,
        "prompt_format": PROMPT_FORMAT,
        "cache": dataclasses.asdict(spec),
        "config": cfg.to_dict(),
        "metrics": metrics or {},
    }
    try:
        model.projector.save(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False))
        if state is not None:
            torch.save(state, tmp / STATE_FILE)
        fsync_tree(tmp)  # on disk before the swap: a power cut leaves the old checkpoint or the new one
    except (OSError, RuntimeError) as err:  # a full disk (torch.save says RuntimeError): old one untouched
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"cannot write checkpoint {directory} ({err}); the previous one there is intact: free disk space "
            "and continue with --resume"
        ) from err
    replace_dir(tmp, directory)


@dataclass
class Checkpoint:
    """A checkpoint directory, read and checked once: what it was trained with and on."""

    path: Path  # the directory read: runs/NAME/last, or last.old after a swap that was cut short
    config: Config
    cache_spec: CacheSpec  # the features the projector was trained on
    # Of the LLM it was trained through (None: a checkpoint from before they were kept).
    llm_fingerprint: str | None
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)  # validation, when it was saved

    @classmethod
    def open(
        cls,
        directory: Path | str,
        *,
        hub: bool = True,
        revision: str | None = None,
        local_files_only: bool = False,
    ) -> Checkpoint:
        """A local checkpoint directory, or (`hub`, and no such directory) a Hub id `owner/name[@revision]`
        fetched through the Hub cache (`mark1.model.hub`; HF_HUB_OFFLINE or `local_files_only`: the cache
        only). Resuming passes hub=False: a run continues in a local directory only."""
        path = _resolve(Path(directory), hub, revision, local_files_only)
        meta_path = path / META_FILE
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{meta_path} is damaged ({err})") from err
        if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{meta_path} is not a Mark-1 checkpoint")
        if meta.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(
                f"{meta_path} is checkpoint version {meta.get('version')}, this Mark-1 reads {CHECKPOINT_VERSION}"
            )
        if meta.get("prompt_format") != PROMPT_FORMAT:
            raise CheckpointError(
                f"{meta_path} was trained with prompt format {meta.get('prompt_format')!r}, this Mark-1 "
                f"uses {PROMPT_FORMAT!r}; retrain or use the matching Mark-1 version"
            )
        try:
            spec = CacheSpec(**meta["cache"])
        except (KeyError, TypeError) as err:
            raise CheckpointError(f"{meta_path} is damaged (cache spec: {err})") from err
        saved = meta.get("config", {})
        projector = saved.get("projector") if isinstance(saved, dict) else None
        if isinstance(projector, dict):  # a config saved by an older Mark-1
            saved = {**saved, "projector": saved_projector(projector, meta_path)}
        config = Config.from_dict(saved, source=str(meta_path))
        metrics = meta.get("metrics")
        return cls(
            path, config, spec, meta.get("llm_fingerprint"), metrics if isinstance(metrics, dict) else {}
        )

    def check_cache(self, spec: CacheSpec) -> None:
        """A checkpoint works only on features of the encoder and sampling it was trained on."""
        try:
            spec.check_compatible(self.cache_spec, self.path)
        except CacheError as err:
            raise CheckpointError(f"checkpoint {self.path} does not fit these features: {err}") from err

    def check_llm(self, llm: FrozenLLM) -> None:
        """Soft tokens mean something only to the LLM they were trained into."""
        if self.llm_fingerprint is None:
            log.warning(
                "%s keeps no LLM fingerprint (an older checkpoint): cannot check that %s is the LLM it was "
                "trained with",
                self.path,
                llm.model.config.name_or_path,
            )
        elif llm.fingerprint != self.llm_fingerprint:
            raise CheckpointError(
                f"checkpoint {self.path} was trained with LLM {self.config.llm.name!r}, not with "
                f"{llm.model.config.name_or_path!r} (their weights or tokenizers differ); pass --llm with the "
                "one it was trained with"
            )

    def projector(self) -> Projector:
        return Projector.load(self.path)

    def training_state(self) -> dict[str, Any]:
        path = self.path / STATE_FILE
        if not path.is_file():
            raise CheckpointError(f"{self.path} holds no training state to resume from")
        try:  # weights_only: loading a checkpoint never runs code from it
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for damaged or foreign files
            raise CheckpointError(
                f"cannot read {path} ({type(err).__name__}): it is damaged or not a Mark-1 training state; "
                "start without --resume"
            ) from err

    def load_model(self, spec: CacheSpec, cfg: Config | None = None) -> VideoQAModel:
        """The trained projector + the LLM its config names (or `cfg`'s), placed by `answer.device_map`,
        once `spec` (a cache's or an encoder's) is checked to give the features it was trained on."""
        self.check_cache(spec)
        # The prompt settings are the checkpoint's whatever `cfg` says: answering builds prompts as training did.
        if cfg is not None and cfg.prompt != self.config.prompt:
            log.warning("the prompt settings (prompt.*) are %s's own; the ones given are not used", self.path)
        cfg = dataclasses.replace(cfg or self.config, prompt=self.config.prompt)
        model = VideoQAModel.load(cfg, parse_device_map(cfg.answer.device_map), self.projector())
        self.check_llm(model.llm)
        return model


def _resolve(directory: Path, hub: bool, revision: str | None, local_files_only: bool) -> Path:
    if (directory / META_FILE).is_file():
        return directory
    old = directory.with_name(directory.name + ".old")
    if (old / META_FILE).is_file():  # killed between moving the old one aside and renaming the new one in
        return old
    from mark1.model import hub as hub_module  # it imports this module: a Hub id is the rarer case

    if hub and not directory.exists() and hub_module.names_hub_repo(directory):
        return hub_module.download_checkpoint(str(directory), revision, local_files_only)
    where = "runs/NAME/best, runs/NAME/last or a Hub id owner/name" if hub else "a local runs/NAME/last"
    raise CheckpointError(
        f"no Mark-1 checkpoint at {directory} ({META_FILE} missing); point --checkpoint at {where}"
    )
