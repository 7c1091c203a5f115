"""ConceptEncoderModel's forward against an independently written copy of the release's layers.

The reference below is written from the paper's release, not from concept_encoder.py: a trunk of
four Conv(k4, s2, p1) + BatchNorm layers (64 -> 32 -> 16 -> 8 -> 4) with a ReLU after the 1st,
2nd and 4th only, two residual blocks `x + [ReLU, Conv3x3, BN, ReLU, Conv1x1](x)` with BN + ReLU
between them, flatten, Linear -> N scalars, and each scalar through its own MLP
Linear(1, 64) - ELU - Linear(64, 128) - ELU - Linear(128, d). The weights are copied across and
the outputs compared, in training mode (batch statistics) and in eval mode (running statistics).
"""
import torch
import torch.nn.functional as F
from torch import nn

from encdiff_pipeline import ConceptEncoderModel

N, D, WIDTH = 5, 6, 16


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv3, self.bn, self.conv1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x + self.conv1(F.relu(self.bn(self.conv3(F.relu(x)))))


class ReleaseEncoder(nn.Module):
    def __init__(self, c_in=3, width=WIDTH, n=N, d=D):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(c_in if i == 0 else width, width, 4, 2, 1) for i in range(4)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(width) for _ in range(4)])
        self.res1, self.bn_mid, self.res2 = Residual(width), nn.BatchNorm2d(width), Residual(width)
        self.head = nn.Linear(width * 4 * 4, n)
        self.mlps = nn.ModuleList([nn.ModuleList([nn.Linear(1, 64), nn.Linear(64, 128), nn.Linear(128, d)]) for _ in range(n)])

    def forward(self, x):
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            x = bn(conv(x))
            if i != 2:  # no ReLU after the 3rd
                x = F.relu(x)
        x = self.res2(F.relu(self.bn_mid(self.res1(x))))
        concepts = self.head(x.flatten(1))
        tokens = []
        for k, (l1, l2, l3) in enumerate(self.mlps):
            tokens.append(l3(F.elu(l2(F.elu(l1(concepts[:, k : k + 1]))))))
        return concepts, torch.stack(tokens, dim=1)


def copy_weights(encoder: ConceptEncoderModel, reference: ReleaseEncoder) -> None:
    """Copy by the layers' roles (not by parameter order), so a reordered trunk shows up as a mismatch."""
    trunk = [m for m in encoder.trunk]
    convs = [m for m in trunk if isinstance(m, nn.Conv2d)]
    bns = [m for m in trunk if isinstance(m, nn.BatchNorm2d)]
    blocks = [m for m in trunk if not isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU))]
    assert len(convs) == 4 and len(bns) == 5 and len(blocks) == 2
    pairs = list(zip(convs, reference.convs)) + list(zip(bns[:4], reference.bns)) + [(bns[4], reference.bn_mid)]
    for block, ref in zip(blocks, (reference.res1, reference.res2)):
        layers = [m for m in block.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
        pairs += list(zip(layers, (ref.conv3, ref.bn, ref.conv1)))
    pairs.append((encoder.concept_head, reference.head))
    with torch.no_grad():
        for ours, theirs in pairs:
            theirs.load_state_dict(ours.state_dict())
        mlp = encoder.token_mlp
        for k, layers in enumerate(reference.mlps):
            for j, linear in enumerate(layers):
                linear.weight.copy_(getattr(mlp, f"weight_{j}")[k].T)
                linear.bias.copy_(getattr(mlp, f"bias_{j}")[k])


def test_forward_equals_the_release_layers():
    torch.manual_seed(0)
    encoder = ConceptEncoderModel(sample_size=64, num_concepts=N, token_dim=D, width=WIDTH)
    with torch.no_grad():  # non-trivial BatchNorm parameters and running statistics
        for m in encoder.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    reference = ReleaseEncoder()
    copy_weights(encoder, reference)
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1

    encoder.eval(), reference.eval()
    with torch.no_grad():
        out = encoder(images)
        concepts, tokens = reference(images)
    assert out.concepts.shape == (4, N) and out.tokens.shape == (4, N, D)
    torch.testing.assert_close(out.concepts, concepts, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.tokens, tokens, rtol=1e-5, atol=1e-5)
    assert concepts.std() > 1e-3 and tokens.std() > 1e-3  # not a degenerate (constant) output

    encoder.train(), reference.train()
    with torch.no_grad():
        out = encoder(images)
        concepts, tokens = reference(images)
    torch.testing.assert_close(out.concepts, concepts, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.tokens, tokens, rtol=1e-5, atol=1e-5)
    # both updated their running statistics the same way
    ours = [m.running_mean for m in encoder.trunk.modules() if isinstance(m, nn.BatchNorm2d)]
    theirs = [m.running_mean for m in reference.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(ours) == len(theirs) == 7
    torch.testing.assert_close(sorted(t.sum().item() for t in ours), sorted(t.sum().item() for t in theirs),
                               rtol=1e-5, atol=1e-6)
