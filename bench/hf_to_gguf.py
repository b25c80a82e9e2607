#!/usr/bin/env python3
"""Writes a Llama/Mistral-layout Hugging Face checkpoint (config.json,
safetensors, tokenizer.json with a byte-level BPE) as one GGUF file for
llama.cpp, so that both engines run the same weights in
bench/compare_llamacpp.sh.

Only NumPy and the `gguf` Python package of the llama.cpp checkout given with
--llama-cpp are needed (no PyTorch). Matrices keep their dtype (bf16, f16 or
f32); norm weights become f32, as llama.cpp's own converter writes them. The
query and key projections are permuted from Hugging Face's half-split RoPE
layout to GGML's interleaved one, so the GGUF model computes the same
function.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np


def read_safetensors(model_dir):
    """name -> (dtype string, shape, raw bytes as a NumPy array view)."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors = {}
    for name in files:
        path = os.path.join(model_dir, name)
        data = np.memmap(path, dtype=np.uint8, mode="r")
        header_len = struct.unpack("<Q", bytes(data[:8]))[0]
        header = json.loads(bytes(data[8:8 + header_len]))
        base = 8 + header_len
        for tname, info in header.items():
            if tname == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            tensors[tname] = (info["dtype"], info["shape"], data[base + begin:base + end])
    return tensors


def as_array(dtype, shape, raw):
    """The tensor as a NumPy array: bf16 stays raw uint16 bits."""
    np_type = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32}[dtype]
    return np.frombuffer(raw, dtype=np_type).reshape(shape)


def to_f32(dtype, arr):
    if dtype == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(np.float32)


def permute_rope(w, n_heads):
    """Hugging Face's [first halves | second halves] per head -> interleaved pairs."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tokenizer_vocab(model_dir, vocab_size, gguf):
    with open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    model = tok["model"]
    if model.get("type") != "BPE":
        sys.exit("hf_to_gguf.py: only byte-level BPE tokenizers are written (tokenizer.json model.type must be BPE)")
    by_id = {i: t for t, i in model["vocab"].items()}
    types = {i: gguf.TokenType.NORMAL for i in by_id}
    for added in tok.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    tokens, toktypes = [], []
    for i in range(vocab_size):
        if i in by_id:
            tokens.append(by_id[i])
            toktypes.append(types[i])
        else:
            tokens.append(f"[PAD{i}]")
            toktypes.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, toktypes, merges


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-cpp", required=True, help="llama.cpp checkout (its gguf-py is used)")
    ap.add_argument("--in", dest="model_dir", required=True, help="Hugging Face model directory")
    ap.add_argument("--out", required=True, help="GGUF file to write")
    ap.add_argument("--pre", default="llama-bpe", help="llama.cpp's name of the pre-tokenizer (llama-bpe: Llama 3)")
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(args.llama_cpp, "gguf-py"))
    import gguf  # noqa: E402  (from the checkout)

    with open(os.path.join(args.model_dir, "config.json")) as f:
        cfg = json.load(f)
    if cfg.get("architectures", ["LlamaForCausalLM"])[0] not in ("LlamaForCausalLM", "MistralForCausalLM"):
        sys.exit("hf_to_gguf.py: only Llama and Mistral layouts (no q/k/v biases) are written")
    heads, kv_heads = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hidden = cfg["hidden_size"]
    head_dim = cfg.get("head_dim") or hidden // heads
    if cfg.get("rope_scaling"):
        sys.exit("hf_to_gguf.py: rope_scaling is not written; make the model with --rope-scaling none")
    tensors = read_safetensors(args.model_dir)
    dtypes = {t[0] for n, t in tensors.items() if n.endswith("proj.weight")}
    if len(dtypes) != 1:
        sys.exit(f"hf_to_gguf.py: mixed matrix dtypes {dtypes}")
    mat_dtype = dtypes.pop()
    file_type = {"BF16": gguf.LlamaFileType.MOSTLY_BF16, "F16": gguf.LlamaFileType.MOSTLY_F16,
                 "F32": gguf.LlamaFileType.ALL_F32}[mat_dtype]

    w = gguf.GGUFWriter(args.out, "llama")
    w.add_name(os.path.basename(os.path.normpath(args.model_dir)))
    w.add_context_length(cfg.get("max_position_embeddings", 2048))
    w.add_embedding_length(hidden)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(head_dim)
    if head_dim != hidden // heads:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-5)))
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(file_type)
    tokens, toktypes, merges = tokenizer_vocab(args.model_dir, cfg["vocab_size"], gguf)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(args.pre)
    w.add_token_list(tokens)
    w.add_token_types(toktypes)
    w.add_token_merges(merges)
    if cfg.get("bos_token_id") is not None:
        w.add_bos_token_id(int(cfg["bos_token_id"]))
    eos = cfg.get("eos_token_id")
    if eos is not None:
        w.add_eos_token_id(int(eos[0] if isinstance(eos, list) else eos))

    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    raw_type = {"BF16": gguf.GGMLQuantizationType.BF16, "F16": None, "F32": None}

    def add(name, hf_name, permute_heads=0):
        dtype, shape, raw = tensors[hf_name]
        arr = as_array(dtype, shape, raw)
        if len(shape) == 1:
            w.add_tensor(name, to_f32(dtype, arr))
            return
        if permute_heads:
            arr = permute_rope(arr, permute_heads)
        arr = np.ascontiguousarray(arr)
        w.add_tensor(name, arr, raw_dtype=raw_type[dtype])

    add("token_embd.weight", "model.embed_tokens.weight")
    add("output_norm.weight", "model.norm.weight")
    if "lm_head.weight" in tensors:
        add("output.weight", "lm_head.weight")
    for layer in range(cfg["num_hidden_layers"]):
        for hf, gg in names.items():
            hf_name = f"model.layers.{layer}.{hf}.weight"
            permute = heads if hf == "self_attn.q_proj" else kv_heads if hf == "self_attn.k_proj" else 0
            add(f"blk.{layer}.{gg}.weight", hf_name, permute)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {args.out}: {cfg['num_hidden_layers']} layers, {mat_dtype} matrices, {len(tokens)} tokens")


if __name__ == "__main__":
    main()
