"""What makes DANN DANN and ADDA ADDA."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from tamebias.api import build_run
from tamebias.compose import load_config
from tamebias.data.domain import DomainStreams
from tamebias.lineage import initialize
from tamebias.models.layers import reverse_gradient
from tamebias.training.trainer import Context


def setup(name, overrides, extra=()):
    config = load_config(None, [f"method.name={name}", *overrides, *extra])
    data, method, device = build_run(config)
    streams = DomainStreams(data, 16, 0, device, True, False)
    return method, streams, device


def context_for(stage, device):
    return Context.for_stage(stage, device)


def test_gradient_reversal_flips_and_scales_the_gradient():
    inputs = torch.randn(4, 3, requires_grad=True)
    (reverse_gradient(inputs, 0.3) * torch.arange(3.0)).sum().backward()
    assert torch.allclose(inputs.grad, -0.3 * torch.arange(3.0).expand(4, 3))


def test_dann_coefficient_ramps_from_zero_to_the_domain_weight(tiny_overrides):
    method, _, _ = setup("dann", tiny_overrides, ["method.domain_weight=0.5"])
    assert method.coefficient(0.0) == 0.0
    assert method.coefficient(0.5) == pytest.approx(0.5 * (2 / (1 + math.exp(-5)) - 1))
    assert method.coefficient(1.0) == pytest.approx(0.5 * (2 / (1 + math.exp(-10)) - 1))


def test_dann_domain_loss_reaches_the_encoder_reversed_and_ramped(tiny_overrides):
    method, streams, _ = setup("dann", tiny_overrides)
    method.eval()  # no dropout: the two passes must see the same network
    batch = streams.batch(0)
    images = torch.cat([batch.source.images, batch.target.images])
    labels = torch.cat([torch.ones(16), torch.zeros(16)])
    encoder = list(method.classifier.backbone.parameters())

    def encoder_gradient(coefficient):
        features = method.classifier.features(images)
        if coefficient is not None:
            features = reverse_gradient(features, coefficient)
        loss = F.binary_cross_entropy_with_logits(method.critic(features), labels)
        return torch.autograd.grad(loss, encoder)

    plain = encoder_gradient(None)
    progress = 0.3
    coefficient = method.coefficient(progress)
    reversed_ = encoder_gradient(coefficient)
    for g_plain, g_reversed in zip(plain, reversed_, strict=True):
        assert torch.allclose(g_reversed, -coefficient * g_plain, atol=1e-6)
    # the critic itself gets the ordinary (not reversed) gradient
    features = method.classifier.features(images).detach()
    loss = F.binary_cross_entropy_with_logits(
        method.critic(reverse_gradient(features, coefficient)), labels)
    critic_grad = torch.autograd.grad(loss, list(method.critic.parameters()))
    loss = F.binary_cross_entropy_with_logits(method.critic(features), labels)
    assert all(torch.equal(a, b) for a, b in zip(
        critic_grad, torch.autograd.grad(loss, list(method.critic.parameters())), strict=True))


def test_one_dann_step_equals_a_hand_computed_sgd_step(tiny_overrides):
    method, streams, device = setup("dann", tiny_overrides, [
        "method.optim.name=sgd", "method.optim.schedule=inverse", "method.optim.momentum=0",
        "method.optim.weight_decay=0", "method.optim.lr=0.1"])
    method.eval()  # deterministic (dropout off) so the reference sees the same function
    reference = copy.deepcopy(method)
    stage = method.stages()[0]
    context = context_for(stage, device)
    context.progress = 0.4
    batch = streams.batch(0)
    stage.step(batch, context)

    # by hand: class loss on source, domain loss with the encoder gradient reversed
    coefficient = 0.1 * 0 + (2 / (1 + math.exp(-4)) - 1)
    features = reference.classifier.features(
        torch.cat([batch.source.images, batch.target.images]))
    class_loss = F.cross_entropy(reference.classifier.head(features[:16]), batch.source.labels)
    labels = torch.cat([torch.ones(16), torch.zeros(16)])
    critic_parameters = list(reference.critic.parameters())
    encoder_parameters = list(reference.classifier.backbone.parameters())
    head_parameters = list(reference.classifier.classifier_head.parameters())
    domain_loss = F.binary_cross_entropy_with_logits(reference.critic(features), labels)
    class_grads = torch.autograd.grad(class_loss, encoder_parameters + head_parameters,
                                      retain_graph=True)
    domain_grads = torch.autograd.grad(domain_loss, encoder_parameters + critic_parameters)
    with torch.no_grad():
        for index, parameter in enumerate(encoder_parameters):
            parameter -= 0.1 * (class_grads[index] - coefficient * domain_grads[index])
        for index, parameter in enumerate(head_parameters):
            parameter -= 0.1 * class_grads[len(encoder_parameters) + index]
        for index, parameter in enumerate(critic_parameters):
            parameter -= 0.1 * domain_grads[len(encoder_parameters) + index]
    for (name, got), (_, want) in zip(method.named_parameters(), reference.named_parameters(),
                                      strict=True):
        assert torch.allclose(got, want, atol=1e-6), name


def test_adda_adapt_stage_moves_only_the_target_encoder_and_critic(tiny_overrides):
    method, streams, device = setup("adda", tiny_overrides)
    source, adapt = method.stages()
    assert (source.name, adapt.name) == ("source", "adapt")
    source_context = context_for(source, device)
    method.train()
    for step in range(3):
        source.step(streams.batch(step), source_context)
    adapt.on_start()
    frozen = copy.deepcopy(method.source_encoder.state_dict())
    head = copy.deepcopy(method.classifier.classifier_head.state_dict())
    encoder = copy.deepcopy(method.classifier.backbone.state_dict())
    critic = copy.deepcopy(method.critic.state_dict())
    assert all(torch.equal(frozen[f"backbone.{k}"], v) for k, v in encoder.items()), \
        "the target encoder starts from the source encoder"
    context = context_for(adapt, device)
    method.train()
    assert not method.source_encoder.training, "a frozen module stays in eval mode"
    for step in range(3):
        adapt.step(streams.batch(step), context)
    assert all(torch.equal(v, method.source_encoder.state_dict()[k]) for k, v in frozen.items())
    assert all(torch.equal(v, method.classifier.classifier_head.state_dict()[k])
               for k, v in head.items())
    assert any(not torch.equal(v, method.classifier.backbone.state_dict()[k])
               for k, v in encoder.items())
    assert any(not torch.equal(v, method.critic.state_dict()[k]) for k, v in critic.items())
    assert not any(p.requires_grad for p in method.source_encoder.parameters())


def test_adda_encoder_loss_uses_inverted_labels(tiny_overrides):
    """The encoder's loss is low exactly when the critic calls target features 'source'."""
    method, streams, device = setup("adda", tiny_overrides)
    adapt = method.stages()[1]
    adapt.on_start()
    with torch.no_grad():
        method.critic.network[-1].bias.fill_(20.0)  # critic says "source" for everything
    metrics = adapt.step(streams.batch(0), context_for(adapt, device))
    assert float(metrics["encoder_loss"]) < 1e-3


