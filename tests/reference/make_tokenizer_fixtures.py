#!/usr/bin/env python3
"""Generates the tokenizer and chat-template fixtures under tests/fixtures/tokenizer/.

Run by hand, not in CI; the outputs are committed:

    pip install tokenizers transformers jinja2
    python3 tests/reference/make_tokenizer_fixtures.py \
        --tokenizers build/fixtures/tokenizers --out tests/fixtures/tokenizer

Reference implementations:
  * ids and decodes: Hugging Face `tokenizers` (Rust, via its Python binding),
    Tokenizer.from_file(tokenizer.json).
  * chat prompts: jinja2 rendered exactly the way transformers'
    apply_chat_template does (its own _compile_jinja_template is used when
    transformers is importable; otherwise an identical local copy).
The corpus is generated from a fixed seed so reruns give the same files.

Outputs (tests/fixtures/tokenizer/):
  corpus.jsonl                 the texts
  <tok>.jsonl                  per text: ids (3 encode modes) and HF decodes
  <tok>.decode.jsonl           arbitrary id sequences and their HF decodes
  variants.json                component overrides applied to a real file
                               (Metaspace, added-token flags), also <tok>.jsonl
  templates/*.jinja, chat.jsonl  chat templates and transformers' renderings
"""
import argparse
import json
import os
import random
import sys

SEED = 20261123

PROSE = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How's it going? I'm fine, they're here, we've won, you'll see, he'd go.",
    "IT'S LOUD, THEY'RE SHOUTING, WE'VE HEARD, I'M DONE, YOU'LL SEE, HE'D LEAVE.",
    "Grouped-query attention interpolates between multi-head and multi-query attention.",
    "Le cœur a ses raisons que la raison ne connaît point.",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein. Straße, Größe, Fußgänger.",
    "¿Dónde está la biblioteca? ¡Qué día tan bonito! Año, niño, acción.",
    "Ceci n'est pas une pipe. L'été dernier, j'ai visité l'Hôtel-Dieu.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Быстрая коричневая лиса прыгает через ленивую собаку. Ёлка, щётка.",
    "Γαζέες καὶ μυρτιὲς δὲν θὰ βρῶ πιὰ στὸ χρυσαφὶ ξέφωτο.",
    "我能吞下玻璃而不伤身体。今天天气很好，我们去公园散步吧！",
    "机器学习是人工智能的一个分支。大语言模型需要大量的计算资源。",
    "私はガラスを食べられます。それは私を傷つけません。カタカナとひらがな。",
    "東京は日本の首都です。ﾊﾝｶｸｶﾀｶﾅ も あります。",
    "나는 유리를 먹을 수 있어요. 그래도 아프지 않아요. 한국어 문장입니다.",
    "मैं काँच खा सकता हूँ और मुझे उससे कोई चोट नहीं पहुंचती।",
    "أنا قادر على أكل الزجاج و هذا لا يؤلمني. مرحبا بالعالم!",
    "אני יכול לאכול זכוכית וזה לא מזיק לי. שלום עולם",
    "ฉันกินกระจกได้ แต่มันไม่ทำให้ฉันเจ็บ สวัสดีครับ",
    "Tôi có thể ăn thủy tinh mà không hại gì. Tiếng Việt có dấu: ă â ê ô ơ ư đ.",
    "Mogę jeść szkło i mi nie szkodzi. Zażółć gęślą jaźń.",
    "Příliš žluťoučký kůň úpěl ďábelské ódy.",
    "Árvíztűrő tükörfúrógép. Ünnepélyes.",
    "Pijamalı hasta yağız şoföre çabucak güvendi. İstanbul, ışık.",
    "Jeg kan spise glas, det gør ikke ondt på mig. Æble, øl, år.",
    "Ég get etið gler án þess að meiða mig. Þórður, Ðiðrik.",
    "Mi povas manĝi vitron, ĝi ne damaĝas min. Ĉu vi parolas Esperanton?",
    "ኣብ ርእሲ ጸሓይ። ሰላም ለዓለም።",
    "ᚠᛇᚻ᛫ᛒᛦᚦ᛫ᚠᚱᚩᚠᚢᚱ᛫ᚠᛁᚱᚪ᛫ᚷᛖᚻᚹᛦᛚᚳᚢᛗ",
    "Μπορώ να φάω σπασμένα γυαλιά χωρίς να πάθω τίποτα.",
    "Կրնամ ապակի ուտել և ինծի անհանգիստ չըներ։",
    "მინას ვჭამ და არა მტკივა.",
    "我的名字是 GQA-serve, version 0.1.0；支持 Llama 3、Qwen3 和 Mistral。",
    "Mixed scripts: English, русский, 中文, العربية, हिन्दी, 日本語, 한국어.",
    "Don't, can't, won't, shouldn't've, y'all'd've, 'tis, rock 'n' roll.",
    "He said \"hello\" and she said 'goodbye' — then… silence.",
    "Curly quotes: ‘single’ “double” «guillemets» „low“ ‹angle›.",
    "Math: ∀x∈ℝ, x² ≥ 0; ∑ᵢ aᵢ = ∫₀¹ f(x) dx ≈ 3.14159; α+β=γ.",
    "Units: 5 km/h, 37°C, 100 µs, 3 × 4 = 12, ½ + ¼ = ¾, 10‰.",
    "Currency: $1,234.56 €99,99 £5 ¥1000 ₹250 ₿0.001",
    "Full-width: ＡＢＣ ｄｅｆ １２３ ！？",
    "Ligatures and compatibility: ﬁ ﬂ ﬀ ℌ ℍ ① ② ㍿ ™ ℃",
]

