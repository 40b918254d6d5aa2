"""torchvision model names, resolved through torchvision's weights API and a TORCH_HOME cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm

import inspector
from inspector.errors import SourceNotFound, WeightsUnavailable

from .helpers import assert_stats_match


def cache_checkpoint(name: str, weights: str = "DEFAULT", seed: int = 0) -> tuple[Path, dict]:
    """Put a state dict where torchvision's cache would hold the pretrained file, under the test's TORCH_HOME."""
    member = tvm.get_model_weights(name)[weights]
    path = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints" / os.path.basename(member.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    sd = tvm.get_model(name, weights=None).state_dict()
    torch.save(sd, path)
    return path, sd


def test_cached_resnet18_rows_match_state_dict():
    path, sd = cache_checkpoint("resnet18")
    assert path.name == "resnet18-f37072fd.pth"
    result = inspector.inspect("resnet18")
    assert list(result.tensors["name"]) == list(sd)
    for row in result.tensors.to_dict("records"):
        assert_stats_match(row, sd[row["name"]].numpy())
    assert result.summary["trained"] is True
    assert result.summary["weights"] == "ResNet18_Weights.IMAGENET1K_V1"


def test_kinds_come_from_module_types():
    cache_checkpoint("resnet18")
    t = inspector.inspect("resnet18").tensors.set_index("name")
    assert t.loc["conv1.weight", "kind"] == "weight" and t.loc["conv1.weight", "module_type"] == "Conv2d"
    assert t.loc["bn1.weight", "kind"] == "norm" and t.loc["bn1.bias", "kind"] == "norm"
    assert t.loc["bn1.running_var", "kind"] == "buffer"
    assert t.loc["layer1.0.bn1.num_batches_tracked", "kind"] == "buffer"
    assert t.loc["fc.weight", "kind"] == "weight" and t.loc["fc.bias", "kind"] == "bias"
    assert t.loc["fc.weight", "out_axis"] == 0


def test_named_weights_member():
    path, _ = cache_checkpoint("resnet18", "IMAGENET1K_V1")
    assert inspector.inspect("resnet18", weights="IMAGENET1K_V1").summary["tensors"] == 122


def test_not_cached_error_names_the_cache_file():
    with pytest.raises(WeightsUnavailable) as err:
        inspector.inspect("resnet18")
    msg = str(err.value)
    assert "hub/checkpoints/resnet18-f37072fd.pth" in msg
    assert "--weights none" in msg and "local checkpoint" in msg


def test_untrained_network_says_so():
    result = inspector.inspect("alexnet", weights="none")
    assert result.summary["trained"] is False
    assert any("UNTRAINED" in n for n in result.summary["notes"])
    kinds = result.tensors.set_index("name")["kind"]
    assert kinds["features.0.weight"] == "weight" and kinds["classifier.6.bias"] == "bias"


def test_vision_transformer_kinds():
    t = inspector.inspect("vit_b_16", weights="none").tensors.set_index("name")
    assert t.loc["encoder.layers.encoder_layer_0.self_attention.in_proj_weight", "kind"] == "weight"
    assert t.loc["encoder.layers.encoder_layer_0.ln_1.weight", "kind"] == "norm"
    assert t.loc["class_token", "kind"] == "other"


def test_unknown_name_suggests_close_matches():
    with pytest.raises(SourceNotFound, match="did you mean resnet18"):
        inspector.inspect("resnet181")


def test_unknown_weights_member_lists_choices():
    with pytest.raises(SourceNotFound, match="IMAGENET1K_V1"):
        inspector.inspect("resnet18", weights="IMAGENET9K")


def test_untrained_detection_model_needs_no_backbone_download():
    result = inspector.inspect("ssdlite320_mobilenet_v3_large", weights="none")
    assert result.summary["trained"] is False and result.summary["weight_numel"] > 0


def test_architecture_that_cannot_be_built_on_meta_still_gets_module_types():
    cache_checkpoint("regnet_x_400mf")
    t = inspector.inspect("regnet_x_400mf").tensors
    assert t["module_type"].notna().all()
    assert set(t["kind"]) == {"weight", "bias", "norm", "buffer"}
