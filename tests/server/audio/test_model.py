import numpy as np
import pytest
import torch

from server.audio.fast import FastWaveNet, StreamState
from server.audio.model import SILENCE, WaveNet, WaveNetConfig, valid_conv1d

CONFIG = WaveNetConfig(voices=3, mel_mean=-5.0, mel_std=3.0)


@pytest.fixture(scope="module")
def model() -> WaveNet:
    torch.manual_seed(0)
    return WaveNet(CONFIG).eval()


def features(model: WaveNet, samples: int, seed: int, voice: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    frames = samples // CONFIG.hop + 1 + 2 * CONFIG.cond_context
    mel = torch.randn(1, CONFIG.n_mels, frames, generator=g) * 3.0 - 5.0
    with torch.no_grad():
        return model.frame_features(mel, torch.tensor([voice]))  # (1, F, C)


def test_default_receptive_field() -> None:
    """Two stacks of dilations 1..512: 20 layers and 2,048 samples of context."""
    assert CONFIG.dilations == [2**i for i in range(10)] * 2
    assert CONFIG.receptive_field == 2048


@pytest.mark.parametrize("frames", [7, 17, 250])
def test_the_conditioning_stack_as_products_is_the_convolutions(model: WaveNet, frames: int) -> None:
    """frame_features computes its convolutions as matrix products (no kernel compiled per length): same numbers."""
    mel = torch.randn(2, CONFIG.n_mels, frames, generator=torch.Generator().manual_seed(frames)) * 3.0 - 5.0
    voices = torch.tensor([0, 1])
    with torch.no_grad():
        convolved = model.cond_net((mel - CONFIG.mel_mean) / CONFIG.mel_std).transpose(1, 2)
        expected = convolved + model.voice(voices)[:, None, :]
        torch.testing.assert_close(model.frame_features(mel, voices), expected, atol=1e-5, rtol=1e-5)
        conv = model.cond_net[0]
        torch.testing.assert_close(valid_conv1d(conv, mel), conv(mel), atol=1e-4, rtol=1e-5)


def test_forward_is_causal(model: WaveNet) -> None:
    """Changing the input at position t changes no logit before t."""
    feats = features(model, 600, seed=1)
    x = torch.randint(0, 256, (1, 600), generator=torch.Generator().manual_seed(2))
    y = x.clone()
    y[0, 300] = (x[0, 300] + 128) % 256
    with torch.no_grad():
        a, b = model(x, feats), model(y, feats)
    assert torch.equal(a[:, :300], b[:, :300])
    assert not torch.allclose(a[:, 300], b[:, 300])


def test_incremental_logits_equal_the_convolutional_forward(model: WaveNet) -> None:
    """Teacher forcing through the compiled ring-buffer step gives the full forward's logits within 1e-4,
    past the receptive field (every ring buffer wraps)."""
    samples = 2600
    feats = features(model, samples, seed=3)
    codes = torch.randint(0, 256, (1, samples), generator=torch.Generator().manual_seed(4))
    inputs = torch.cat([torch.full((1, 1), SILENCE), codes[:, :-1]], dim=1)
    with torch.no_grad():
        full = model(inputs, feats)[0].numpy()  # (T, 256)
    fast = FastWaveNet(model)
    state = fast.start(feats[0].numpy(), seed=0, temperature=1.0)
    got, logits = fast.generate(state, samples, forced=codes.numpy(), keep_logits=True)
    assert logits is not None
    assert np.array_equal(got[0], codes[0].numpy().astype(np.uint8))
    assert np.abs(logits[0] - full).max() < 1e-4


def test_chunks_continue_where_the_last_call_ended(model: WaveNet) -> None:
    """Three calls of 100 samples give the samples of one call of 300."""
    feats = features(model, 300, seed=5)[0].numpy()
    fast = FastWaveNet(model)
    whole, _ = fast.generate(fast.start(feats, seed=7, temperature=1.0), 300)
    state = fast.start(feats, seed=7, temperature=1.0)
    parts = [fast.generate(state, 100)[0] for _ in range(3)]
    assert np.array_equal(np.concatenate(parts, axis=1), whole)


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_same_samples_alone_or_batched(model: WaveNet, threads: int) -> None:
    """A seeded stream generates the same samples alone and beside other streams, in one thread or two."""
    feats = [features(model, 400, seed=10 + i, voice=i % 3)[0].numpy() for i in range(3)]
    fast = FastWaveNet(model, threads=threads)
    alone, _ = fast.generate(fast.start(feats[1], seed=42, temperature=0.9), 400)
    batch = StreamState.concat(
        [
            fast.start(feats[0], seed=1, temperature=1.0),
            fast.start(feats[1], seed=42, temperature=0.9),
            fast.start(feats[2], seed=3, temperature=0.0),
        ]
    )
    together, _ = fast.generate(batch, 400)
    assert np.array_equal(together[1], alone[0])
    assert not np.array_equal(together[0], together[1])


def test_temperature_zero_is_greedy(model: WaveNet) -> None:
    """Temperature 0 picks the likeliest code, whatever the seed."""
    feats = features(model, 200, seed=6)[0].numpy()
    fast = FastWaveNet(model)
    codes, logits = fast.generate(fast.start(feats, seed=1, temperature=0.0), 200, keep_logits=True)
    other, _ = fast.generate(fast.start(feats, seed=2, temperature=0.0), 200)
    assert logits is not None
    assert np.array_equal(codes[0], logits[0].argmax(axis=1))
    assert np.array_equal(codes, other)


def test_stepping_some_rows_leaves_the_others(model: WaveNet) -> None:
    """Rows not named in ``rows`` keep their state; the named ones advance as they would alone."""
    feats = [features(model, 300, seed=20 + i)[0].numpy() for i in range(3)]
    fast = FastWaveNet(model)
    alone, _ = fast.generate(fast.start(feats[2], seed=9, temperature=1.0), 200)
    state = StreamState.concat([fast.start(f, seed=9, temperature=1.0) for f in feats])
    first, _ = fast.generate(state, 100, rows=[0, 2])
    second, _ = fast.generate(state, 100, rows=[2])
    assert state.pos.tolist() == [100, 0, 200]
    assert np.array_equal(np.concatenate([first[1], second[0]]), alone[0])


def test_torch_step_logits_equal_the_convolutional_forward(model: WaveNet) -> None:
    """The batched PyTorch step (the GPU path) gives the full forward's logits within 1e-4 under teacher forcing."""
    from server.audio.torch_step import TorchWaveNetStep

    samples = 2100
    feats = [features(model, samples, seed=30 + i, voice=i)[0] for i in range(2)]
    codes = torch.randint(0, 256, (2, samples), generator=torch.Generator().manual_seed(31))
    inputs = torch.cat([torch.full((2, 1), SILENCE), codes[:, :-1]], dim=1)
    with torch.no_grad():
        full = torch.stack([model(inputs[i : i + 1], feats[i][None])[0] for i in range(2)])  # (2, T, 256)
    step = TorchWaveNetStep(model)
    streams = step.start(feats, seeds=[0, 1], temperatures=[1.0, 1.0])
    got = torch.stack([step.step(streams, forced=codes[:, t]) for t in range(samples)], dim=1)
    assert (got - full).abs().max().item() < 1e-4


def test_torch_step_samples_with_the_stream_uniforms(model: WaveNet) -> None:
    """The PyTorch path draws from the same counter-based source: greedy rows are the argmax, and a seed repeats."""
    from server.audio.torch_step import TorchWaveNetStep

    feats = [features(model, 200, seed=40)[0]] * 2
    step = TorchWaveNetStep(model)
    first = step.generate(step.start(feats, seeds=[5, 5], temperatures=[1.0, 0.0]), 100)
    again = step.generate(step.start(feats, seeds=[5, 6], temperatures=[1.0, 0.0]), 100)
    assert np.array_equal(first[0], again[0])
    assert np.array_equal(first[1], again[1])