CODE = [
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "#include <stdio.h>\n\nint main(void) {\n\tprintf(\"Hello, %s!\\n\", \"world\");\n\treturn 0;\n}\n",
    "for (int i = 0; i < 10; ++i) {\n  sum += a[i] * b[i];  // dot product\n}\n",
    "const x = async () => { await fetch('/api/v1/items?limit=10&offset=20'); };",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC;",
    "<html>\n  <body>\n    <div class=\"main\">Hi &amp; bye</div>\n  </body>\n</html>",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true, \"c\": 1.5e-3}}",
    "fn main() {\n    let v: Vec<u32> = (0..100).filter(|x| x % 3 == 0).collect();\n    println!(\"{:?}\", v);\n}",
    "    \n\t\t  mixed   indentation\t\n\n\n    end",
    "x = [i**2 for i in range(1000) if i % 7 == 3]  # list comprehension\r\n",
    "$ ./build/bin/gqa-tokenize --tokenizer build/fixtures/tokenizers/llama3 --input-jsonl in.jsonl > out.jsonl",
    "git log --oneline | head -n 20 && echo \"done\" || exit 1",
    "matrix[i][j] = (a[i][k] * b[k][j]) >> 2; ptr->next->prev = NULL;",
    "@@ -1,5 +1,7 @@\n-old line\n+new line\n+another one\n context",
    "template <typename T, int N>\nstruct Array { T data[N]; constexpr int size() const { return N; } };",
    "import numpy as np\narr = np.zeros((3, 4), dtype=np.float32)\nprint(arr.shape)",
    "lambda x: x if x else None; `backticks` ~tilde^caret|pipe\\backslash",
    "/* block comment */ // line comment\n# shell comment\n-- sql comment\n<!-- html -->",
]

SPECIAL_TEXTS = [
    "<|begin_of_text|>Hello<|end_of_text|>",
    "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>",
    "<think>\nreasoning\n</think>\n\nanswer <tool_call>{\"a\": 1}</tool_call>",
    "<s>[INST] Hello [/INST] Hi</s>",
    "text <s> middle </s> end <unk>",
    "<|endoftext|><|endoftext|>double",
    "partial <|im_start and <|begin_of_text| not special",
    " <|eot_id|> spaced <|eot_id|> ",
    "a  <|im_end|>  b\n<|im_start|>  \n x<think>y <think> z</think>w </think> ",
    "word<think> <think>word \u00e9<think>\u00e9 1<think>2 <|im_start|><|im_end|>",
]

