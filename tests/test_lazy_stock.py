"""detectron2's own tools/lazyconfig_train_net.py, unmodified (the sal-detectron2 package
installs it as the module tools.lazyconfig_train_net), driven through its do_train with this
project's lazy demo config: it trains past an epoch, DST's feedback finds the model by itself
and chooses collages, dst/* reach metrics.json, and --resume continues past what was read."""
import json
import os
from types import SimpleNamespace
from unittest import mock

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "train", "configs", "lazy", "demo_coco128_cpu.py")


@pytest.fixture(scope="module")
def coco128_first24():
    """24 images: an epoch of the regular stream is 12 iterations of 2 (and 17 landscape
    images, enough for a collage batch of 4 x 4)."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import load_coco_json
    name = "coco128_first24"
    if name not in DatasetCatalog.list():
        json_file = os.path.join(ROOT, "data", "coco128", "instances.json")
        images = os.path.join(ROOT, "data", "coco128", "images")
        load_coco_json(json_file, images, name)  # sets the metadata: classes, id map
        DatasetCatalog.register(name, lambda: load_coco_json(json_file, images, name)[:24])
    return name


def stock_config(dataset, output_dir, max_iter):
    from detectron2.config import LazyConfig
    cfg = LazyConfig.load(CONFIG)  # registers coco128
    cfg = LazyConfig.apply_overrides(cfg, [
        f"dataloader.train.datasets={dataset}", "dataloader.train.min_size=[192]",
        "dataloader.train.max_size=256", "dataloader.train.controller.tau=1.0",
        f"train.output_dir={output_dir}", f"train.max_iter={max_iter}",
        "train.checkpointer.period=7", "train.log_period=1",
        "model.backbone.bottom_up.freeze_at=5"])  # the ResNet's backward checks nothing here
    del cfg.dataloader.evaluator  # do_test then evaluates nothing
    return cfg


@pytest.mark.slow
def test_stock_lazyconfig_train_net_trains_dst_past_an_epoch_and_resumes(coco128_first24,
                                                                           tmp_path):
    from dst_dali import DSTLoader
    from tools import lazyconfig_train_net as stock
    cfg = stock_config(coco128_first24, str(tmp_path), 14)
    assert cfg.dataloader.train.batch_size == 2  # an override the README names
    with mock.patch.object(DSTLoader, "start_after", autospec=True,
                           side_effect=DSTLoader.start_after) as start_after:
        stock.do_train(SimpleNamespace(resume=False), cfg)
        assert not start_after.called
    rows = [json.loads(line) for line in open(tmp_path / "metrics.json")]
    trained = [r for r in rows if "dst/collage" in r]
    assert max(r["iteration"] for r in trained) == 13  # past the 12-iteration epoch
    # tau = 1: every r fed asks for a collage, and only a fed controller asks: the feedback
    # found the model without a watch() line
    assert trained[-1]["dst/collage"] == 1.0 and 0 < trained[-1]["dst/collage_rate"] < 1
    assert "dst/small_share" in trained[-1] and trained[-1]["dst/tau"] == 1.0

    resumed = stock_config(coco128_first24, str(tmp_path), 16)
    with mock.patch.object(DSTLoader, "start_after", autospec=True,
                           side_effect=DSTLoader.start_after) as start_after:
        stock.do_train(SimpleNamespace(resume=True), resumed)
    assert [c.args[1] for c in start_after.call_args_list] == [14]
    rows = [json.loads(line) for line in open(tmp_path / "metrics.json")]
    assert max(r["iteration"] for r in rows if "dst/collage" in r) == 15


def test_lazy_demo_config_overrides(coco128_first24):
    from detectron2.config import LazyConfig, instantiate
    cfg = LazyConfig.apply_overrides(LazyConfig.load(CONFIG),
                                     ["dataloader.train.batch_size=4", "train.max_iter=1"])
    cfg.dataloader.train.datasets = coco128_first24
    loader = instantiate(cfg.dataloader.train)
    assert loader.batch_size == 4 and loader.settings.endless
    assert len(loader.next_batch("regular")) == 4


def test_model_finder_matches_the_batch_by_identity_and_leaves_no_global_hook():
    import torch
    from torch.nn.modules import module as torch_module

    from dst_dali.feedback.stock_loops import GIVE_UP_AFTER, ModelFinder

    class Outer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.Identity()

        def forward(self, batch):
            return self.inner(batch)

    hooks_before = len(torch_module._global_forward_pre_hooks)
    found = []
    finder = ModelFinder(found.append)
    model, batch = Outer(), [torch.zeros(1)]
    finder.delivered(batch)
    model(list(batch))  # an equal batch, not the one delivered: no match
    assert found == [] and finder.active
    model(batch)
    assert found == [model]  # the outermost module called with it, then no hook left
    assert not finder.active and len(torch_module._global_forward_pre_hooks) == hooks_before

    copies = ModelFinder(found.append)  # a loop that rebuilds every batch
    with pytest.warns(UserWarning, match="cannot find the model; call loader.watch"):
        for _ in range(GIVE_UP_AFTER + 1):
            batch = [torch.zeros(1)]
            copies.delivered(batch)
            model(list(batch))
    assert found == [model] and not copies.active
    assert len(torch_module._global_forward_pre_hooks) == hooks_before
