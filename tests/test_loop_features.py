"""What training loops have, in the words torch users write them, inside the evolution: torch.optim
classes and SGD's momentum keywords, learning-rate schedulers, gradient clipping, the user's own
batch order.  Each fine step equals the user's loop (written out here) to 1e-12 over 100 steps, and
MGRIT gives the serial weights."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler as sched

from pintrain import OptionError, PintrainError
from pintrain.mgrit import serial_solve, solve
from pintrain.torch import TorchProblem, fit, make_optimizer
from pintrain.training import SGD, Adam, Momentum, model_problem

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_cases import small_data as data  # noqa: E402
from torch_cases import small_net as net  # noqa: E402

SCHEDULERS = {
    "step": lambda opt: sched.StepLR(opt, step_size=30, gamma=0.5),
    "cosine": lambda opt: sched.CosineAnnealingLR(opt, T_max=100, eta_min=1e-4),
    "warmup": lambda opt: sched.LinearLR(opt, start_factor=0.1, total_iters=20),
    "onecycle": lambda opt: sched.OneCycleLR(opt, max_lr=0.1, total_steps=100, cycle_momentum=False),
    "lambda": lambda opt: sched.LambdaLR(opt, lambda k: 1.0 / (1 + 0.05 * k)),
}


def users_loop(optimizer_cls, hyper, batches, scheduler=None, clip=None):
    """The loop a torch user writes, to compare with: weights after every step."""
    model = net()
    opt = optimizer_cls(model.parameters(), **hyper)
    s = scheduler(opt) if scheduler is not None else None
    X, y = data()
    out = []
    for idx in batches:
        opt.zero_grad()
        nn.CrossEntropyLoss()(model(X[idx]), y[idx]).backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if s is not None:
            s.step()
        out.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().copy())
    return np.array(out)


def problem(optimizer, steps=100, **kw):
    X, y = data()
    return TorchProblem(
        net(), nn.CrossEntropyLoss(), X, y, steps=steps, batch_size=16, optimizer=optimizer, seed=3, **kw
    )


def test_torch_users_words_for_the_optimizer():
    assert make_optimizer("sgd", 0.05, momentum=0.9) == Momentum(0.05, momentum=0.9)
    assert make_optimizer("sgd", 0.05, momentum=0.9, nesterov=True) == Momentum(0.05, momentum=0.9, nesterov=True)
    assert make_optimizer("sgd", 0.05, momentum=0.0, weight_decay=1e-3) == SGD(0.05, weight_decay=1e-3)
    assert make_optimizer(torch.optim.SGD, 0.1) == SGD(0.1)
    assert make_optimizer(torch.optim.Adam, 1e-3, foreach=False) == Adam(1e-3)
    assert make_optimizer(torch.optim.AdamW, 1e-3) == Adam(1e-3, weight_decay=0.01, decoupled=True)
    with pytest.raises(OptionError, match="optimizer='RMSprop'.*torch.optim.SGD, torch.optim.Adam"):
        make_optimizer(torch.optim.RMSprop, 0.1)
    with pytest.raises(OptionError, match="amsgrad=True"):
        make_optimizer("adam", 0.1, amsgrad=True)
    with pytest.raises(OptionError, match="nesterov.*momentum > 0"):
        make_optimizer("sgd", 0.1, nesterov=True)
    with pytest.raises(PintrainError, match="not betas"):
        make_optimizer(torch.optim.SGD, 0.1, betas=(0.9, 0.9))


def test_sgd_with_momentum_keywords_equals_torch_optim_sgd():
    X, y = data()
    kw = {"steps": 100, "batch_size": 16, "lr": 0.05, "seed": 3, "method": "serial"}
    res = fit(net(), nn.CrossEntropyLoss(), X, y, optimizer=torch.optim.SGD, momentum=0.9, nesterov=True, **kw)
    batches = [res.problem.schedule.batch(k) for k in range(100)]
    ref = users_loop(torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}, batches)
    np.testing.assert_allclose(serial_solve(res.problem)[1:, : res.problem.n_params], ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@pytest.mark.parametrize(
    "cls,hyper", [(torch.optim.SGD, {}), (torch.optim.SGD, {"momentum": 0.9}), (torch.optim.AdamW, {})]
)
def test_lr_schedulers_step_for_step(name, cls, hyper):
    lr = 0.01 if cls is torch.optim.AdamW else 0.05
    p = problem(make_optimizer(cls, lr, **hyper), lr_scheduler=SCHEDULERS[name])
    batches = [p.schedule.batch(k) for k in range(100)]
    ref = users_loop(cls, {"lr": lr, **hyper}, batches, scheduler=SCHEDULERS[name])
    evolution = serial_solve(p)  # pintrain's own fine steps, with the schedule inside the evolution
    np.testing.assert_allclose(evolution[1:, : p.n_params], ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(p.serial_states(), evolution, rtol=0, atol=1e-12)


def test_clip_grad_norm_step_for_step():
    p = problem(make_optimizer("adam", 0.01), clip_grad_norm=0.05)
    batches = [p.schedule.batch(k) for k in range(100)]
    ref = users_loop(torch.optim.Adam, {"lr": 0.01}, batches, clip=0.05)
    np.testing.assert_allclose(serial_solve(p)[1:, : p.n_params], ref, rtol=0, atol=1e-12)
    # the clip was active: unclipped training goes elsewhere
    assert np.abs(serial_solve(problem(make_optimizer("adam", 0.01)))[-1, : p.n_params] - ref[-1]).max() > 1e-3


@pytest.mark.parametrize("coarse", ["union", "split"])
def test_mgrit_with_schedule_and_clipping_reaches_the_serial_weights(coarse):
    p = problem(
        make_optimizer("sgd", 0.05, momentum=0.9),
        steps=192,
        coarse=coarse,
        lr_scheduler=SCHEDULERS["cosine"],
        clip_grad_norm=0.5,
    )
    res = solve(p, levels=3, cfactor=4, tol=1e-10, max_iter=60)
    assert res.converged and np.abs(res.states - p.serial_states()).max() < 1e-8


def test_the_users_own_batch_order():
    X, y = data()
    gen = torch.Generator().manual_seed(7)
    sampler = torch.utils.data.RandomSampler(range(len(y)), generator=gen)
    order = [b for _ in range(10) for b in torch.utils.data.BatchSampler(sampler, 16, drop_last=True)][:64]
    kw = {"steps": 64, "batch_size": None, "optimizer": "adam", "lr": 0.01, "batches": order}
    serial = fit(net(), nn.CrossEntropyLoss(), X, y, method="serial", **kw)
    np.testing.assert_allclose(serial.states[1:, : serial.problem.n_params],
                               users_loop(torch.optim.Adam, {"lr": 0.01}, order), rtol=0, atol=1e-12)  # fmt: skip
    mgrit = fit(net(), nn.CrossEntropyLoss(), X, y, levels=2, cfactor=4, tol=1e-10, **kw)
    assert np.abs(mgrit.states - serial.states).max() < 1e-8
    with pytest.raises(OptionError, match="one batch per step"):
        fit(net(), nn.CrossEntropyLoss(), X, y, **{**kw, "steps": 65})
    with pytest.raises(OptionError, match="batch_size=200"):
        fit(net(), nn.CrossEntropyLoss(), X, y, batch_size=200)


def test_what_cannot_be_scheduled_is_refused():
    X, y = data()
    with pytest.raises(OptionError, match="cycle_momentum=False"):
        fit(net(), nn.CrossEntropyLoss(), X, y, optimizer="momentum",
            lr_scheduler=lambda o: sched.OneCycleLR(o, max_lr=0.1, total_steps=2000))  # fmt: skip
    p = model_problem("sine", steps=64)
    with pytest.raises(OptionError, match="constant learning rate.*'union' or 'split'"):
        type(p)(p.model, p.schedule, p.optimizer, 64, "gauss-newton", lr_schedule=np.full(64, 0.05))
    with pytest.raises(OptionError, match="one learning rate per step, 64"):
        type(p)(p.model, p.schedule, p.optimizer, 64, "union", lr_schedule=[0.1, 0.2])
    with pytest.raises(OptionError, match="clip_grad_norm"):
        type(p)(p.model, p.schedule, p.optimizer, 64, "union", clip_grad_norm=-1.0)
    # the numpy backend takes a schedule as a function of the step
    q = type(p)(p.model, p.schedule, p.optimizer, 64, "union", lr_schedule=lambda k: 0.05 / (1 + k / 32))
    res = solve(q, levels=2, cfactor=4, tol=1e-10)
    assert res.converged and np.abs(res.states - serial_solve(q)).max() < 1e-8


def test_a_lean_serial_run_keeps_what_is_asked_for():
    X, y = data()
    kw = {"steps": 100, "batch_size": 16, "optimizer": "adam", "lr": 0.01, "seed": 3}
    full = fit(net(), nn.CrossEntropyLoss(), X, y, method="serial", **kw)
    lean = fit(net(), nn.CrossEntropyLoss(), X, y, method="serial", keep="final", **kw)
    np.testing.assert_array_equal(lean.points, [0, 100])
    np.testing.assert_array_equal(lean.states, full.states[[0, 100]])  # the same loop, two rows kept
    np.testing.assert_array_equal(lean.losses, full.losses)  # the loop's own batch losses, no second pass
    assert full.losses.shape == (100,)
    np.testing.assert_allclose(full.losses, full.problem.step_losses(full.states), rtol=1e-12)
    ckpt = fit(net(), nn.CrossEntropyLoss(), X, y, method="serial", keep=30, **kw)
    np.testing.assert_array_equal(ckpt.points, [0, 30, 60, 90, 100])
    np.testing.assert_array_equal(ckpt.states, full.states[ckpt.points])
    mg = fit(net(), nn.CrossEntropyLoss(), X, y, keep=30, levels=2, tol=1e-10, **kw)
    assert mg.states.shape[0] == 5 and np.abs(mg.states - full.states[mg.points]).max() < 1e-8
    with pytest.raises(OptionError, match="keep"):
        fit(net(), nn.CrossEntropyLoss(), X, y, method="serial", keep="some", **kw)
