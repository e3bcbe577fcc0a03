"""Model presets and resolution: dimensions against their papers, parameter counts against
the published sizes, and the merge rules of resolve_model."""

import pytest

from clustersim.config.experiment import ModelConfig
from clustersim.errors import InputError
from clustersim.workload.models import (ModelSpec, default_ffn_hidden, get_model,
                                        model_presets, resolve_model)
from clustersim.workload.moe import MoESpec

PUBLISHED_PARAMS = {  # total parameters as their papers / model cards state them
    "gpt3-175b": 175e9, "llama2-70b": 70e9, "llama3-8b": 8.0e9, "llama3-70b": 70.6e9,
    "llama3-405b": 405e9, "palm-540b": 540e9, "mixtral-8x7b": 46.7e9,
}


def test_required_presets_exist_with_sources():
    presets = model_presets()
    for name in PUBLISHED_PARAMS:
        assert name in presets
        assert len(presets[name].source) > 20, name


@pytest.mark.parametrize("name, published", sorted(PUBLISHED_PARAMS.items()))
def test_total_params_within_3_percent_of_published(name, published):
    assert get_model(name).total_params == pytest.approx(published, rel=0.03)


def test_mixtral_active_params_match_model_card():
    assert get_model("mixtral-8x7b").active_params == pytest.approx(12.9e9, rel=0.03)


def test_palm_dimensions_as_in_the_paper():
    palm = get_model("palm-540b")
    assert (palm.layers, palm.hidden, palm.heads, palm.kv_heads, palm.head_dim) == \
        (118, 18432, 48, 1, 256)
    assert palm.ffn == "swiglu" and palm.ffn_hidden == 4 * palm.hidden
    assert palm.vocab == 256000 and palm.parallel_attention and palm.tied_embeddings
    # PaLM Table 1 gives 540.35B parameters
    assert palm.total_params == pytest.approx(540.35e9, rel=0.001)


def test_gpt_layer_is_twelve_h_squared_plus_norms():
    gpt = ModelSpec("g", layers=2, hidden=1024, heads=16, vocab=1000)
    assert gpt.layer_params == 12 * 1024**2 + 2 * 1024


def test_moe_counts_every_expert_but_activates_top_k():
    m = ModelSpec("m", layers=1, hidden=64, heads=4, vocab=10, ffn="swiglu", ffn_hidden=128,
                  moe=MoESpec(experts=8, top_k=2))
    assert m.layer_params - m.active_layer_params == 6 * m.expert_params
    assert m.expert_params == 3 * 64 * 128


def test_invalid_moe_is_an_input_error():
    with pytest.raises(InputError, match="moe needs"):
        MoESpec(experts=0)
    with pytest.raises(InputError, match="top_k=3"):
        ModelSpec("m", layers=1, hidden=64, heads=4, vocab=10, moe=MoESpec(experts=2, top_k=3))


def test_presets_are_read_once():
    assert get_model("llama3-8b") is get_model("llama3-8b")


def test_unknown_preset_suggests_names():
    with pytest.raises(InputError, match="unknown model preset 'lama3-8b'.*llama3-8b"):
        resolve_model(ModelConfig(preset="lama3-8b"))


def test_resolve_preset_alone_is_the_preset():
    assert resolve_model(ModelConfig(preset="gpt3-175b")) is get_model("gpt3-175b")


def test_resolve_preset_with_inline_changes_derives_dependent_dimensions():
    m = resolve_model(ModelConfig(preset="llama3-8b", hidden=2048, heads=16))
    assert (m.hidden, m.heads, m.head_dim, m.kv_heads) == (2048, 16, 128, 8)
    assert m.ffn_hidden == 14336 // 2
    assert m.vocab == 128256 and "llama3-8b" in m.name
    kept = resolve_model(ModelConfig(preset="palm-540b", layers=10))
    assert kept.head_dim == 256 and kept.layers == 10


def test_resolve_inline_model_and_moe():
    m = resolve_model(ModelConfig(name="toy", layers=2, hidden=256, heads=4, vocab=500,
                                  ffn="swiglu", moe={"experts": 4, "top_k": 1}))
    assert m.name == "toy" and m.moe == MoESpec(4, 1, 1.0)
    assert m.ffn_hidden == default_ffn_hidden(256, "swiglu") == 768


@pytest.mark.parametrize("kwargs, message", [
    (dict(heads=6, kv_heads=4), "multiple of kv_heads"),
    (dict(hidden=100, heads=3), "not divisible by heads"),
    (dict(ffn="relu"), "ffn must be one of"),
    (dict(layers=0), "layers must be a positive integer"),
    (dict(head_dim=-64), "head_dim must be positive"),
])
def test_invalid_specs_are_input_errors(kwargs, message):
    base = dict(layers=2, hidden=96, heads=6, vocab=10)
    with pytest.raises(InputError, match=message):
        ModelSpec("bad", **{**base, **kwargs})


def test_dropout_is_an_inline_key():
    """``model.dropout`` reaches the spec: written inline, over a preset, or the preset's."""
    inline = resolve_model(ModelConfig(layers=2, hidden=64, heads=4, vocab=100, dropout=True))
    assert inline.dropout is True
    assert resolve_model(ModelConfig(preset="gpt3-175b", dropout=False)).dropout is False
    assert resolve_model(ModelConfig(preset="gpt3-175b")).dropout is True
    assert resolve_model(ModelConfig(layers=2, hidden=64, heads=4, vocab=100)).dropout is False