WHITESPACE = [
    "", " ", "  ", "\n", "\n\n", "\t", "\r\n", "a  b", "a   b    c", "   leading",
    "trailing   ", "  both  ", "\n\n\nthree newlines", "tabs\t\t\tand spaces   \t  mixed",
    "line1\nline2\r\nline3\rline4", "word \n word", "word  \n\n  word", "\u00a0nbsp\u00a0\u00a0x",
    "em\u2003space\u2009thin\u200bzw\u3000ideographic", "   \n   \n   ", "x" + " " * 40 + "y",
    "\n" * 17, "\t \t \t", "a\u2028b\u2029c", "\u0085next line", "\f\vform feed",
    # Code points where regex engines disagree about \s: U+180E is not
    # White_Space since Unicode 6.3 (PCRE2 still counts it), U+001C-001F
    # are (Python's isspace), U+200B/U+FEFF are not.
    "a\u180eb \u180e c\u2007\u180e=v", "x\x1cy\x1d z\x1e\x1f", "zw\u200bsp\ufeffbom \u200b ",
    "\u180e\u180e  \u180e", "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2008\u2009\u200a|",
]

EMOJI = [
    "👋 Hello 🌍!", "👨‍👩‍👧‍👦 family", "🏳️‍🌈 flag", "👩🏽‍💻 coder", "❤️‍🔥 heart on fire",
    "🇯🇵🇺🇸🇩🇪 flags", "😀😃😄😁😆😅😂🤣", "1️⃣ 2️⃣ #️⃣ *️⃣", "🧑‍🤝‍🧑 🫱🏼‍🫲🏿",
    "emoji at end 🚀", "🚀at start", "mixed 中文😀text", "👁️‍🗨️ eye", "✍🏻✍🏼✍🏽✍🏾✍🏿",
]

NUMBERS = [
    "0", "7", "42", "123", "1234", "12345", "1234567890", "3.14159265358979",
    "-273.15", "1e10", "6.022e23", "0xDEADBEEF", "1,000,000", "1_000_000",
    "2026-11-23T12:34:56Z", "+1 (555) 123-4567", "v1.2.3-rc.4", "192.168.0.1",
    "٠١٢٣٤٥٦٧٨٩", "०१२३४५६७८९", "一二三 四五六", "Ⅻ ⅻ ½ ² ³", "99 bottles, 98 bottles",
    "Order #12345 costs 67.89 and ships in 3-5 days.",
]

URLS = [
    "https://example.com/path/to/page?query=1&lang=en#section",
    "http://localhost:8080/v1/chat/completions",
    "Visit https://huggingface.co/meta-llama/Meta-Llama-3-8B or www.example.org.",
    "mailto:someone@example.com?subject=Hi%20there",
    "ftp://files.example.net/pub/file-1.2.tar.gz",
    "https://ja.wikipedia.org/wiki/日本語 and https://xn--n3h.com",
    "user@example.com, first.last+tag@sub.domain.co.uk",
    "s3://bucket/key/with spaces/and%20encoding",
]

# NFC / NFD and combining marks (Qwen normalizes to NFC).
NORMALIZATION = [
    "e\u0301 vs \u00e9", "A\u030a ngstr\u00f6m \u212b", "n\u0303o\u0308", "\u1100\u1161\u11a8 hangul jamo",
    "o\u0328\u0301 stacked", "\u0041\u0300\u0316", "ﬁ ligature stays", "Å Ω K (compat)",
    "a\u0308\u0304 vs \u01df", "\u0915\u093c nukta", "q\u0307\u0323 order",
]

# Code point ranges used for random Unicode: assigned, non-surrogate, across scripts.
RANGES = [
    (0x20, 0x7e), (0xa0, 0x24f), (0x370, 0x3ff), (0x400, 0x4ff), (0x530, 0x58f),
    (0x590, 0x5ff), (0x600, 0x6ff), (0x900, 0x97f), (0xe00, 0xe7f), (0x10a0, 0x10ff),
    (0x1100, 0x11ff), (0x1e00, 0x1eff), (0x2000, 0x206f), (0x2100, 0x214f),
    (0x2190, 0x21ff), (0x2200, 0x22ff), (0x2500, 0x257f), (0x3040, 0x30ff),
    (0x4e00, 0x9fff), (0xac00, 0xd7a3), (0xff00, 0xffef), (0x1f300, 0x1f64f),
    (0x1f900, 0x1f9ff), (0x20000, 0x2a6df), (0x0300, 0x036f),
]