def test_adda_reuses_a_trained_source_model(tiny_overrides, tmp_path):
    import tamebias

    source = tamebias.fit(None, tiny_overrides, run_dir=tmp_path / "source")
    method, _, _ = setup("adda", tiny_overrides, [f"init.weights={source.run_dir}:classifier"])
    stages = method.stages()
    assert [s.name for s in stages] == ["adapt"]
    initialize(method, f"{source.run_dir}:classifier")
    stages[0].on_start()
    from tamebias.training import checkpoint

    saved = checkpoint.load(tmp_path / "source" / "best.pt")["method"]
    assert all(torch.equal(saved[f"classifier.{k}"], v)
               for k, v in method.source_encoder.state_dict().items())


def test_adda_target_features_match_the_frozen_encoder_when_adaptation_starts(tiny_overrides):
    """Dropout is off on the target side during adaptation: at the start the two encoders
    give identical features, so the critic cannot win on dropout noise alone."""
    from tamebias.models.layers import dropout_off

    method, streams, _ = setup("adda", tiny_overrides)
    method.stages()[1].on_start()
    method.train()
    images = streams.batch(0).target.images
    with dropout_off(method.classifier):
        target = method.classifier.features(images)
    assert method.classifier.training  # BatchNorm and friends keep their mode
    assert torch.equal(target, method.source_encoder.features(images))
    assert not torch.equal(method.classifier.features(images), target)  # dropout is back on
