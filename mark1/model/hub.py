"""Mark-1 checkpoints on the Hugging Face Hub: export (the files and a model card), push, and download.

What goes up is what answering needs and nothing else: config.json (as a checkpoint holds it), the projector
(projector.safetensors + projector.json) and a model card README.md; never training_state.pt (only resuming
needs it, and a run resumes from a local directory). What comes down is the same list, through the Hub cache
(`snapshot_download`), so a repo holding anything else, code included, never gets it onto this machine;
loading stays safetensors and JSON.

An export directory is written whole or not at all: staged as NAME.tmp, fsynced, swapped in.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mark1.cache import CacheSpec
from mark1.config import Config
from mark1.errors import CheckpointError, HubError, Mark1Error
from mark1.files import check_output_dir, fsync_tree, replace_dir
from mark1.metrics import flat_numbers
from mark1.model.checkpoint import CHECKPOINT_FORMAT, META_FILE, Checkpoint, save_checkpoint
from mark1.model.projector import WEIGHTS_FILE
from mark1.model.video_qa import VideoQAModel

log = logging.getLogger(__name__)
PROJECTOR_META = "projector.json"
CARD_FILE = "README.md"
CHECKPOINT_FILES = (META_FILE, PROJECTOR_META, WEIGHTS_FILE)  # what loading reads
HUB_FILES = (*CHECKPOINT_FILES, CARD_FILE)  # what is uploaded and downloaded; nothing else
# owner/name, optionally @revision (a branch, tag or commit): what the Hub accepts as a model repo id.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[\w][\w.-]{0,95}(@[\w./-]+)?")
# Licenses of backbones whose cards state one: the card lists them, and names the license when all agree.
KNOWN_LICENSES = {
    "facebook/vjepa2-vitg-fpc64-256": "mit",
    "facebook/vjepa2-vitl-fpc64-256": "mit",
    "facebook/vjepa2-vith-fpc64-256": "mit",
    "Qwen/Qwen3-0.6B": "apache-2.0",
    "Qwen/Qwen3-1.7B": "apache-2.0",
    "Qwen/Qwen3-4B": "apache-2.0",
    "Qwen/Qwen3-8B": "apache-2.0",
}
TAGS = ["mark1", "video-question-answering", "video-text-to-text", "temporal-grounding", "v-jepa2"]
PLACEHOLDER_ID = "OWNER/NAME"


# --- ids and the Hub cache ---------------------------------------------------------------------------


def is_hub_id(text: str) -> bool:
    """`owner/name` or `owner/name@revision`, not a path that says it is one (./, /, ~, ..)."""
    return bool(_HUB_ID.fullmatch(text)) and ".." not in text and not text.startswith((".", "~"))


def names_hub_repo(path: Path) -> bool:
    """Whether a checkpoint path that is no local directory means a Hub repo: `owner/name`, unless it reads
    as a local path gone missing (its first folder exists here, or it ends in a run's best or last), which
    then gets the local error rather than a Hub look-up."""
    text = str(path)
    owner, _, name = text.partition("@")[0].partition("/")
    return is_hub_id(text) and not Path(owner).is_dir() and name not in ("best", "last")


def split_hub_id(text: str, revision: str | None = None) -> tuple[str, str | None]:
    """`owner/name@rev` → (owner/name, rev); an explicit `revision` wins."""
    repo_id, _, at = text.partition("@")
    return repo_id, revision or at or None


def hub_offline(local_files_only: bool = False) -> bool:
    """Offline as huggingface_hub means it, read now: it reads HF_HUB_OFFLINE once, at import, and a
    notebook or a test may set it later."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return (
        local_files_only
        or constants.HF_HUB_OFFLINE
        or any(f and f.upper() in constants.ENV_VARS_TRUE_VALUES for f in flags)
    )


