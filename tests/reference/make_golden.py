#!/usr/bin/env python3
"""Create the golden fixtures in tests/fixtures/golden/ with Hugging Face transformers.

Run by hand (never in CI), from the repository root:

    pip install torch transformers safetensors
    python3 tests/reference/make_golden.py

For every case it builds a tiny decoder-only model with transformers' own
classes (LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM), eager
attention, re-initialises every parameter from a seeded torch.Generator (HF's
default init gives nearly uniform logits and fragile greedy ties), saves it
with model.save_pretrained() (safetensors), reloads it from disk and writes
tests/fixtures/golden/<case>/expected.json:

    case, description, transformers_version, torch_version, seed,
    prompts            three prompts of token ids
    last_logits        full-vocab float32 logits at the last prompt position
    greedy_tokens      16 greedy tokens after each prompt (full re-run each
                       step, no KV cache, no stop at EOS)
    min_greedy_margin  smallest top1-top2 logit gap over all greedy steps

Floats are written as the shortest decimal that round-trips to the same
float32 value (parse them as float32 to get the exact values).
Everything is deterministic: fixed seeds, one CPU thread.
"""

import inspect
import json
import math
import os
import shutil
import sys

import numpy as np
import torch
import transformers
from torch import nn
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "golden")

N_GREEDY = 16
MIN_MARGIN = 1e-3
VOCAB = 300

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=172,
    num_hidden_layers=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
)


def rope(theta, **scaling):
    p = {"rope_type": "default", "rope_theta": float(theta)}
    p.update(scaling)
    return p


def cfg(**kw):
    c = dict(COMMON)
    c.setdefault("rope_parameters", rope(10000.0))
    c.update(kw)
    return c


LLAMA3_ROPE = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                   high_freq_factor=4.0, original_max_position_embeddings=64)

CASES = [
    dict(name="llama_gqa", arch="llama", seed=1000,
         config=cfg(num_attention_heads=8, num_key_value_heads=2),
         description="Llama, 8 query heads, 2 KV heads (GQA-2), head_dim 8, f32."),
    dict(name="llama_mqa", arch="llama", seed=2000,
         config=cfg(num_attention_heads=8, num_key_value_heads=1),
         description="Llama, 8 query heads, 1 KV head (MQA), head_dim 8, f32."),
    dict(name="llama_mha", arch="llama", seed=3000,
         config=cfg(num_attention_heads=8, num_key_value_heads=8),
         description="Llama, 8 query heads, 8 KV heads (MHA), head_dim 8, f32."),
    dict(name="qwen2_bias", arch="qwen2", seed=4000,
         config=cfg(num_attention_heads=8, num_key_value_heads=2, use_sliding_window=False,
                    rope_parameters=rope(1000000.0), rms_norm_eps=1e-6),
         description="Qwen2: q/k/v projections have biases (o_proj none), 8/2 heads, "
                     "rope_theta 1e6, rms_norm_eps 1e-6, no sliding window, f32."),
    dict(name="llama_head_dim", arch="llama", seed=5000,
         config=cfg(num_attention_heads=4, num_key_value_heads=2, head_dim=32),
         description="Llama, hidden 64, 4 query heads, 2 KV heads, explicit head_dim 32 "
                     "(heads*head_dim = 128 != hidden 64), f32."),
    dict(name="llama_tied", arch="llama", seed=6000,
         config=cfg(num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=True),
         description="Llama 8/2 heads, tie_word_embeddings true: the checkpoint has no "
                     "lm_head.weight, the output projection is model.embed_tokens.weight, f32. "
                     "(The shared matrix is initialised with std 1/sqrt(64), as an lm_head, not std 1.)"),
    dict(name="llama_bf16", arch="llama", seed=7000, bf16=True,
         config=cfg(num_attention_heads=8, num_key_value_heads=2),
         description="Llama 8/2 heads, weights stored as BF16. Reference outputs (last_logits, "
                     "greedy_tokens) are float32 arithmetic on the bf16-rounded weights (checkpoint "
                     "reloaded in bf16, then model.float()). greedy_tokens_bf16_compute: greedy "
                     "tokens with the model run natively in bf16, for information only."),
    dict(name="llama3_rope", arch="llama", seed=8000,
         config=cfg(num_attention_heads=4, num_key_value_heads=2,
                    rope_parameters=rope(500000.0, **LLAMA3_ROPE)),
         description="Llama, hidden 64, 4 query heads, 2 KV heads, head_dim 16, rope_theta 5e5 "
                     "with llama3 rope scaling (factor 8, low_freq_factor 1, high_freq_factor 4, "
                     "original_max_position_embeddings 64). The 8 inverse frequencies cover all "
                     "three llama3 branches: wavelength < 16 kept, 16..64 smoothly interpolated, "
                     "> 64 divided by 8 (checked by make_golden.py), f32."),
    dict(name="llama_linear_rope", arch="llama", seed=9000,
         config=cfg(num_attention_heads=8, num_key_value_heads=2,
                    rope_parameters=rope(10000.0, rope_type="linear", factor=4.0)),
         description="Llama 8/2 heads, linear rope scaling factor 4 (inverse frequencies / 4, "
                     "i.e. positions / 4; checked by make_golden.py), f32."),
    dict(name="mistral_sliding", arch="mistral", seed=10000, prompt_lens=(1, 11, 23),
         config=cfg(num_attention_heads=8, num_key_value_heads=2, sliding_window=8),
         description=None),  # filled in by check_sliding_window()
    dict(name="llama_sharded", arch="llama", seed=11000, max_shard_size="100KB",
         config=cfg(num_attention_heads=8, num_key_value_heads=2),
         description="Same shape as llama_gqa (8/2 heads, f32, different weights), saved with "
                     "save_pretrained(max_shard_size='100KB'): several "
                     "model-0000N-of-0000M.safetensors files plus model.safetensors.index.json."),
    dict(name="llama_attn_bias", arch="llama", seed=12000,
         config=cfg(num_attention_heads=8, num_key_value_heads=2, attention_bias=True, mlp_bias=True),
         description=None),  # depends on mlp_bias support, filled in below
]

