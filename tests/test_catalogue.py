"""The catalogue interface, for every registered model: cards, loading, readouts, errors."""

import re

import pytest
import torch

from analysis_utils import catalogue
from analysis_utils.errors import AnalysisUtilsError

EXPECTED = {"alexnet", "lrm3", "lra3", "cornet_rt", "b", "bl", "convrnn"}
MODELS = catalogue.names()


def test_names_are_the_book_order_and_unique():
    names = catalogue.names()
    assert len(names) == len(set(names))
    present = [n for n in catalogue.BOOK_ORDER if n in names]
    assert names[: len(present)] == present


@pytest.mark.parametrize("name", MODELS)
def test_card_is_complete(name):
    card = catalogue.card(name)
    assert card.name == name
    assert {"penult", "logits"} <= set(card.readouts)
    assert card.headline_readout in card.readouts
    assert 1 <= card.baseline <= card.default_steps
    assert 1 <= card.after <= card.default_steps
    assert card.recurrent == (card.default_steps > 1)
    if card.counterpart is not None:
        assert card.counterpart in catalogue.names()
        assert not catalogue.card(card.counterpart).recurrent
    assert set(card.preprocessing) == {"mini", "full"}
    assert card.input_size("mini") == 64
    row = card.row("mini")
    assert row["parameters"] == catalogue.parameter_count(name, "mini") > 0


@pytest.mark.parametrize("name", MODELS)
def test_mini_readouts_every_step_and_seeded(name):
    card = catalogue.card(name)
    model = catalogue.load(name, scale="mini", weights="untrained", seed=3)
    assert not model.training
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        out = model.readouts(x)
    assert set(out) == set(card.readouts)
    for readout, tensor in out.items():
        assert tensor.dtype == torch.float32, readout
        assert tensor.shape[:2] == (card.default_steps, 2), readout
    assert out["logits"].shape[-1] == catalogue.NUM_CLASSES["mini"]

    again = catalogue.load(name, scale="mini", weights="untrained", seed=3)
    other = catalogue.load(name, scale="mini", weights="untrained", seed=4)
    with torch.inference_mode():
        same = again.readouts(x, ["logits"])["logits"]
        different = other.readouts(x, ["logits"])["logits"]
    torch.testing.assert_close(same, out["logits"], rtol=0, atol=0)
    assert not torch.allclose(different, out["logits"])


@pytest.mark.parametrize("name", MODELS)
def test_forward_is_final_step_logits(name):
    model = catalogue.load(name, scale="mini", weights="untrained")
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), model.readouts(x, "logits")["logits"][-1])


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("scale", ["mini", "full"])
def test_bad_images_get_one_sentence_from_the_card(name, scale):
    """A wrong size (50 px), one channel, no batch axis or raw uint8 pixels are refused with the
    card's input size and preprocessing, at both scales and for every model, before any layer
    raises a PyTorch error of its own (BL and B did at 50 px, LRM3 ran silently)."""
    model = catalogue.build(name, scale=scale).eval()
    size = catalogue.card(name).input_size(scale)
    expected = rf"expects RGB images \[N, 3, {size}, {size}\]"
    recipe = rf"catalogue.card\('{name}'\).preprocessing\['{scale}'\]"
    cases = [(torch.randn(2, 3, 50, 50), r"got 50 x 50 px"),
             (torch.randn(2, 1, size, size), r"got 1 colour channel \(.*RGB"),
             (torch.randn(3, size, size), r"got shape \(3, .*unsqueeze"),
             (torch.zeros(2, 3, size, size, dtype=torch.uint8), r"got dtype torch.uint8"),
             (torch.randn(2, 3, size, size).numpy(), r"got a ndarray")]
    with torch.inference_mode():
        for x, got in cases:
            with pytest.raises(AnalysisUtilsError, match=f"{expected}.*{got}") as error:
                model.readouts(x, ["logits"])
            assert re.search(recipe, str(error.value)) and str(error.value).count(". ") == 0
            with pytest.raises(AnalysisUtilsError, match=got):
                model(x)  # the classifier call goes through the same check


def test_seeding_leaves_global_random_state_alone():
    if not MODELS:
        pytest.skip("no model registered yet")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    catalogue.load(MODELS[0], scale="mini", weights="untrained", seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(AnalysisUtilsError, match="Unknown model 'resnet'.*expected one of"):
        catalogue.load("resnet")


@pytest.mark.parametrize("name", MODELS[:1])
def test_bad_scale_weights_steps_and_readouts_are_refused(name):
    with pytest.raises(AnalysisUtilsError, match="Unknown scale 'huge'.*'mini', 'full'"):
        catalogue.load(name, scale="huge")
    with pytest.raises(AnalysisUtilsError, match="neither one of 'official', 'trained'"):
        catalogue.load(name, scale="mini", weights="pretrained")
    with pytest.raises(AnalysisUtilsError, match="Official weights exist only at full scale"):
        catalogue.load(name, scale="mini", weights="official")
    with pytest.raises(AnalysisUtilsError, match="steps must be a positive integer"):
        catalogue.load(name, scale="mini", weights="untrained", steps=0)
    model = catalogue.load(name, scale="mini", weights="untrained")
    with pytest.raises(AnalysisUtilsError, match="Unknown readout 'fc9'"):
        model.readouts(torch.randn(1, 3, 64, 64), ["fc9"])


def test_missing_checkpoint_file_is_refused(tmp_path):
    if not MODELS:
        pytest.skip("no model registered yet")
    with pytest.raises(AnalysisUtilsError, match="nor an existing file"):
        catalogue.load(MODELS[0], weights=str(tmp_path / "nothing.pth"))


def test_safetensors_round_trip_and_strict_refusal(tmp_path):
    if not MODELS:
        pytest.skip("no model registered yet")
    from safetensors.torch import save_file

    name = MODELS[0]
    model = catalogue.load(name, scale="mini", weights="untrained", seed=11)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    loaded = catalogue.load(name, scale="mini", weights=str(path))
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert loaded.weights_id["kind"] == "file"

    first = next(iter(state))
    broken = dict(state)
    del broken[first]
    save_file(broken, str(tmp_path / "broken.safetensors"))
    with pytest.raises(AnalysisUtilsError, match=f"lacks the key '{first}'"):
        catalogue.load(name, scale="mini", weights=str(tmp_path / "broken.safetensors"))


def test_trained_weights_absent_give_one_clear_sentence(monkeypatch, tmp_path):
    if not MODELS:
        pytest.skip("no model registered yet")
    from analysis_utils import weights

    monkeypatch.setattr(weights, "ZOO_DIR", tmp_path)
    with pytest.raises(AnalysisUtilsError, match="No trained mini weights.*weights='untrained'"):
        catalogue.load(MODELS[0], scale="mini", weights="trained")


def test_all_seven_models_are_registered():
    missing = EXPECTED - set(catalogue.names())
    assert not missing, f"models not yet in the catalogue: {sorted(missing)}"
