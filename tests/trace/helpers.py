import torch

from rmt_lab.model import RecurrentWrapper, RMTConfig


def tiny(name="tiny-bert", **overrides):
    config = dict(num_mem_tokens=4, segment_size=16, num_classes=6)
    config.update(overrides)
    return RecurrentWrapper.from_backbone(name, RMTConfig(**config), dropout=0.0).eval()


def tokens(batch, length, seed=0):
    return torch.randint(1000, 20000, (batch, length), generator=torch.Generator().manual_seed(seed))


def padded_batch(seed=0):
    """Two samples of 40 and 27 tokens (3 segments of 16): padding inside segments and an empty last segment."""
    ids = tokens(2, 40, seed)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 27:] = False
    return ids, mask


FACTS = [[3, 4, 5, 20], [17, 18]]  # content positions, for the padded batch


def force_attention_onto(model, token_id: int, strength: float = 20.0) -> None:
    """Make every query of layer 0 of a tiny-bert attend to `token_id`, whatever its position.

    The token's embedding gets a huge component along one hidden dimension, so after the embedding
    LayerNorm that dimension is ~sqrt(d) there and O(1) elsewhere; each head's first key channel reads
    that dimension and its first query channel is a constant: score = strength * x[dim] * scale.
    """
    hf = model.cell.model
    dim = 5
    attn = hf.encoder.layer[0].attention.self
    head = attn.attention_head_size
    with torch.no_grad():
        hf.embeddings.word_embeddings.weight[token_id] = 0
        hf.embeddings.word_embeddings.weight[token_id, dim] = 50.0
        attn.query.weight.zero_()
        attn.query.bias.zero_()
        attn.key.weight.zero_()
        attn.key.bias.zero_()
        for h in range(attn.num_attention_heads):
            attn.query.bias[h * head] = strength
            attn.key.weight[h * head, dim] = 1.0


def train_memorize(n_segments=3, segment_size=16, num_mem_tokens=2, batch=32, lr=3e-3, max_steps=300, seed=0):
    """A tiny-bert RMT trained on the report's memorize task until it solves it (about 120 steps, a few
    seconds on one core). Returns (model, generator, steps taken)."""
    from rmt_lab.tasks import TaskConfig, TaskGenerator

    torch.manual_seed(seed)
    gen = TaskGenerator(TaskConfig(task="memorize", segment_size=segment_size, length=n_segments))
    train = [gen.sample("train", i) for i in range(1024)]
    x = torch.stack([s.tokens() for s in train])  # (1024, n_segments * segment_size)
    y = torch.tensor([s.label for s in train])
    model = tiny(num_mem_tokens=num_mem_tokens, segment_size=segment_size).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=True)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(max_steps):
        idx = torch.randint(0, len(train), (batch,), generator=g)
        loss = model(x[idx], labels=y[idx]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if len(losses) >= 5 and sum(losses[-5:]) / 5 < 0.05:
            break
    return model.eval(), gen, step + 1