def hub_cache_dir() -> Path:
    """The Hub cache, HF_HUB_CACHE read now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    return Path(os.path.expanduser(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE))


def download_checkpoint(text: str, revision: str | None = None, local_files_only: bool = False) -> Path:
    """The snapshot directory of Hub checkpoint `owner/name[@revision]` in the Hub cache, fetched when online;
    only HUB_FILES. One CheckpointError line when the repo, the revision or a file is missing."""
    from huggingface_hub import errors, snapshot_download
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # Raised by huggingface_hub 2.x only, where a cached tree listing shows a snapshot lacks files.
    IncompleteSnapshotError = getattr(errors, "IncompleteSnapshotError", _NeverRaised)  # noqa: N806

    from mark1 import __version__

    repo_id, revision = split_hub_id(text, revision)
    offline = hub_offline(local_files_only)
    cache = hub_cache_dir()
    named = repo_id + (f"@{revision}" if revision else "")
    where = (
        "offline (HF_HUB_OFFLINE or local_files_only): only the Hub cache is read"
        if offline
        else "the Hub cannot be reached"
    )
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache,
            local_files_only=offline,
            allow_patterns=list(HUB_FILES),
            library_name="mark1",
            library_version=__version__,
        )
    except IncompleteSnapshotError as err:
        missing = _missing(Path(err.snapshot_path)) if err.snapshot_path else list(CHECKPOINT_FILES)
        raise CheckpointError(
            f"Hub checkpoint {named} is only partly in the Hub cache {cache} (missing {', '.join(missing)}) "
            f"and {where}; download it once online"
        ) from err
    except LocalEntryNotFoundError as err:
        raise CheckpointError(
            f"no Mark-1 checkpoint {named}: not a local directory, and not in the Hub cache {cache} "
            f"({where}); download it once online, or point at a local checkpoint directory"
        ) from err
    except RevisionNotFoundError as err:
        raise CheckpointError(f"Hub repo {repo_id} has no revision {revision!r}") from err
    except RepositoryNotFoundError as err:  # gated and private ones too: the Hub answers alike
        raise CheckpointError(
            f"no Hub repo {repo_id} (or it is private or gated: log in with `hf auth login` or set HF_TOKEN)"
        ) from err
    except HFValidationError as err:
        raise CheckpointError(f"{text} is neither a local checkpoint directory nor a valid Hub id") from err
    except (OSError, ValueError) as err:  # network and HTTP errors (HfHubHTTPError is an OSError)
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"cannot download Hub checkpoint {named} ({first})") from err
    path = Path(folder)
    missing = _missing(path)
    if missing:
        raise CheckpointError(
            f"Hub checkpoint {named} ({path}) lacks {', '.join(missing)}"
            + (
                f"; {where}"
                if offline
                else "; it is not a complete Mark-1 checkpoint: push it again with mark1 push"
            )
        )
    return path


class _NeverRaised(Exception):
    snapshot_path: str | None = None


def _missing(folder: Path) -> list[str]:
    # is_file follows the snapshot's symlinks: a link whose blob is gone counts as missing.
    return [name for name in CHECKPOINT_FILES if not (folder / name).is_file()]


# --- the model card ------------------------------------------------------------------------------------


def read_eval_metrics(source: Path | str | dict[str, Any] | None) -> dict[str, Any] | None:
    """An eval's metrics for the card's table: the metrics.json `mark1 eval --out DIR` wrote, or its dict."""
    if source is None or isinstance(source, dict):
        return source
    path = Path(source)
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise Mark1Error(
            f"--eval {path}: cannot read it ({err}); give the metrics.json `mark1 eval --out` wrote"
        ) from err
    if not isinstance(metrics, dict) or not any(isinstance(v, (int, float)) for v in metrics.values()):
        raise Mark1Error(f"--eval {path} holds no metrics; give the metrics.json `mark1 eval --out` wrote")
    return metrics


def model_card(
    meta: dict[str, Any],
    repo_id: str | None = None,
    eval_metrics: dict[str, Any] | None = None,
    num_parameters: int | None = None,
    license: str | None = None,
) -> str:
    """README.md for the Hub: YAML front matter (library, tags, base models, license) and a body with the
    backbones, how to load it and the metrics (validation ones the checkpoint keeps, an eval's if given)."""
    from huggingface_hub import ModelCardData

    encoder, llm = str(meta.get("encoder", "")), str(meta.get("llm", ""))
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    bases = [name for name in (encoder, llm) if _is_hub_model(name)]
    licenses = {KNOWN_LICENSES.get(name) for name in (encoder, llm)}
    if license is None and len(licenses) == 1:
        license = licenses.pop()  # both backbones known, and under one license
    data = ModelCardData(
        library_name="mark1",
        pipeline_tag="video-text-to-text",
        tags=TAGS,
        license=license,
        base_model=bases or None,
        # The projector is an adapter between the two: without the relation the Hub would call it a merge.
        base_model_relation="adapter" if bases else None,
    )
    name = repo_id or PLACEHOLDER_ID
    lines = [
        "---",
        data.to_yaml(),
        "---",
        "",
        f"# {name.split('/')[-1]}",
        "",
        "A Mark-1 video question answering checkpoint: a small trained projector "
        "between a frozen video encoder and a frozen LLM. It answers multiple-choice and open questions about "
        "a video and points at the moments that support the answer. Only the projector is here; the "
        "backbones load from their own repos.",
        "",
        "| part | model | license |",
        "| --- | --- | --- |",
        f"| video encoder (frozen) | {_link(encoder)} | {KNOWN_LICENSES.get(encoder, 'see its card')} |",
        f"| LLM (frozen) | {_link(llm)}{_quantization(config)} | {KNOWN_LICENSES.get(llm, 'see its card')} |",
        f"| projector (trained) | {_projector_line(config, num_parameters)} | {license or 'not stated'} |",
        "",
    ]
    local = [n for n in (encoder, llm) if not _is_hub_model(n)]
    if local:
        lines += [
            f"The backbones {', '.join(f'`{n}`' for n in local)} were local directories when this was trained: "
            "loading needs the same ones there, or `--encoder` / `--llm` naming the same weights "
            "(the checkpoint checks the LLM's fingerprint).",
            "",
        ]
    cache = meta.get("cache") if isinstance(meta.get("cache"), dict) else {}
    lines += [
        f"Features: {cache.get('num_frames', '?')} frames per clip, {cache.get('crop_size', '?')} px crop, "
        f"grid {cache.get('grid', '?')} (T', H', W', D), pooling {cache.get('pool', '?')}. "
        f"Prompt format `{meta.get('prompt_format', '?')}`, template "
        f"`{(config.get('prompt') or {}).get('template', '?')}`.",
        "",
        "## Use",
        "",
        "With Mark-1 installed:",
        "",
        "```bash",
        f'mark1 infer --checkpoint {name} --video clip.mp4 --question "What colour is the sign?" \\',
        '    --choice "A. Red" --choice "B. Green" --choice "C. Blue"',
        f"mark1 eval --checkpoint {name} --cache cache/ --annotations val.json --out eval/",
        "```",
        "",
        "```python",
        "import mark1",
        "",
        f'model = mark1.Mark1.from_pretrained("{name}")',
        'result = model.answer("clip.mp4", "What colour is the sign?", ["A. Red", "B. Green", "C. Blue"])',
        "print(result.answer, result.probs, result.moments, result.windows)",
        "```",
        "",
        "Loading reads config.json, projector.json and projector.safetensors only (JSON and safetensors: no "
        "code, no pickle), and refuses an LLM other than the one the projector was trained through.",
        "",
        "## Evaluation",
        "",
    ]
    lines += _metrics_table(meta.get("metrics") or {}, eval_metrics)
    return "\n".join(lines) + "\n"


def _is_hub_model(name: str) -> bool:
    return bool(name) and is_hub_id(name) and "@" not in name and not Path(name).exists()


def _link(name: str) -> str:
    return f"[{name}](https://huggingface.co/{name})" if _is_hub_model(name) else f"`{name}` (local)"


def _quantization(config: dict[str, Any]) -> str:
    quant = (config.get("llm") or {}).get("quantization", "none")
    return "" if quant in ("none", None) else f", trained through it in {quant}"


def _projector_line(config: dict[str, Any], num_parameters: int | None) -> str:
    p = config.get("projector") or {}
    size = f"{num_parameters / 1e6:.2f} M parameters; " if num_parameters else ""
    return (
        f"{size}width {p.get('hidden_size', '?')}, {p.get('num_visual_queries', '?')} visual + "
        f"{p.get('num_temporal_queries', '?')} temporal queries, {p.get('num_fusion_layers', '?')} fusion layers"
    )


def _metrics_table(validation: dict[str, Any], evaluation: dict[str, Any] | None) -> list[str]:
    columns = []
    if evaluation:
        columns.append(("eval (`mark1 eval`)", flat_numbers(evaluation)))
    if validation:
        columns.append(("validation at training", flat_numbers(validation)))
    if not columns:
        return ["No metrics were recorded with this checkpoint (trained without a validation set).", ""]
    keys = list(dict.fromkeys(k for _, values in columns for k in values))
    lines = [
        "| metric | " + " | ".join(title for title, _ in columns) + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    for key in keys:
        cells = [_cell(values.get(key)) for _, values in columns]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.3f}"


# --- export ------------------------------------------------------------------------------------------


def save_pretrained(
    directory: Path,
    model: VideoQAModel,
    cfg: Config,
    spec: CacheSpec,
    metrics: dict[str, Any] | None = None,
    eval_metrics: dict[str, Any] | None = None,
    repo_id: str | None = None,
) -> Path:
    """A loaded model's projector, config.json (as `save_checkpoint` writes it, without training state)
    and model card into `directory`, whole or not at all."""

    def write(tmp: Path) -> None:
        staged = tmp / "checkpoint"
        save_checkpoint(staged, model, cfg, spec, state=None, metrics=metrics)
        for name in CHECKPOINT_FILES:
            (staged / name).rename(tmp / name)
        shutil.rmtree(staged)

    return _export(directory, write, eval_metrics, repo_id, model.projector.num_parameters())


def export_checkpoint(
    checkpoint: Path | str,
    directory: Path,
    eval_metrics: dict[str, Any] | None = None,
    repo_id: str | None = None,
) -> Path:
    """The same from a checkpoint directory (or Hub id), no backbone loaded: its files copied, no training
    state, and the card."""
    source = Checkpoint.open(checkpoint).path  # checked: format, version, prompt format

    def write(tmp: Path) -> None:
        for name in CHECKPOINT_FILES:
            if not (source / name).is_file():
                raise CheckpointError(f"{source} lacks {name}; it is not a complete Mark-1 checkpoint")
            shutil.copyfile(source / name, tmp / name)  # a Hub snapshot's symlinks copied as files

    return _export(directory, write, eval_metrics, repo_id, None)


def _export(
    directory: Path,
    write: Callable[[Path], None],
    eval_metrics: dict[str, Any] | None,
    repo_id: str | None,
    num_parameters: int | None,
) -> Path:
    _check_export_dir(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        write(tmp)
        meta = json.loads((tmp / META_FILE).read_text(encoding="utf-8"))
        if num_parameters is None:
            num_parameters = _count_parameters(tmp / WEIGHTS_FILE)
        card = model_card(meta, repo_id, eval_metrics, num_parameters)
        (tmp / CARD_FILE).write_text(card, encoding="utf-8")
        fsync_tree(tmp)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise Mark1Error(f"cannot write {directory} ({err}); nothing was written there") from err
        raise
    replace_dir(tmp, directory)
    for name in (meta.get("encoder"), meta.get("llm")):
        if name and not _is_hub_model(str(name)):
            log.warning(
                "%s names the backbone %s, a local directory: others cannot load it from there",
                directory,
                name,
            )
    return directory


def _check_export_dir(directory: Path) -> None:
    """An export replaces `directory` whole: refuse one that holds anything but an earlier export."""
    check_output_dir(directory, "--out")
    if not directory.is_dir() or not any(directory.iterdir()):
        return
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        meta = None
    extra = {p.name for p in directory.iterdir()} - set(HUB_FILES)
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT or extra:
        raise Mark1Error(
            f"--out {directory} already holds other files; give a new or empty directory (an earlier export "
            "there is replaced)"
        )


def _count_parameters(path: Path) -> int | None:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            total = 0
            for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                n = 1
                for dim in f.get_slice(key).get_shape():
                    n *= dim
                total += n
            return total
    except (OSError, ValueError, RuntimeError):
        return None


# --- push --------------------------------------------------------------------------------------------


def push(
    write: Callable[[Path], Path],
    repo_id: str,
    private: bool | None = None,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """`write(dir)` exports into a temporary directory, which becomes one commit in `repo_id` (created if
    missing; `revision`: a branch, created from main if missing). Returns the commit's URL."""
    from huggingface_hub import HfApi, get_token

    if not is_hub_id(repo_id) or "@" in repo_id:
        raise HubError(
            f"--repo-id {repo_id!r} is not a Hub id; give owner/name (and --revision for a branch)"
        )
    if hub_offline():
        raise HubError(
            f"cannot push to {repo_id}: the Hub is offline here (HF_HUB_OFFLINE is set); unset it, or copy an "
            "export (`mark1 export`) to a machine that can reach the Hub"
        )
    token = token or get_token()
    if not token:
        raise HubError(
            f"cannot push to {repo_id}: no Hugging Face token; run `hf auth login` or set HF_TOKEN"
        )
    api = HfApi(token=token, library_name="mark1")
    with tempfile.TemporaryDirectory(prefix="mark1-push-") as tmp:
        folder = write(Path(tmp) / "export")
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                revision=revision,
                allow_patterns=list(HUB_FILES),
                commit_message=commit_message or "Mark-1 checkpoint",
            )
        except (OSError, ValueError) as err:  # HTTP (401, 403, 404...), network, offline
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise HubError(
                f"cannot push to {repo_id} ({first}); check the token's write access and the id"
            ) from err
    return str(getattr(info, "commit_url", info))


def push_checkpoint(
    checkpoint: Path | str,
    repo_id: str,
    eval_metrics: dict[str, Any] | None = None,
    private: bool | None = None,
    revision: str | None = None,
    token: str | None = None,
) -> str:
    """`export_checkpoint` into a temporary directory, pushed as one commit; no backbone loaded."""
    Checkpoint.open(checkpoint)  # a damaged checkpoint is refused before any Hub call

    def write(folder: Path) -> Path:
        return export_checkpoint(checkpoint, folder, eval_metrics, repo_id)

    return push(write, repo_id, private, revision, token)