def random_unicode(rng, n):
    out = []
    for _ in range(n):
        lo, hi = rng.choice(RANGES)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def make_corpus():
    rng = random.Random(SEED)
    texts = []
    texts += PROSE + CODE + SPECIAL_TEXTS + WHITESPACE + EMOJI + NUMBERS + URLS + NORMALIZATION
    # Combinations of the above: paragraphs that mix kinds.
    pools = [PROSE, CODE, WHITESPACE, EMOJI, NUMBERS, URLS, NORMALIZATION]
    for _ in range(220):
        k = rng.randint(2, 5)
        parts = [rng.choice(rng.choice(pools)) for _ in range(k)]
        sep = rng.choice([" ", "\n", "  ", "\n\n", "\t", "", " \n "])
        texts.append(sep.join(parts))
    # Random Unicode strings, with spaces sprinkled in.
    for _ in range(150):
        s = random_unicode(rng, rng.randint(1, 40))
        if rng.random() < 0.6:
            chars = list(s)
            for _ in range(rng.randint(1, 5)):
                chars.insert(rng.randint(0, len(chars)), rng.choice([" ", "  ", "\n", "\t", " \n"]))
            s = "".join(chars)
        texts.append(s)
    # Random code points from all planes, restricted to characters assigned in
    # Unicode 14 (this Python's unicodedata; Debian 12's PCRE2 10.42 has the
    # same version). Newer characters are a known difference, see docs.
    import unicodedata
    assert unicodedata.unidata_version == "14.0.0", unicodedata.unidata_version
    for _ in range(150):
        chars = []
        while len(chars) < rng.randint(1, 30):
            cp = rng.choice([rng.randint(0x20, 0x7e), rng.randint(0x80, 0x2fff), rng.randint(0x3000, 0x10ffff)])
            if 0xD800 <= cp <= 0xDFFF or unicodedata.category(chr(cp)) in ("Cn", "Co", "Cs"):
                continue
            chars.append(chr(cp))
        texts.append("".join(chars))
    # Random ASCII soup: punctuation, digits, letters, apostrophes.
    alphabet = "abcXYZ0123456789 '\"!?.,;:-_()[]{}<>/\\|@#$%^&*+=~`\n\t"
    for _ in range(60):
        texts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))))
    # A few long texts (several kB), for the whole-string BPE of SentencePiece models.
    for _ in range(6):
        texts.append(" ".join(rng.choice(PROSE + CODE) for _ in range(30)))
    return texts


