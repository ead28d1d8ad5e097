"""The recorded view: what a consumer may change (budgets, tools) and what it must not (pixels, text)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from pydantic import BaseModel

from videor4.contracts.errors import UserError
from videor4.contracts.executor import OpsConfig
from videor4.contracts.view import PromptConfig, ShardView, check_view, differences, display_size, resolve_view

RECORDED = ShardView(prompt=PromptConfig(num_frames=8), ops=OpsConfig(max_calls=4))


def test_unset_settings_take_the_recorded_view() -> None:
    assert resolve_view(RECORDED, None, None, "here") == RECORDED
    assert resolve_view(None, None, None, "here") == ShardView()  # shards written before views were recorded


def test_budgets_and_tools_may_differ_and_only_the_fields_set_are_taken() -> None:
    view = resolve_view(RECORDED, PromptConfig(tools=False), OpsConfig(max_calls=1, max_images=32), "here")
    assert view.prompt.tools is False and view.ops.max_calls == 1 and view.ops.max_images == 32
    assert view.prompt.num_frames == 8 and view.ops.crop_pad == RECORDED.ops.crop_pad
    assert differences(RECORDED, view) == [] and len(differences(RECORDED, view, strict=True)) == 3


@pytest.mark.parametrize(("prompt", "ops", "named"), [
    (PromptConfig(num_frames=16), None, "prompt.num_frames: recorded 8, requested 16"),
    (PromptConfig(frame_max_pixels=64 * 28 * 28), None, "prompt.frame_max_pixels: recorded 100352, requested 50176"),
    (None, OpsConfig(crop_pad=0.3), "ops.crop_pad: recorded 0.1, requested 0.3"),
    (None, OpsConfig(clip_frames=4), "ops.clip_frames: recorded 8, requested 4"),
])
def test_a_setting_that_changes_pixels_or_text_is_refused_naming_both_values(prompt, ops, named) -> None:
    with pytest.raises(UserError) as err:
        resolve_view(RECORDED, prompt, ops, "recipe r, stage s")
    message = str(err.value)
    assert named in message and message.startswith("recipe r, stage s:") and "\n" not in message


def test_check_view_passes_equal_views_and_nothing_recorded() -> None:
    check_view(RECORDED, RECORDED, "x")
    check_view(None, ShardView(prompt=PromptConfig(num_frames=2)), "x")


def test_executor_factory_applies_the_views_ops_and_display_sizes(tiny_video) -> None:
    from videor4.contracts.media import open_video

    view = ShardView(prompt=PromptConfig(num_frames=3, frame_max_pixels=4 * 28 * 28), ops=OpsConfig(clip_frames=2))
    with open_video(tiny_video) as reader:
        ex = view.executor(reader)
        assert [r.frame_index for r in ex.context] == view.initial_frames(reader.num_frames) == [5, 15, 25]
        assert ex.config == view.ops
        ref = ex.context[0]
        assert ex.rendered_size(ref) == (224, 128)
        assert ex.shown_size(ref) == display_size(view.prompt, ref, (224, 128)) != (224, 128)


def _models():
    packages = [importlib.import_module(f"videor4.{p}") for p in ("contracts", "curation", "training", "annotation",
                                                                   "pipelines")]
    infos = [info for pkg in packages for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
    for info in infos:
        if info.name.endswith(("cli", "__main__")) or ".sample_data" in info.name:
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError as exc:  # optional extras (vllm, verl, lmms-eval) are not in every environment
            if "videor4" in str(exc):
                raise
            continue
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseModel) and obj.__module__ == module.__name__:
                yield f"{module.__name__}.{name}", obj


def test_every_config_and_record_model_refuses_unknown_keys() -> None:
    """A misspelt recipe or config key is an error, never silently ignored."""
    models = dict(_models())
    assert len(models) >= 25 and "videor4.training.rollout.RolloutConfig" in models
    lenient = [name for name, model in models.items() if model.model_config.get("extra") != "forbid"]
    assert lenient == []
