"""Shared pieces of the GQA study: the model shape, data batches, and the
perplexity loop (the one of transformers' perplexity guide, as gqa-eval and
tests/reference/eval_perplexity.py use it)."""
import math
import os

import numpy as np
import torch
from transformers import LlamaConfig

CONTEXT = 128


def model_config(vocab):
    return LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=768,
                       num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8,
                       max_position_embeddings=CONTEXT, rms_norm_eps=1e-5, rope_theta=10000.0,
                       tie_word_embeddings=True, bos_token_id=0, eos_token_id=1,
                       hidden_act="silu", initializer_range=0.02, torch_dtype="float32")


def load_ids(data, name):
    return np.fromfile(os.path.join(data, name), dtype=np.int16).astype(np.int64)


class Batches:
    """Random crops of CONTEXT+1 tokens from the training stream, seeded."""

    def __init__(self, ids, batch, seed):
        self.ids = torch.from_numpy(ids)
        self.batch = batch
        self.gen = torch.Generator().manual_seed(seed)

    def next(self):
        starts = torch.randint(0, len(self.ids) - CONTEXT - 1, (self.batch,), generator=self.gen)
        x = torch.stack([self.ids[s:s + CONTEXT + 1] for s in starts.tolist()])
        return x[:, :-1], x[:, 1:]


@torch.no_grad()
def perplexity(model, ids, context=CONTEXT, stride=None, batch=32):
    """Mean NLL over the tokens transformers' sliding-window loop scores.
    With stride == context the windows are disjoint and are run in batches;
    the scored tokens are the same as in the one-window-at-a-time loop."""
    stride = stride or context
    assert stride == context, "only disjoint windows are batched here"
    model.eval()
    n = len(ids)
    t = torch.as_tensor(ids)
    nll, count, windows = 0.0, 0, 0
    starts = list(range(0, n, stride))
    starts = [s for s in starts if s + 1 < n or s == 0]
    full = [s for s in starts if s + context <= n]
    part = [s for s in starts if s + context > n]
    for i in range(0, len(full), batch):
        xs = torch.stack([t[s:s + context] for s in full[i:i + batch]])
        logits = model(xs).logits.double()
        lp = torch.log_softmax(logits[:, :-1], dim=-1)
        nll -= lp.gather(-1, xs[:, 1:, None]).sum().item()
        count += xs.shape[0] * (context - 1)
        windows += xs.shape[0]
    for s in part:
        xs = t[s:n][None]
        if xs.shape[1] < 2:
            windows += 1
            continue
        logits = model(xs).logits.double()
        lp = torch.log_softmax(logits[:, :-1], dim=-1)
        nll -= lp.gather(-1, xs[:, 1:, None]).sum().item()
        count += xs.shape[1] - 1
        windows += 1
    model.train()
    mean = nll / count
    return {"mean_nll": mean, "perplexity": math.exp(mean), "tokens": count, "windows": windows}
