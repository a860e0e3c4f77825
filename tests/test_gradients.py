"""The hand-written numpy gradients agree with finite differences and with PyTorch autograd."""

import numpy as np
import pytest

from pintrain.training import MLP, model_problem

MODELS = [
    MLP((3, 4, 1), hidden="sigmoid", output="sigmoid", bias=False, loss="sse"),
    MLP((1, 8, 1), hidden="tanh", output="identity", bias=True, loss="mse"),
    MLP((2, 5, 3, 2), hidden="tanh", output="sigmoid", bias=True, loss="mse"),
]


def data(model, rng, B=3, M=6):
    W = rng.normal(size=(B, model.n_params))
    X = rng.normal(size=(B, M, model.sizes[0]))
    Y = rng.normal(size=(B, M, model.sizes[-1]))
    return W, X, Y


@pytest.mark.parametrize("model", MODELS, ids=lambda m: "-".join(map(str, m.sizes)))
def test_gradient_matches_finite_differences(model):
    rng = np.random.default_rng(0)
    W, X, Y = data(model, rng)
    scale = model.loss_scale(X.shape[1])
    _, g = model.loss_and_grad(W, X, Y, scale)
    h = 1e-6
    fd = np.empty_like(W)
    for p in range(W.shape[1]):
        e = np.zeros(W.shape[1])
        e[p] = h
        lp, _ = model.loss_and_grad(W + e, X, Y, scale)
        lm, _ = model.loss_and_grad(W - e, X, Y, scale)
        fd[:, p] = (lp - lm) / (2 * h)
    np.testing.assert_allclose(g, fd, atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: "-".join(map(str, m.sizes)))
def test_jacobian_and_gauss_newton_match_finite_differences(model):
    rng = np.random.default_rng(1)
    W, X, _ = data(model, rng, B=2, M=4)
    h = 1e-6
    B, M, n_out, P = W.shape[0], X.shape[1], model.sizes[-1], W.shape[1]
    J = np.empty((B, M * n_out, P))
    for p in range(P):
        e = np.zeros(P)
        e[p] = h
        J[:, :, p] = ((model.predict(W + e, X) - model.predict(W - e, X)) / (2 * h)).reshape(B, -1)
    scale = 0.25
    H = model.gauss_newton(W, X, scale)
    np.testing.assert_allclose(H, scale * np.matmul(J.transpose(0, 2, 1), J), atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: "-".join(map(str, m.sizes)))
def test_gradient_matches_torch_autograd(model):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    W, X, Y = data(model, rng, B=2)
    scale = model.loss_scale(X.shape[1])
    loss, g = model.loss_and_grad(W, X, Y, scale)
    acts = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "identity": lambda z: z}
    for b in range(W.shape[0]):
        w = torch.tensor(W[b], requires_grad=True)
        a = torch.tensor(X[b])
        pos = 0
        for n, (o, i) in enumerate(model.layers):
            mat = w[pos : pos + o * i].reshape(o, i)
            pos += o * i
            z = a @ mat.T
            if model.bias:
                z = z + w[pos : pos + o]
                pos += o
            a = acts[model.output if n == len(model.layers) - 1 else model.hidden](z)
        t_loss = 0.5 * scale * ((a - torch.tensor(Y[b])) ** 2).sum()
        t_loss.backward()
        np.testing.assert_allclose(loss[b], t_loss.item(), rtol=1e-12)
        np.testing.assert_allclose(g[b], w.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["xor", "sine"])
def test_fine_step_is_one_sgd_step_on_its_batch(name):
    p = model_problem(name, steps=50)
    w = p.initial()
    for k in (0, 7, 49):
        idx = p.schedule.batch(k)
        _, g = p.model.net.loss_and_grad(
            w[None], p.model.X[idx][None], p.model.Y[idx][None], p.model.net.loss_scale(len(idx))
        )
        np.testing.assert_allclose(p.step(w, k, 1), w - p.lr * g[0], rtol=1e-14)
    # step_many over independent starts equals single steps
    U = np.stack([w, 0.5 * w, -w])
    ks = np.array([0, 3, 10])
    many = p.step_many(U, ks, 1)
    for i in range(3):
        np.testing.assert_allclose(many[i], p.step(U[i], int(ks[i]), 1), rtol=1e-14)
