"""``reverse_input``: the official PredRNN training's second optimizer step on the time-reversed clip.

The official ``core/trainer.py`` ``train`` (thuml/predrnn-pytorch) runs ``model.train(ims, mask)`` and then
``model.train(np.flip(ims, axis=1), mask)``: two Adam steps per iteration, the second on the whole clip
reversed in time, with the same teacher forcing mask. One iteration of framecast with
``reverse_input: true`` must be exactly two plain steps: on the clip, then on its reverse.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from framecast.module import FramePredictionModule

T_CTX, HORIZON = 3, 2


pytestmark = pytest.mark.usefixtures("one_thread")


def clips(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.rand(2, T_CTX + HORIZON, 1, 8, 8, generator=g)
        out.append({"context": x[:, :T_CTX], "target": x[:, T_CTX:]})
    return out


def reversed_clip(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    x = torch.cat([batch["context"], batch["target"]], 1).flip(1)
    return {"context": x[:, :T_CTX], "target": x[:, T_CTX:]}


def module(reverse_input: bool, model: str = "predrnn_v2", **kw) -> FramePredictionModule:
    torch.manual_seed(0)
    return FramePredictionModule(model=model, hidden=[4, 4], kernel_size=3, patch_size=2, lr=1e-2,
                                 teacher_forcing="scheduled_sampling", reverse_input=reverse_input, **kw)


def fixed_masks(mod: FramePredictionModule, masks: list[torch.Tensor], per_iteration: int) -> list[int]:
    """Replace the schedule's random mask by ``masks[step // per_iteration]``; returns the steps asked for."""
    asked: list[int] = []

    def mask(step, batch, context, horizon, device=None, generator=None):
        asked.append(step)
        return masks[step // per_iteration]

    mod.teacher_forcing.mask = mask
    return asked


def fit(mod: FramePredictionModule, batches: list[dict], **trainer_kw) -> L.Trainer:
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, **trainer_kw)
    trainer.fit(mod, train_dataloaders=DataLoader(batches, batch_size=None, shuffle=False))
    return trainer


@pytest.mark.parametrize("lr_schedule,limit", [("constant", "max_steps"), ("cosine", "max_epochs"),
                                               ("cosine", "max_steps")])
def test_one_iteration_is_two_plain_steps_on_the_clip_and_its_reverse(lr_schedule, limit):
    data = clips(2)
    g = torch.Generator().manual_seed(1)
    masks = [(torch.rand(2, T_CTX + HORIZON - 2, generator=g) < 0.5).float() for _ in data]
    limits = {"max_steps": 4} if limit == "max_steps" else {"max_epochs": 1}

    rev = module(True, lr_schedule=lr_schedule, warmup_steps=1)
    asked_rev = fixed_masks(rev, masks, per_iteration=1)
    trainer_rev = fit(rev, data, **limits)

    plain = module(False, lr_schedule=lr_schedule, warmup_steps=1)
    asked_plain = fixed_masks(plain, masks, per_iteration=2)  # the same mask for a clip and its reverse
    trainer_plain = fit(plain, [c for b in data for c in (b, reversed_clip(b))], **limits)

    assert not rev.automatic_optimization and plain.automatic_optimization
    assert trainer_rev.global_step == trainer_plain.global_step == 4  # optimizer steps, two per batch
    assert asked_rev == [0, 1]  # one mask per iteration, drawn at the iteration's schedule step
    assert asked_plain == [0, 1, 2, 3]
    assert rev.schedule_step == 2 and plain.schedule_step == 4
    for (name, a), b in zip(rev.state_dict().items(), plain.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    lr_rev = trainer_rev.optimizers[0].param_groups[0]["lr"]
    lr_plain = trainer_plain.optimizers[0].param_groups[0]["lr"]
    assert lr_rev == pytest.approx(lr_plain)
    if lr_schedule == "cosine":
        assert lr_rev == pytest.approx(1e-2 * 0.01)  # the schedule reached its end after 4 optimizer steps


def test_the_reversed_step_learns_from_the_reversed_clip():
    """Against a hand-written loop (plain PyTorch): AdamW steps on the clip, then on the flipped clip."""
    data = clips(1)
    mask = torch.ones(2, T_CTX + HORIZON - 2)
    rev = module(True, model="predrnn")
    fixed_masks(rev, [mask], per_iteration=1)
    ref = module(False, model="predrnn")
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.0)
    for b in (data[0], reversed_clip(data[0])):
        x = torch.cat([b["context"], b["target"]], 1)
        roll = ref.model.rollout(b["context"], HORIZON, target=b["target"], teacher_mask=mask)
        loss = torch.mean((roll.frames - x[:, 1:]) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    fit(rev, data, max_steps=2)
    for (name, a), b in zip(rev.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    # and it is not the same as one step (or two steps on the clip without reversing it)
    twice = module(False, model="predrnn")
    fixed_masks(twice, [mask, mask], per_iteration=1)
    fit(twice, [data[0], data[0]], max_steps=2)
    w = "model.cells.0.conv_x.weight"
    assert (rev.state_dict()[w] - twice.state_dict()[w]).abs().max() > 1e-5


def test_reverse_input_default_off_and_in_hparams():
    mod = FramePredictionModule(model="predrnn", hidden=[4], kernel_size=3)
    assert mod.hparams.reverse_input is False and mod.automatic_optimization
    assert FramePredictionModule(model="predrnn", hidden=[4], kernel_size=3, reverse_input=True).hparams.reverse_input


def test_non_finite_loss_still_stops_before_the_update():
    """The manual path keeps the check of on_before_optimizer_step (a NaN clip never reaches the weights)."""
    from framecast.module import NonFiniteError

    data = clips(1)
    data[0]["target"] = data[0]["target"].clone()
    data[0]["target"][0, 0, 0, 0, 0] = float("nan")
    rev = module(True)
    before = {k: v.clone() for k, v in rev.state_dict().items()}
    with pytest.raises(NonFiniteError):
        fit(rev, data, max_steps=2)
    for k, v in rev.state_dict().items():
        assert torch.equal(v, before[k]), k
