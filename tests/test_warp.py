"""The warping heads (``head: warp`` and ``warp_mixture``, models/warp.py) and the motion-field picture."""

import numpy as np
import pytest
import torch

from framecast.codelength import LEVELS
from framecast.models import build_model
from framecast.models.warp import WarpHead, WarpMixtureHead, is_warp_head, warp
from framecast.module import FramePredictionModule
from framecast.viz.flow import flow_figure, flow_to_rgb, legend_wheel, motion_field


def tiny(head, model="convlstm", residual=False, patch_size=2):
    torch.manual_seed(0)
    return build_model(model, channels=1, hidden=[8], kernel_size=3, patch_size=patch_size, residual=residual,
                       head=head, num_mixtures=2)


def test_warp_known_answers():
    frame = torch.arange(20.0).view(1, 1, 4, 5) / 20
    assert torch.equal(warp(frame, torch.zeros(1, 2, 4, 5)), frame)  # zero motion: exactly the frame
    right = torch.zeros(1, 2, 4, 5)
    right[:, 0] = 1.0  # every pixel takes the value one pixel to its right; the last column repeats (border)
    expect = torch.cat([frame[..., 1:], frame[..., -1:]], -1)
    torch.testing.assert_close(warp(frame, right), expect, atol=1e-6, rtol=0)
    down_half = torch.zeros(1, 2, 4, 5)
    down_half[:, 1] = 0.5  # half a pixel down: the mean of a pixel and the one below it
    below = torch.cat([frame[..., 1:, :], frame[..., -1:, :]], -2)
    torch.testing.assert_close(warp(frame, down_half), (frame + below) / 2, atol=1e-6, rtol=0)


