"""The input sizes of training batches per mode (SPP-net section 2.3): multi-size training
alternates the sizes epoch by epoch; variable size draws one per batch; every epoch sees every
sample once."""

from detect.classify.schedule import batch_sizes
from detect.classify.train import epoch_batches
from detect.config import load_config


def _cfg(*overrides):
    return load_config(None, ["classify.batch_size=8", *overrides])


def test_multi_size_alternates_per_epoch():
    cfg = _cfg("classify.mode=multi", "classify.sizes=[224,180]")
    per_epoch = [batch_sizes(cfg.classify, epoch, 5, seed=0) for epoch in range(4)]
    assert per_epoch == [[224] * 5, [180] * 5, [224] * 5, [180] * 5]


def test_multi_size_cycles_through_three_sizes():
    cfg = _cfg("classify.mode=multi", "classify.sizes=[224,200,180]")
    assert [batch_sizes(cfg.classify, e, 1, 0)[0] for e in range(6)] == [224, 200, 180] * 2


def test_fixed_and_single_use_the_first_size():
    for mode in ("fixed", "single"):
        cfg = _cfg(f"classify.mode={mode}", "classify.sizes=[224,180]")
        assert {s for e in range(3) for s in batch_sizes(cfg.classify, e, 4, 0)} == {224}


def test_variable_size_per_batch_in_range_and_repeatable():
    cfg = _cfg("classify.mode=variable", "classify.variable_range=[180,224]")
    sizes = batch_sizes(cfg.classify, 3, 200, seed=7)
    assert min(sizes) >= 180 and max(sizes) <= 224
    assert len(set(sizes)) > 20  # varies from batch to batch
    assert sizes == batch_sizes(cfg.classify, 3, 200, seed=7)  # a resumed epoch repeats them
    assert sizes != batch_sizes(cfg.classify, 4, 200, seed=7)


def test_epoch_batches_cover_each_sample_once_at_one_size_per_batch():
    cfg = _cfg("classify.mode=multi", "classify.sizes=[224,180]")
    for epoch, size in [(0, 224), (1, 180)]:
        batches = epoch_batches(cfg, 21, epoch)
        assert [len(b) for b in batches] == [8, 8, 5]
        assert sorted(i for b in batches for i, _, _ in b) == list(range(21))
        assert {s for b in batches for _, s, _ in b} == {size}
        assert {e for b in batches for _, _, e in b} == {epoch}
    assert epoch_batches(cfg, 21, 0) != epoch_batches(cfg, 21, 2)  # a new order each epoch
