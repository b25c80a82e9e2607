"""Corpus and tokenizer for the GQA study.

Reads the King James Bible as printed by Debian's `bible` program (packages
bible-kjv + bible-kjv-text), writes one verse per line (verse numbers and
chapter headings dropped), holds out the last 5% of the lines (end of the New
Testament) as the test text, trains a byte-level BPE on the training part
only, and writes tokenizer.json + tokenizer_config.json and the token ids.

    bible "gen1:1-rev22:21" > DATA/kjv-raw.txt
    python3 bench/study/prepare.py --data DATA
"""
import argparse
import json
import os
import re

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SPECIALS = ["<s>", "</s>", "<pad>"]


def verses(raw):
    out, cur = [], None
    for line in raw.splitlines():
        m = re.match(r"^\s+(\d+) (.*)$", line)
        if m:
            if cur is not None:
                out.append(cur)
            cur = m.group(2).strip()
        elif line.strip() == "" or re.match(r"^\S.* \d+$", line):
            # blank line or chapter heading ("Genesis 1")
            if cur is not None:
                out.append(cur)
                cur = None
        else:
            cur = (cur + " " + line.strip()) if cur is not None else line.strip()
    if cur is not None:
        out.append(cur)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--heldout", type=float, default=0.05)
    args = ap.parse_args()
    with open(os.path.join(args.data, "kjv-raw.txt")) as f:
        lines = verses(f.read())
    n_test = int(round(len(lines) * args.heldout))
    train, test = lines[:-n_test], lines[-n_test:]
    train_txt = "\n".join(train) + "\n"
    test_txt = "\n".join(test) + "\n"
    with open(os.path.join(args.data, "train.txt"), "w") as f:
        f.write(train_txt)
    with open(os.path.join(args.data, "test.txt"), "w") as f:
        f.write(test_txt)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=args.vocab, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(train, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    tdir = os.path.join(args.data, "tokenizer")
    os.makedirs(tdir, exist_ok=True)
    tok.save(os.path.join(tdir, "tokenizer.json"))
    with open(os.path.join(tdir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                   "pad_token": "<pad>", "add_bos_token": True, "model_max_length": 128}, f, indent=1)

    # Training stream: no BOS (random crops are taken from it). Test: BOS + text,
    # as gqa-eval and transformers tokenize the whole file.
    train_ids = np.array(tok.encode(train_txt, add_special_tokens=False).ids, dtype=np.int16)
    test_ids = np.array(tok.encode(test_txt, add_special_tokens=True).ids, dtype=np.int16)
    train_ids.tofile(os.path.join(args.data, "train.ids"))
    test_ids.tofile(os.path.join(args.data, "test.ids"))
    with open(os.path.join(args.data, "test.ids.txt"), "w") as f:
        f.write(" ".join(str(int(v)) for v in test_ids) + "\n")
    uni = np.bincount(train_ids, minlength=args.vocab).astype(np.float64) + 1.0
    uni /= uni.sum()
    unigram_ppl = float(np.exp(-np.mean(np.log(uni[test_ids[1:]]))))
    info = {"verses_total": len(lines), "verses_train": len(train), "verses_test": len(test),
            "bytes_train": len(train_txt.encode()), "bytes_test": len(test_txt.encode()),
            "tokens_train": int(train_ids.size), "tokens_test_with_bos": int(test_ids.size),
            "vocab": tok.get_vocab_size(), "unigram_perplexity_test": unigram_ppl,
            "test_first_verse": test[0][:80]}
    with open(os.path.join(args.data, "corpus.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