# Variants of a real tokenizer.json with some components replaced, to cover
# components none of the three files uses (Metaspace, as in newer Llama 2 /
# Mistral exports). Written to variants.json; the C++ tests apply the same
# overrides to the same base file.
METASPACE_FIRST = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
METASPACE_ALWAYS_SPLIT = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
VARIANTS = {
    "mistral-metaspace-first": {"base": "mistral", "override": {
        "normalizer": None, "pre_tokenizer": METASPACE_FIRST,
        "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, METASPACE_FIRST]}}},
    "mistral-metaspace-split": {"base": "mistral", "override": {
        "normalizer": None, "pre_tokenizer": METASPACE_ALWAYS_SPLIT,
        "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, METASPACE_ALWAYS_SPLIT]}}},
    # Strip per token (before Fuse) and twice after Fuse; a two-byte Replace after Fuse.
    "mistral-strip": {"base": "mistral", "override": {
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"},
            # (Strip with stop > 0 is left out: HF panics on an empty string with it.)
            {"type": "Strip", "content": "e", "start": 1, "stop": 0},
            {"type": "Fuse"},
            {"type": "Replace", "pattern": {"String": "ll"}, "content": "LL"},
            {"type": "Strip", "content": " ", "start": 2, "stop": 0}]}}},
}


def _qwen_flagged_added_tokens(tok_dir):
    """qwen3's added tokens with lstrip/rstrip/single_word/normalized set on a few."""
    j = json.load(open(os.path.join(tok_dir, "qwen3", "tokenizer.json"), encoding="utf-8"))
    flags = {"<|im_end|>": {"lstrip": True}, "<|im_start|>": {"rstrip": True},
             "<think>": {"single_word": True}, "</think>": {"normalized": True}}
    out = []
    for a in j["added_tokens"]:
        a = dict(a)
        a.update(flags.get(a["content"], {}))
        out.append(a)
    return out


def load_tokenizer(tok_dir, name):
    from tokenizers import Tokenizer
    if name not in VARIANTS:
        return Tokenizer.from_file(os.path.join(tok_dir, name, "tokenizer.json"))
    v = VARIANTS[name]
    j = json.load(open(os.path.join(tok_dir, v["base"], "tokenizer.json"), encoding="utf-8"))
    j.update(v["override"])
    return Tokenizer.from_str(json.dumps(j))


def make_tokenizer_fixtures(tok_dir, out_dir, texts):
    import tokenizers
    VARIANTS["qwen3-added-token-flags"] = {"base": "qwen3",
                                           "override": {"added_tokens": _qwen_flagged_added_tokens(tok_dir)}}
    with open(os.path.join(out_dir, "variants.json"), "w", encoding="utf-8") as f:
        json.dump(VARIANTS, f, ensure_ascii=False, indent=1)
    for name in ["llama3", "qwen3", "mistral"] + list(VARIANTS):
        tok = load_tokenizer(tok_dir, name)
        path = os.path.join(out_dir, f"{name}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for i, text in enumerate(texts):
                ids = tok.encode(text, add_special_tokens=False).ids
                ids_special = tok.encode(text, add_special_tokens=True).ids
                tok.encode_special_tokens = True
                ids_plain = tok.encode(text, add_special_tokens=False).ids
                tok.encode_special_tokens = False
                rec = {
                    "i": i,
                    "ids": ids,                       # add_special_tokens=False
                    "ids_add_special": ids_special,   # add_special_tokens=True
                    "ids_special_as_text": ids_plain, # encode_special_tokens=True
                    "decoded": tok.decode(ids, skip_special_tokens=False),
                    "decoded_skip_special": tok.decode(ids_special, skip_special_tokens=True),
                    "decoded_special_as_text": tok.decode(ids_plain, skip_special_tokens=False),
                }
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        print(f"wrote {path} ({len(texts)} records, tokenizers {tokenizers.__version__})")
        # Decoding arbitrary id sequences (what a model may sample): byte
        # tokens that do not form valid UTF-8, special tokens, random ids, and
        # slices of real encodings that cut characters apart.
        rng = random.Random(SEED + 1)
        vocab = tok.get_vocab_size(with_added_tokens=True)
        special = [a.content for a in tok.get_added_tokens_decoder().values()]
        emoji_ids = tok.encode("👨‍👩‍👧 café 中文 ❤️‍🔥 \u00e9\u0301", add_special_tokens=False).ids
        path = os.path.join(out_dir, f"{name}.decode.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for _ in range(300):
                ids = []
                for _ in range(rng.randint(0, 30)):
                    r = rng.random()
                    if r < 0.4:
                        ids.append(rng.randrange(0, 300))
                    elif r < 0.5 and special:
                        ids.append(tok.token_to_id(rng.choice(special)))
                    elif r < 0.8:
                        start = rng.randrange(len(emoji_ids))
                        ids.extend(emoji_ids[start:start + rng.randint(1, 4)])
                    else:
                        ids.append(rng.randrange(vocab))
                ids = [i for i in ids if tok.id_to_token(i) is not None]
                rec = {"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
                       "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)}
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")


# ---- chat templates -------------------------------------------------------

# Templates that are not in ../shared/tokenizers (the mistral/ folder's
# tokenizer_config.json has chat_template: null). Stored as fixtures.
EXTRA_TEMPLATES = {
    # Llama 2 chat (meta-llama/Llama-2-7b-chat-hf style), uses the mistral/ tokenizer's <s> </s>.
    "llama2": (
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
        "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
        "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
        "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
        "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
        "{% else %}{% set content = message['content'] %}{% endif %}"
        "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
        "{% endfor %}"
    ),
    # Exercises the rest of the supported Jinja subset (not a real model's template).
    "features": (
        "{#- comment -#}\n"
        "{%- set ns = namespace(count=0, roles=[]) -%}\n"
        "{% for m in messages if m.role != 'tool' %}\n"
        "  {%- set ns.count = ns.count + 1 %}\n"
        "  {%- set ns.roles = ns.roles + [m.role] %}\n"
        "[{{ loop.index }}/{{ loop.length }} {{ loop.revindex0 }} {{ 'first' if loop.first else ('last' if loop.last else 'mid') }}]\n"
        "    {{ m.role | upper }}: {{ m.content[:12] | trim | tojson }} len={{ m.content | length }}\n"
        "    {% if m.content is string and m.content.startswith('<think>') %}think {{ m.content.split('</think>')[-1].strip() }}{% elif 'tool_calls' in m %}calls={{ m.tool_calls | length }}{% else %}plain{% endif %}\n"
        "  {%+ if loop.previtem is defined %}prev={{ loop.previtem.role }}{% endif %}\n"
        "{% else %}\nno messages\n{% endfor %}\n"
        "count={{ ns.count }} roles={{ ns.roles | join(',') }} uniq={{ ns.roles | unique | list }} rev={{ messages[::-1][0].role }}\n"
        "{{ messages | map(attribute='role') | select('equalto', 'user') | list | length }} users; "
        "{{ messages | selectattr('role', 'equalto', 'assistant') | list | length }} assistants\n"
        "{% for k, v in {'a': 1, 'b': [1, 2.5, none, true], 'c': {'d': 'é\"'}}.items() %}{{ k }}={{ v }} {{ v | tojson }};{% endfor %}\n"
        "{{ (7 // 2) ~ ' ' ~ (7 % 3) ~ ' ' ~ (2 ** 10) ~ ' ' ~ (7 / 2) ~ ' ' ~ (-7 // 2) ~ ' ' ~ 1e3 }}\n"
        "{{ 'a,b,,c'.split(',') }} {{ '  x y  '.split() }} {{ 'Hello World'.lower().replace('o', '0') }} {{ 'abc'.title() }}\n"
        "{{ tools | default([]) | length }} {{ tools[0].function.name if tools else 'no tools' }} {{ undefined_var | default('dflt') }}\n"
        "{%- if tools %}\n{{ tools[0] | tojson(indent=2) }}\n{%- endif %}\n"
        "{% for i in range(3) %}{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %} "
        "{% for i in range(10) %}{% if i > 2 %}{% break %}{% endif %}{{ i }}{% endfor %}\n"
        "{{ add_generation_prompt }} {{ none }} {{ [1, 'x'] }} {{ 'x' in 'xyz' }} {{ 3 not in [1, 2] }}\n"
        "{% if tools %}{% for k, v in tools[0].function.parameters.properties | dictsort %}{{ k }}:{{ v.type }};{% endfor %}"
        "{{ tools[0].function.parameters.properties | dictsort(by='key', reverse=true) | map('first') | join(',') }}{% endif %}\n"
        "{{ {'b': 1, 'A': 2, 'a': 0} | dictsort | list }} {{ {'x': 2, 'y': 1} | dictsort(by='value') | list }}\n"
        "[{{ 'line1\nline2\n\nline4' | indent(2) }}] [{{ 'a\nb' | indent(4, true) }}] [{{ 'a\n\nb' | indent('> ', blank=true) }}]\n"
    ),
    # Whitespace control: trim_blocks, lstrip_blocks, -/+ markers, comments, a trailing newline.
    "whitespace": (
        "Start {# c1 #}\n"
        "  {# indented comment #}\n"
        "    {% for m in messages %}\n"
        "  -> {{ m.role }}\n"
        "    {%- if loop.first %} (first){% endif %}\n"
        "\t{% if m.content %}[{{- m.content[:5] -}}]{% endif %}  \n"
        "  {%+ if true %}plus-kept{% endif +%}\n"
        "x {% if true %}inline{% endif %} y\n"
        "{% endfor %}\n"
        "{%- set t = 'a' %}   {{ t }}   {%- set u = 'b' -%}   {{ u }}\n"
        "  {{ '{' }}{{ '}' }} { not a tag } {{ \"%}\" }} {{ '#}' }}\n"
        "end\n"
    ),
    # Mistral-7B-Instruct style (v0.1): no system role; raises on one.
    "mistral": (
        "{{ bos_token }}{% for message in messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
        "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
        "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
    ),
}


def compile_template(source):
    """transformers' own compiler if available, else the same construction."""
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template
        return _compile_jinja_template(source), "transformers"
    except Exception:
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                              sort_keys=sort_keys)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        return env.from_string(source), "local"


TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Get the weather for a city — in °C.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name, e.g. Zürich"},
            "days": {"type": "integer", "minimum": 1, "maximum": 7}},
            "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "add", "description": "Add numbers", "parameters": {
            "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}},
]


def conversations():
    convs = []
    convs.append({"messages": [{"role": "user", "content": "Hello!"}]})
    convs.append({"messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is GQA?"}]})
    convs.append({"messages": [
        {"role": "system", "content": "  Answer briefly.\n"},
        {"role": "user", "content": "  Name three primes.  "},
        {"role": "assistant", "content": "2, 3 and 5."},
        {"role": "user", "content": "And the next one?\n"}]})
    convs.append({"messages": [
        {"role": "user", "content": "Traduis : « bonjour »"},
        {"role": "assistant", "content": "Hello 👋"},
        {"role": "user", "content": "中文呢？"},
        {"role": "assistant", "content": "你好"},
        {"role": "user", "content": "Merci!"}]})
    convs.append({"messages": [
        {"role": "system", "content": "Think step by step."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nadd two and two\n</think>\n\n4"},
        {"role": "user", "content": "3+3?"},
        {"role": "assistant", "content": "<think>\nthree plus three\n</think>\n\n6"}]})
    convs.append({"messages": [
        {"role": "user", "content": "multi\nline\n\n  input\t with tabs"},
        {"role": "assistant", "content": "ok"}]})
    convs.append({"messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]},
        {"role": "tool", "content": "{\"temp\": 21}"},
        {"role": "tool", "content": "{\"rain\": false}"},
        {"role": "assistant", "content": "21 °C and dry."},
        {"role": "user", "content": "Thanks"}], "tools": TOOLS})
    convs.append({"messages": [
        {"role": "user", "content": "Use a tool"},
        {"role": "assistant", "content": "Calling.", "tool_calls": [
            {"type": "function", "function": {"name": "add", "arguments": "{\"a\": 1, \"b\": 2}"}},
            {"type": "function", "function": {"name": "add", "arguments": {"a": 3.5, "b": -1}}}]},
        {"role": "tool", "content": "<tool_response>3</tool_response>"}], "tools": TOOLS})
    convs.append({"messages": [
        {"role": "system", "content": "You speak like a pirate."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Arr!"},
        {"role": "user", "content": "Where's the treasure? \"quoted\" and 'single' \\ backslash"}]})
    convs.append({"messages": [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "<think>\nhidden\n</think>\nvisible"},
        {"role": "user", "content": "second"}], "enable_thinking": False})
    return convs


