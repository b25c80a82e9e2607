"""Trains the study's MHA model from scratch, or uptrains a converted
checkpoint, with PyTorch on the CPU (one thread).

Pre-training:  python3 bench/study/train.py --data DATA --out DATA/mha --steps 1200
Uptraining:    python3 bench/study/train.py --data DATA --init DATA/conv/g4-mean \
                   --out DATA/up/g4-mean --steps 120 --uptrain --eval-every 30 --save-at 60,120

Pre-training: AdamW (betas 0.9/0.95, weight decay 0.1 on matrices, gradient
clipping 1.0), batch 16 x 128 tokens, learning rate warmed up linearly over
the first 5% of steps to 2e-3, then cosine decay to 2e-4.
Uptraining: the same optimizer settings and batch, a fresh optimizer state,
a linear warm-up over the first --warmup steps (the grid uses 6, 0.5% of
the original steps) to a constant 4e-4, so that the checkpoint at 5% of the
original steps is the same whether the run stops there or goes on to 10%. The data are random crops of
the training text; uptraining draws them with another seed.
"""
import argparse
import json
import math
import os
import shutil
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Batches, load_ids, model_config, perplexity  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def lr_at(step, args):
    warm = args.warmup if args.warmup is not None else max(1, round(0.05 * args.steps))
    if args.uptrain:
        return args.lr * min(1.0, (step + 1) / warm)
    if step < warm:
        return args.lr * (step + 1) / warm
    p = (step - warm) / max(1, args.steps - warm)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * p))


def save(model, out, tokdir):
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    for f in TOKENIZER_FILES:
        shutil.copy(os.path.join(tokdir, f), os.path.join(out, f))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--init", help="checkpoint to start from (uptraining)")
    ap.add_argument("--uptrain", action="store_true")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 5%% of --steps)")
    ap.add_argument("--min-lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--save-at", default="", help="steps after which a checkpoint is written (OUT/step-N)")
    ap.add_argument("--log-every", type=int, default=50)
    args = ap.parse_args()
    if args.lr is None:
        args.lr = 4e-4 if args.uptrain else 2e-3
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    tokdir = os.path.join(args.data, "tokenizer")
    if args.init:
        model = LlamaForCausalLM.from_pretrained(args.init, torch_dtype=torch.float32)
    else:
        model = LlamaForCausalLM(model_config(4096))
    model.train()
    train_ids = load_ids(args.data, "train.ids")
    test_ids = load_ids(args.data, "test.ids")
    batches = Batches(train_ids, args.batch, seed=1000 + args.seed if args.uptrain else args.seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    nodecay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    save_at = {int(s) for s in args.save_at.split(",") if s}
    os.makedirs(args.out, exist_ok=True)
    log = open(os.path.join(args.out, "log.jsonl"), "w")

    def emit(rec):
        log.write(json.dumps(rec) + "\n")
        log.flush()
        print(json.dumps(rec), flush=True)

    def evaluate(step):
        t0 = time.time()
        r = perplexity(model, test_ids)
        emit({"step": step, "eval": r, "eval_s": round(time.time() - t0, 1)})

    if args.eval_every:
        evaluate(0)
    t_start = time.time()
    run_loss = 0.0
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        x, y = batches.next()
        logits = model(x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        run_loss += loss.item()
        done = step + 1
        if done % args.log_every == 0:
            emit({"step": done, "train_loss": run_loss / args.log_every, "lr": lr_at(step, args),
                  "elapsed_s": round(time.time() - t_start, 1)})
            run_loss = 0.0
        if args.eval_every and done % args.eval_every == 0:
            evaluate(done)
        if done in save_at:
            save(model, os.path.join(args.out, f"step-{done}"), tokdir)
    if not save_at:
        save(model, args.out, tokdir)
    emit({"done": True, "steps": args.steps, "train_s": round(time.time() - t_start, 1)})


if __name__ == "__main__":
    main()