ARCH = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
}


def config_accepts(config_cls, name):
    return name in inspect.signature(config_cls.__init__).parameters


def build_model(case, seed, **overrides):
    config_cls, model_cls = ARCH[case["arch"]]
    kw = dict(case["config"])
    kw.update(overrides)
    config = config_cls(**kw, attn_implementation="eager")
    torch.manual_seed(seed)
    model = model_cls(config)
    reinit(model, seed)
    model.eval()
    return model


def reinit(model, seed):
    """Re-initialise every parameter from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    done = set()

    def fill(p, values):
        if id(p) in done:  # tied weights: first owner (the embedding) wins
            return
        with torch.no_grad():
            p.copy_(values.to(p.dtype))
        done.add(id(p))

    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            fill(mod.weight, torch.randn(mod.weight.shape, generator=g) / math.sqrt(mod.in_features))
            if mod.bias is not None:
                fill(mod.bias, 0.1 * torch.randn(mod.bias.shape, generator=g))
        elif isinstance(mod, nn.Embedding):
            std = 1.0
            if model.config.tie_word_embeddings:
                # The matrix is also the lm_head: give it the lm_head's std 1/sqrt(in_features).
                # With N(0, 1) the residual stream is dominated by the input token's own
                # embedding and greedy decoding just repeats the last token forever.
                std = 1.0 / math.sqrt(mod.embedding_dim)
            fill(mod.weight, std * torch.randn(mod.weight.shape, generator=g))
        elif type(mod).__name__.endswith("RMSNorm"):
            fill(mod.weight, 1.0 + 0.1 * torch.randn(mod.weight.shape, generator=g))
    # Every parameter must have been filled exactly once (tied ones once in all).
    missing = [n for n, p in model.named_parameters() if id(p) not in done]
    assert not missing, f"parameters not re-initialised: {missing}"


def make_prompts(seed, lens):
    g = torch.Generator().manual_seed(seed + 7777)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lens]


@torch.no_grad()
def last_logits(model, ids):
    out = model(input_ids=torch.tensor([ids]), use_cache=False)
    return out.logits[0, -1].float()


@torch.no_grad()
def greedy(model, prompt, n=N_GREEDY):
    seq = list(prompt)
    toks, margins = [], []
    for _ in range(n):
        lg = last_logits(model, seq)
        top2 = torch.topk(lg, 2).values
        margins.append(float(top2[0] - top2[1]))
        t = int(torch.argmax(lg))
        toks.append(t)
        seq.append(t)
    return toks, min(margins)


def f32(x):
    """Shortest decimal that round-trips to the float32 value x."""
    s = str(np.float32(x))
    v = float(s)
    assert np.float32(v) == np.float32(x)
    return v


def rope_module(model):
    return model.model.rotary_emb


def unscaled_inv_freq(config):
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    theta = config.rope_parameters["rope_theta"]
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def check_rope(case, model):
    """Checks on the rotary inverse frequencies of the model as transformers built it."""
    inv = rope_module(model).inv_freq.float()
    base = unscaled_inv_freq(model.config)
    rp = model.config.rope_parameters
    if rp["rope_type"] == "default":
        assert torch.allclose(inv, base, rtol=1e-6, atol=0), (inv, base)
    elif rp["rope_type"] == "linear":
        assert torch.allclose(inv, base / rp["factor"], rtol=1e-6, atol=0), (inv, base)
    elif rp["rope_type"] == "llama3":
        assert not torch.allclose(inv, base), "llama3 scaling changed nothing"
        wavelen = 2 * math.pi / base
        hi = rp["original_max_position_embeddings"] / rp["high_freq_factor"]
        lo = rp["original_max_position_embeddings"] / rp["low_freq_factor"]
        kept = (wavelen < hi)
        scaled = (wavelen > lo)
        medium = ~kept & ~scaled
        assert kept.any() and scaled.any() and medium.any(), (wavelen, hi, lo)
        assert torch.allclose(inv[kept], base[kept], rtol=1e-6, atol=0)
        assert torch.allclose(inv[scaled], base[scaled] / rp["factor"], rtol=1e-6, atol=0)
        m = medium
        assert ((inv[m] < base[m]) & (inv[m] > base[m] / rp["factor"])).all()
        print(f"    llama3 inv_freq: unscaled {base.tolist()}\n"
              f"                     scaled   {inv.tolist()}\n"
              f"                     kept {kept.tolist()} medium {medium.tolist()} "
              f"scaled {scaled.tolist()}")
    else:
        raise AssertionError(rp)
    assert getattr(rope_module(model), "attention_scaling", 1.0) == 1.0


def check_sliding_window(case, model, prompts):
    """Show that the installed transformers applies Mistral's sliding window with eager
    attention, and pin down its semantics."""
    W = model.config.sliding_window
    L = model.config.num_hidden_layers
    assert model.config._attn_implementation == "eager"
    full = build_model(case, case["seed"], sliding_window=None)
    full.load_state_dict(model.state_dict())
    differ = []
    for p in prompts:
        a, b = last_logits(model, p), last_logits(full, p)
        if len(p) <= W:
            assert torch.equal(a, b), "window changed a prompt shorter than the window"
        else:
            d = float((a - b).abs().max())
            assert d > 1e-3, f"sliding window has no effect on a {len(p)}-token prompt"
            differ.append((len(p), d))
    # Receptive field: with W keys per query (kv > q - W, self included) and L layers the
    # last position sees back (W-1)*L positions. Changing the token just outside must not
    # change the last logits, changing the token just inside must.
    p = max(prompts, key=len)
    last = len(p) - 1
    reach = last - (W - 1) * L
    assert reach >= 1
    ref = last_logits(model, p)

    def poke(pos):
        q = list(p)
        q[pos] = (q[pos] + 1) % VOCAB
        return last_logits(model, q)

    assert torch.equal(poke(reach - 1), ref), "token outside the window changed the logits"
    assert not torch.equal(poke(reach), ref), "token inside the window did not change the logits"
    return (
        f"Mistral, 8/2 heads, sliding_window {W}, f32. Checked with transformers "
        f"{transformers.__version__}, eager attention: last logits differ from the same weights "
        f"with sliding_window None for prompts longer than the window (max abs diff "
        + ", ".join(f"{d:.3g} at length {n}" for n, d in differ)
        + f") and are identical for the prompt shorter than the window. Semantics: query "
        f"position q attends to key positions k with q-{W} < k <= q, i.e. {W} keys including "
        f"itself (verified: with {L} layers, changing the token at position {reach - 1} of the "
        f"{len(p)}-token prompt leaves the last logits bit-identical, changing position "
        f"{reach} does not). Greedy continuations (16 tokens) run well past the window."
    )


def save(model, case, d):
    if os.path.isdir(d):
        shutil.rmtree(d)
    kw = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        kw["safe_serialization"] = True  # transformers 4.x; 5.x writes only safetensors
    if "max_shard_size" in case:
        kw["max_shard_size"] = case["max_shard_size"]
    model.save_pretrained(d, **kw)
    gc = os.path.join(d, "generation_config.json")
    if os.path.exists(gc):
        os.remove(gc)


def saved_tensors(d):
    from safetensors import safe_open
    files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
    out = {}
    for f in files:
        with safe_open(os.path.join(d, f), framework="pt") as st:
            for k in st.keys():
                out[k] = (f, st.get_tensor(k))
    return files, out


def check_checkpoint(case, d, model):
    files, tensors = saved_tensors(d)
    if "max_shard_size" in case:
        assert len(files) >= 2, files
        idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))
        assert set(idx["weight_map"]) == set(tensors)
        assert all(idx["weight_map"][k] == f for k, (f, _) in tensors.items())
    else:
        assert files == ["model.safetensors"], files
    if model.config.tie_word_embeddings:
        assert "lm_head.weight" not in tensors, "tied checkpoint stores lm_head.weight"
    else:
        assert "lm_head.weight" in tensors
    want = torch.bfloat16 if case.get("bf16") else torch.float32
    assert all(t.dtype == want for _, t in tensors.values())
    return files, tensors


def run_case(case, versions):
    name = case["name"]
    d = os.path.join(OUT, name)
    config_cls, model_cls = ARCH[case["arch"]]
    if name == "llama_attn_bias" and not config_accepts(config_cls, "mlp_bias"):
        case["config"].pop("mlp_bias")
    lens = case.get("prompt_lens", (1, 7, 19))

    # Pick the first seed from the case's base seed on whose greedy runs no top1-top2 gap
    # is below MIN_MARGIN.
    for seed in range(case["seed"], case["seed"] + 100):
        model = build_model(case, seed)
        prompts = make_prompts(seed, lens)
        ref = model
        if case.get("bf16"):
            ref = build_model(case, seed)
            with torch.no_grad():
                for prm in ref.parameters():
                    prm.copy_(prm.to(torch.bfloat16).float())
        margin = min(greedy(ref, p)[1] for p in prompts)
        if margin >= MIN_MARGIN:
            break
        print(f"    seed {seed}: min greedy margin {margin:.3g} too small, next seed")
    else:
        raise RuntimeError(f"{name}: no seed with margin >= {MIN_MARGIN}")

    check_rope(case, model)
    if case["arch"] == "mistral":
        case["description"] = check_sliding_window(case, model, prompts)
    if name == "llama_attn_bias":
        a, m = model.model.layers[0].self_attn, model.model.layers[0].mlp
        assert all(x.bias is not None for x in (a.q_proj, a.k_proj, a.v_proj, a.o_proj))
        has_mlp_bias = m.down_proj.bias is not None
        case["description"] = (
            "Llama 8/2 heads with attention_bias true (q/k/v/o_proj biases)"
            + (" and mlp_bias true (gate/up/down_proj biases)" if has_mlp_bias
               else "; this transformers has no mlp_bias, so the MLP has no biases")
            + ", f32.")
    if name == "qwen2_bias":
        a = model.model.layers[0].self_attn
        assert a.q_proj.bias is not None and a.o_proj.bias is None
    if name == "llama_head_dim":
        assert tuple(model.model.layers[0].self_attn.q_proj.weight.shape) == (128, 64)

    if case.get("bf16"):
        model = model.to(torch.bfloat16)
    save(model, case, d)
    files, tensors = check_checkpoint(case, d, model)

    # Reference outputs come from the checkpoint as reloaded from disk.
    if case.get("bf16"):
        loaded = model_cls.from_pretrained(d, dtype=torch.bfloat16, attn_implementation="eager")
        bf = loaded.eval()
        for k, v in model.state_dict().items():
            assert torch.equal(bf.state_dict()[k], v), k
        greedy_bf16 = [greedy(bf, p)[0] for p in prompts]
        loaded = model_cls.from_pretrained(d, dtype=torch.bfloat16, attn_implementation="eager")
        loaded = loaded.float().eval()
        # inv_freq must be the float32 one, not a bf16-rounded copy.
        fresh = build_model(case, seed)
        if not torch.equal(rope_module(loaded).inv_freq, rope_module(fresh).inv_freq):
            print("    note: inv_freq was bf16-rounded by the reload; restoring float32 values")
            rope_module(loaded).inv_freq.copy_(rope_module(fresh).inv_freq)
    else:
        loaded = model_cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    assert loaded.config._attn_implementation == "eager"
    sd = loaded.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(sd[k].to(v.dtype), v), k
    for k, v in sd.items():
        assert v.dtype == torch.float32, k

    logits = [last_logits(loaded, p) for p in prompts]
    runs = [greedy(loaded, p) for p in prompts]
    margin = min(m for _, m in runs)
    assert margin >= MIN_MARGIN
    spread = min(float(l.std()) for l in logits)
    assert spread > 0.5, f"logits too flat (std {spread})"

    expected = {
        "case": name,
        "description": case["description"],
        "transformers_version": versions["transformers"],
        "torch_version": versions["torch"],
        "seed": seed,
        "prompts": prompts,
        "last_logits": [[f32(x) for x in l.tolist()] for l in logits],
        "greedy_tokens": [t for t, _ in runs],
        "min_greedy_margin": f32(margin),
    }
    if case.get("bf16"):
        expected["greedy_tokens_bf16_compute"] = greedy_bf16
    with open(os.path.join(d, "expected.json"), "w") as fh:
        fh.write("{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}"
                                    for k, v in expected.items()) + "\n}\n")

    cfg_json = json.load(open(os.path.join(d, "config.json")))
    print(f"  {name}: seed {seed}, files {sorted(os.listdir(d))}, min margin {margin:.4g}, "
          f"min logit std {spread:.3g}, greedy {expected['greedy_tokens']}")
    if case.get("bf16"):
        same = greedy_bf16 == expected["greedy_tokens"]
        print(f"    bf16-compute greedy {'==' if same else '!='} f32 greedy: {greedy_bf16}")
    return {"case": name, "seed": seed, "margin": margin, "files": files,
            "tensors": {k: (str(t.dtype), list(t.shape)) for k, (_, t) in tensors.items()},
            "config": cfg_json}


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    versions = {"transformers": transformers.__version__, "torch": torch.__version__}
    print(f"transformers {versions['transformers']}, torch {versions['torch']}")
    os.makedirs(OUT, exist_ok=True)
    only = set(sys.argv[1:])
    results = []
    for case in CASES:
        if only and case["name"] not in only:
            continue
        print(f"{case['name']}:")
        results.append(run_case(case, versions))
    with open(os.path.join(OUT, "README.md"), "w") as fh:
        fh.write(README.format(transformers=versions["transformers"], torch=versions["torch"],
                               cases="\n".join(f"- `{c['name']}`" for c in CASES)))
    return results


README = """# Golden fixtures

