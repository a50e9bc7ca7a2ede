"""`mark1 plan`: parameter counts of the shipped configs, the quantized weights' bytes against bitsandbytes,
the activation formulas against saved-tensor bytes measured here, the projector's meta-device measurement
against a real one, placement, and the command itself."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from transformers import CONFIG_MAPPING, AutoModelForCausalLM, LlamaConfig

from mark1.config import ProjectorConfig
from mark1.errors import ConfigError
from mark1.model.projector import Projector
from mark1.plan import (
    Step,
    _saved_bytes,
    _split_layers,
    count_llm_params,
    layer_activation_bytes,
    layer_token_bytes,
    projector_cost,
    read_llm,
    weight_bytes,
)

# Published totals (model cards; gemma-3-4b: its language model only).
PUBLISHED_PARAMS = {
    "qwen3-0.6b": 0.596e9,
    "qwen3-1.7b": 1.72e9,
    "qwen3-4b": 4.02e9,
    "qwen3-8b": 8.19e9,
    "qwen2.5-7b": 7.62e9,
    "llama-3.1-8b": 8.03e9,
    "mistral-7b-v0.3": 7.25e9,
    "gemma-2-9b": 9.24e9,
    "gemma-3-4b": 3.88e9,
}
SMALL = dict(
    vocab_size=128,
    hidden_size=256,
    intermediate_size=512,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=64,
)


def test_qwen3_06b_fp16_weights_are_1_19_gb() -> None:
    arch = read_llm("qwen3-0.6b")
    assert arch.params.total == 596_049_920 and arch.params.head == 0  # tied embeddings
    assert weight_bytes(arch.params, "none") == 596_049_920 * 2 == 1_192_099_840
    assert f"{weight_bytes(arch.params, 'none') / 1e9:.2f}" == "1.19"


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_shipped_configs_match_published_sizes(name: str) -> None:
    assert read_llm(name).params.total == pytest.approx(PUBLISHED_PARAMS[name], rel=0.01)


def test_known_hub_ids_read_the_shipped_configs() -> None:
    assert read_llm("Qwen/Qwen3-8B").source.endswith("qwen3-8b.json")
    assert read_llm("meta-llama/Llama-3.1-8B-Instruct").source.endswith("llama-3.1-8b.json")


def test_unusable_configs_are_refused_with_one_line(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"model_type": "llama", "auto_map": {"AutoModel": "x.Y"}}))
    with pytest.raises(ConfigError, match="auto_map"):
        read_llm(str(remote))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json"):
        read_llm(str(broken))
    with pytest.raises(ConfigError, match="no config.json"):
        read_llm(str(tmp_path))
    with pytest.raises(ConfigError, match="not in the Hugging Face cache"):
        read_llm("nobody/no-such-model-anywhere")


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random Llama on disk: the decoder's linear layers dominate, as in a real LLM."""
    config = LlamaConfig(
        vocab_size=1000,
        hidden_size=512,
        intermediate_size=1024,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=4,
        tie_word_embeddings=False,
    )
    directory = tmp_path_factory.mktemp("tiny-llama")
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory


@pytest.mark.parametrize("quantization", ["int8", "nf4"])
def test_quantized_weight_bytes_match_bitsandbytes(tiny_llama_dir: Path, quantization: str) -> None:
    pytest.importorskip("bitsandbytes")
    from transformers import BitsAndBytesConfig

    quant = (
        BitsAndBytesConfig(load_in_8bit=True)
        if quantization == "int8"
        else BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )
    )
    model = AutoModelForCausalLM.from_pretrained(
        tiny_llama_dir, quantization_config=quant, device_map={"": "cpu"}, dtype=torch.float32
    )
    # The plan's counts come from the meta build of the same config, as `mark1 plan DIR` reads it.
    planned = weight_bytes(read_llm(str(tiny_llama_dir)).params, quantization, float_bytes=4)
    footprint = model.get_memory_footprint()  # parameters and buffers, not the quantization constants
    assert planned == pytest.approx(footprint, rel=0.03)
    scales = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if getattr(weight, "SCB", None) is not None:  # int8: one fp32 scale per row
            scales += weight.SCB.nbytes
        state = getattr(weight, "quant_state", None)
        if state is not None:  # nf4: 8-bit absmax per block, fp32 absmax of those per 256 blocks
            scales += state.absmax.nbytes + state.state2.absmax.nbytes
    assert scales > 0
    assert planned == pytest.approx(footprint + scales, rel=0.005)


def _saved_per_layer(model_type: str, checkpointing: bool, tokens: int = 64) -> tuple[float, int]:
    """Saved-tensor bytes per decoder layer (4 layers minus 2, halved) of a CPU bf16 model, and the plan's
    figure for the same architecture."""
    measured = []
    for layers in (2, 4):
        config = CONFIG_MAPPING[model_type](num_hidden_layers=layers, **SMALL)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
        model.requires_grad_(False)
        if checkpointing:  # as Mark-1 does it: checkpointed layers in training mode, dropout untouched
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            for layer in model.model.layers:
                layer.training = True
        x = torch.randn(1, tokens, config.hidden_size, dtype=torch.bfloat16, requires_grad=True)
        measured.append(_saved_bytes(model, lambda m=model, x=x: m.model(inputs_embeds=x)))
    arch = _arch(model_type, layers=4)
    kept, _ = layer_activation_bytes(arch, Step(1, tokens, gradient_checkpointing=checkpointing))
    return (measured[1] - measured[0]) / 2, kept