def test_warp_is_float32_under_bfloat16_autocast():
    frame = torch.rand(2, 1, 8, 8)
    flow = torch.full((2, 2, 8, 8), 0.3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = warp(frame, flow.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, warp(frame, flow.bfloat16().float()))


@pytest.mark.parametrize(("model", "head"), [("convlstm", "warp"), ("convgru", "warp"), ("predrnn", "warp"),
                                            ("predrnn", "warp_mixture")])
def test_a_fresh_warping_model_is_copy_last(model, head):
    m = tiny(head, model, residual=model != "convgru").eval()  # with and without the correction
    assert is_warp_head(m.head)
    context = torch.rand(2, 3, 1, 8, 8)
    roll = m.rollout(context, 4, return_hidden=True)
    assert roll.frames.shape == (2, 6, 1, 8, 8) and roll.hidden.shape == (2, 6, 8, 4, 4)
    flow = m.head.flow(roll.hidden)
    assert flow.shape == (2, 6, 2, 8, 8) and torch.count_nonzero(flow) == 0
    if head == "warp":  # each step copies the frame it read, exactly
        assert torch.equal(roll.frames[:, :2], context[:, :2])
        assert torch.equal(roll.prediction(), context[:, -1:].expand(-1, 4, -1, -1, -1))
    else:  # the mixture's means sit exactly on the frame read
        assert roll.params.shape == (2, 6, 3 * 2, 8, 8)
        _, means, _ = m.head.split(roll.params)
        inputs = torch.cat([context, context[:, -1:].expand(-1, 3, -1, -1, -1)], 1)
        assert torch.equal(means[:, :3], inputs[:, :3].unsqueeze(2).expand_as(means[:, :3]))
        # the frames fed back are the mixture's mean, which the clipping at 0 and 1 moves by a few levels where the
        # frame is near black or white (a narrow logistic of scale 2/255)
        assert (roll.prediction() - context[:, -1:]).abs().max() < 5 / 255


@pytest.mark.parametrize(("head", "residual"), [("warp", True), ("warp_mixture", False)])
def test_gradients_reach_the_motion_field_and_the_core(head, residual):
    m = tiny(head, residual=residual)
    context, target = torch.rand(2, 3, 1, 8, 8), torch.rand(2, 2, 1, 8, 8)
    truth = torch.cat([context[:, 1:], target], 1)

    def loss():
        roll = m.rollout(context, 2, target=target, teacher_mask=torch.ones(2, 3))
        assert roll.frames.shape == truth.shape
        if roll.params is not None:
            return m.head.bits(roll.params, truth).mean()
        return (roll.frames - truth).pow(2).mean()

    loss().backward()
    assert m.head.motion.conv.weight.grad.abs().sum() > 0  # the zero-initialised field learns from the start
    if head == "warp":
        assert (m.head.correction is not None) == residual
    torch.optim.SGD(m.parameters(), lr=0.1).step()  # once the head is not zero, the features feel it
    m.zero_grad()
    loss().backward()
    core = [p.grad for n, p in m.named_parameters() if not n.startswith("head.")]
    assert all(g is not None and torch.isfinite(g).all() for g in core)
    assert sum(g.abs().sum() for g in core) > 0


def test_the_mixture_codelength_is_exact():
    head = WarpMixtureHead(4, 1, 1, num_mixtures=2)
    torch.nn.init.normal_(head.conv.weight, std=0.5)
    torch.nn.init.normal_(head.motion.conv.weight, std=0.5)
    h, current = torch.randn(1, 4, 3, 3), torch.rand(1, 1, 3, 3)
    _, params = head(h, current)
    levels = torch.arange(LEVELS, dtype=torch.float32).div(LEVELS - 1).view(LEVELS, 1, 1, 1)
    p = head.log_prob(params.expand(LEVELS, -1, -1, -1), levels.expand(LEVELS, 1, 3, 3)).exp().sum(0)
    torch.testing.assert_close(p, torch.ones_like(p), atol=1e-5, rtol=0)  # the 256 levels: probability 1


def test_warp_heads_build_from_the_module_and_train_on_bits():
    mod = FramePredictionModule(model="convgru", hidden=[8], kernel_size=3, patch_size=2, head="warp_mixture",
                                loss="bits", num_mixtures=2)
    assert isinstance(mod.model.head, WarpMixtureHead)
    assert isinstance(FramePredictionModule(hidden=[8], patch_size=2, head="warp").model.head, WarpHead)
    with pytest.raises(ValueError, match="per-pixel distribution"):
        FramePredictionModule(hidden=[8], patch_size=2, head="warp", loss="bits")
    with pytest.raises(ValueError, match="warp_mixture"):
        build_model("convlstm", hidden=[8], head="flow")


def moving_square(steps=8, size=16, speed=1):
    clip = torch.zeros(1, steps, 1, size, size)
    for t in range(steps):
        x = 2 + speed * t
        clip[0, t, 0, 5:10, x : x + 4] = 1.0
    return torch.nn.functional.avg_pool2d(clip.flatten(0, 1), 3, 1, 1).view_as(clip)  # soft edges, for gradients


def test_overfits_one_moving_clip_beyond_copy_last():
    clip = moving_square()
    context, target = clip[:, :4], clip[:, 4:]
    m = tiny("warp", patch_size=2)
    opt = torch.optim.Adam(m.parameters(), lr=0.03)
    copy = (context[:, -1:] - target).pow(2).mean()
    for _ in range(12):
        roll = m.rollout(context, 4, target=target, teacher_mask=torch.ones(1, 6))
        loss = (roll.frames - clip[:, 1:]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        roll = m.rollout(context, 4, return_hidden=True)
        err = (roll.prediction() - target).pow(2).mean()
        flow = m.head.flow(roll.hidden)[0, -4:, :, 5:10, 4:10]  # on the square
    assert err < 0.2 * copy
    # the square moves 1 pixel right per frame: each of its pixels takes its value from 1 pixel to the left
    assert -1.3 < flow[:, 0].mean() < -0.7 and flow[:, 1].abs().mean() < 0.3


def test_flow_colours_follow_the_wheel():
    u = torch.zeros(2, 1, 5)
    u[:, 0, 1], u[:, 0, 2], u[:, 0, 3], u[:, 0, 4] = (torch.tensor(v) for v in ([2.0, 0], [0, -2.0], [-2.0, 0],
                                                                                   [1.0, 0]))
    rgb = flow_to_rgb(u)[0]
    np.testing.assert_allclose(rgb[0], [1, 1, 1])  # still: white
    np.testing.assert_allclose(rgb[1], [1, 0, 0])  # right, longest: red
    np.testing.assert_allclose(rgb[2], [0.5, 1, 0])  # up (hue 90 degrees)
    np.testing.assert_allclose(rgb[3], [0, 1, 1])  # left: cyan
    np.testing.assert_allclose(rgb[4], [1, 0.5, 0.5])  # right at half the longest: half saturated
    wheel = legend_wheel(33)
    assert wheel.shape == (33, 33, 4) and wheel[0, 0, 3] == 0 and wheel[16, 16, 3] == 1
    np.testing.assert_allclose(wheel[16, 32, :3], [1, 0, 0], atol=1e-6)  # the wheel's right edge is red


def test_the_flow_picture_of_a_rollout(tmp_path):
    from framecast.viz.figures import save

    m = tiny("warp")
    torch.nn.init.normal_(m.head.motion.conv.weight, std=0.3)
    context = torch.rand(1, 3, 1, 8, 8)
    roll = m.rollout(context, 2, return_hidden=True)
    flows = motion_field(m, roll.hidden[0])
    assert flows.shape == (4, 2, 8, 8) and flows.abs().sum() > 0
    fig = flow_figure(context[0, [0, 1, 2, 2]], flows, roll.frames[0].detach(), 3, title="clip 0")
    assert len(fig.axes) == 3 * 5 and len([a for a in fig.axes if a.get_visible()]) == 3 * 4 + 1  # + the wheel
    assert save(fig, tmp_path / "flow.png").stat().st_size > 1000