def render(template, conv, bos, eos, add_generation_prompt):
    kwargs = {"messages": conv["messages"], "add_generation_prompt": add_generation_prompt,
              "bos_token": bos, "eos_token": eos}
    if "tools" in conv:
        kwargs["tools"] = conv["tools"]
    if "enable_thinking" in conv:
        kwargs["enable_thinking"] = conv["enable_thinking"]
    try:
        return {"text": template.render(**kwargs)}
    except Exception as e:  # raise_exception in the template
        return {"error": str(e)}


def make_chat_fixtures(tok_dir, out_dir):
    os.makedirs(os.path.join(out_dir, "templates"), exist_ok=True)
    sources = {}
    for name in ["llama3", "qwen3"]:
        cfg = json.load(open(os.path.join(tok_dir, name, "tokenizer_config.json"), encoding="utf-8"))
        sources[name] = (cfg["chat_template"], cfg.get("bos_token") or "", cfg.get("eos_token") or "")
    for name, src in EXTRA_TEMPLATES.items():
        with open(os.path.join(out_dir, "templates", f"{name}.jinja"), "w", encoding="utf-8") as f:
            f.write(src)
        sources[name] = (src, "<s>", "</s>")
    path = os.path.join(out_dir, "chat.jsonl")
    how = None
    with open(path, "w", encoding="utf-8") as f:
        for name, (src, bos, eos) in sources.items():
            template, how = compile_template(src)
            for ci, conv in enumerate(conversations()):
                for agp in (False, True):
                    rec = {"template": name, "conversation": ci, "add_generation_prompt": agp,
                           "bos_token": bos, "eos_token": eos, **conv}
                    rec.update(render(template, conv, bos, eos, agp))
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"wrote {path} (compiled with {how} jinja2 environment)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizers", default="build/fixtures/tokenizers")
    ap.add_argument("--out", default="tests/fixtures/tokenizer")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    texts = make_corpus()
    with open(os.path.join(args.out, "corpus.jsonl"), "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    print(f"corpus: {len(texts)} texts")
    make_tokenizer_fixtures(args.tokenizers, args.out, texts)
    make_chat_fixtures(args.tokenizers, args.out)


if __name__ == "__main__":
    sys.exit(main())