Tiny checkpoints and expected outputs made with Hugging Face transformers, for the
C++ parity tests. Generated by `tests/reference/make_golden.py` (run by hand, not
in CI: `pip install torch transformers safetensors`, then
`python3 tests/reference/make_golden.py` from the repository root). Deterministic:
fixed seeds, one CPU thread. Made with transformers {transformers}, torch {torch}.

Each `<case>/` holds the checkpoint exactly as `save_pretrained()` wrote it
(`config.json`, `model.safetensors` or shards plus `model.safetensors.index.json`)
and `expected.json`: `prompts` (token ids), `last_logits` (float32 logits over
the whole vocabulary at the last prompt position), `greedy_tokens` (16 greedy
tokens per prompt, full re-run each step, no KV cache, no stop at EOS),
`min_greedy_margin` (smallest top1-top2 logit gap seen while generating),
`seed`, `description`. Floats are the shortest decimals that round-trip to the
float32 values. Weights are re-initialised from a seeded generator (linear
weights normal with std 1/sqrt(in_features), embeddings std 1 (tied case: std
1/sqrt(hidden)), RMSNorm weights 1 + 0.1 N(0, 1), biases 0.1 N(0, 1)) so that
logits are well spread and greedy choices are not near-ties.

Cases (see each `description`):

{cases}
"""

if __name__ == "__main__":
    main()