def _arch(model_type: str, layers: int):
    from mark1.plan import LLMArch

    config = CONFIG_MAPPING[model_type](num_hidden_layers=layers, **SMALL)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return LLMArch("small", "-", model_type, 256, layers, 4, 2, 64, 512, 128, True, count_llm_params(model))


@pytest.mark.parametrize("model_type", ["llama", "qwen3", "gemma3_text"])
def test_activation_formula_matches_saved_tensors(model_type: str) -> None:
    measured, planned = _saved_per_layer(model_type, checkpointing=False)
    assert planned == pytest.approx(measured, rel=0.10)


def test_gradient_checkpointing_keeps_only_each_layers_input() -> None:
    measured, planned = _saved_per_layer("qwen3", checkpointing=True)
    assert planned == 2 * 256 * 64  # 2H bytes per token per layer
    assert planned == pytest.approx(measured, rel=0.10)
    _, recompute = layer_activation_bytes(_arch("qwen3", 4), Step(1, 64, gradient_checkpointing=True))
    assert recompute == 64 * layer_token_bytes(_arch("qwen3", 4))


def test_projector_meta_measurement_matches_a_real_step() -> None:
    cfg = ProjectorConfig(
        hidden_size=64, num_heads=4, intermediate_size=128, num_visual_queries=8, num_temporal_queries=3
    )
    grid, llm_dim, question = (4, 6, 6, 48), 96, 20
    cost = projector_cost(cfg, grid, llm_dim, question)
    torch.manual_seed(0)
    projector = Projector(cfg, grid[-1], llm_dim).train()
    assert cost.params == projector.num_parameters()
    assert cost.state_bytes == 16 * cost.params  # fp32 weights, gradients and AdamW's two moments
    for batch in (1, 3):
        video, words = torch.randn(batch, *grid), torch.randn(batch, question, llm_dim)
        mask = torch.ones(batch, question, dtype=torch.bool)
        measured = _saved_bytes(projector, lambda v=video, w=words, m=mask: projector(v, w, m))
        assert cost.activation_bytes(batch) == pytest.approx(measured, rel=0.10)


def test_layers_are_split_to_balance_the_gpus() -> None:
    assert _split_layers(first=5, layer=1, recompute=0, last=5, layers=10, gpus=2) == [5, 5]
    assert _split_layers(first=0, layer=1, recompute=0, last=0, layers=4, gpus=2) == [2, 2]


def test_plan_qwen3_8b_nf4_fits_one_t4(cli, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    run = cli("plan", "Qwen/Qwen3-8B", "qwen3-0.6b", "--memory-gb", "15", "--gpus", "2", "--json", out)
    assert run.code == 0, run.err
    plan = json.loads(out.read_text())
    rows = {(p["llm"], p["quantization"]): p for p in plan["precisions"]}
    nf4 = rows["Qwen3-8B", "nf4"]
    assert nf4["placement"] == "one GPU" and nf4["batch"] >= 1
    assert f"Qwen3-8B nf4: GPU 1 of 2 x T4, batch {nf4['batch']}," in run.out
    assert rows["Qwen3-8B", "none"]["placement"] == "spread"  # 16.4 GB of fp16 weights
    assert "does not fit one GPU: spread over 2 GPUs" in run.out
    assert rows["qwen3-0.6b", "none"]["weights_bytes"] == 596_049_920 * 2
    assert "1.19" in run.out and "decimal" in run.out


def test_plan_says_what_does_not_fit(cli) -> None:
    run = cli("plan", "qwen3-8b", "--quantization", "none", "--memory-gb", "4", "--batch", "1")
    assert run.code == 0, run.err
    assert "qwen3-8b none: does not fit 2 x 4 GB" in run.out
    run = cli("plan", "no-such-model")
    assert run.code == 1 and "no config for 'no-such-model'" in run.err
    run = cli("plan", "qwen3-0.6b", "--quantization", "fp8")
    assert run.code == 1 and "quantization" in run.err


@pytest.mark.parametrize(
    "sizes",
    [{"num_attention_heads": 0}, {"num_hidden_layers": -2}, {"hidden_size": "64"}, {"hidden_size": 65}],
)
def test_a_malformed_llm_config_is_one_line_naming_it(tmp_path: Path, sizes: dict) -> None:
    config = {"model_type": "llama", "vocab_size": 300, **SMALL, "num_hidden_layers": 2, **sizes}
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="small/config.json"):
        read_llm(str(tmp_path / "small"))


def test_plan_refuses_budgets_and_precision_lists_that_mean_nothing(cli) -> None:
    run = cli("plan", "qwen3-0.6b", "--memory-gb", "inf")
    assert run.code == 1 and "--memory-gb must be a finite number" in run.err
    run = cli("plan", "qwen3-0.6b", "--quantization", ",,")
    assert run.code == 1 and "no quantization to plan" in run.err
    assert cli("plan", "qwen3-0.6b", "--prompt-tokens", "0").code == 2
