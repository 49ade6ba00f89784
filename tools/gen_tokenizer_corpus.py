#!/usr/bin/env python3
"""Writes tests/tokenizer/data/varied_lines.txt: deterministic, varied one-line texts for the
tokenizer interop test (tests/tokenizer/hf_interop_test.py).

Every fragment below was written for this project (no external corpus). Lines combine fragments of
different kinds pseudo-randomly with a fixed seed, so the output is the same on every run:
    python3 tools/gen_tokenizer_corpus.py [OUTPUT] [--lines N]
No line contains '\\n' (the CLI reads one text per line); '\\r' does occur inside and at the end of lines.
"""
import argparse
import random
from pathlib import Path

PROSE = [
    "The quantized model keeps its accuracy when the outliers are handled with care.",
    "She opened the window, and the smell of rain filled the small kitchen.",
    "A tokenizer turns text into numbers; a decoder turns them back into text.",
    "It was late in the afternoon when the train finally left the station.",
    "Measurements were repeated three times and the median was reported.",
    "He wasn't sure whether the bridge would hold, but he crossed it anyway.",
    "Nobody had expected the experiment to work on the first try.",
    "The library's oldest books are kept in a cool, dry room upstairs.",
    "They've been walking for hours, and they'd rather not stop now.",
    "If the cache is cold, the first request takes noticeably longer.",
    "Our results suggest that smaller groups give lower error at a higher cost.",
    "The cat watched the birds from behind the glass, perfectly still.",
    "We'll meet at the corner of Fifth and Main at a quarter past nine.",
    "I'm certain I'd left the keys on the table, yet they're gone.",
    "Weights are stored in blocks of sixteen values with one shared scale.",
    "The river rose quickly after the storm, flooding the lower fields.",
    "You're welcome to join us, though the hike is long and steep.",
    "Each layer has two sets of weights: one for understanding, one for generation.",
    "Please don't forget to water the plants while I'm away.",
    "In the end, the simplest explanation turned out to be the right one.",
    "Mr. O'Neill said it's the best coffee he's had in years.",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG.",
    "the quick brown fox jumps over the lazy dog",
    "E-mail me at someone@example.com or visit https://example.org/path?q=1&x=y#frag.",
    "Version 2.5.1-rc3 fixes the crash reported in issue #4213.",
]

CODE = [
    "def encode(self, text: str) -> list[int]:",
    "    return [self.vocab[t] for t in tokens if t in self.vocab]",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "if (x != nullptr && x->next == nullptr) return -1;",
    "const auto [begin, end] = std::equal_range(v.begin(), v.end(), key);",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "<div class=\"box\"><span id='a1'>Hi &amp; bye</span></div>",
    "x = {'a': [1, 2, 3], \"b\": (4.5, -6e-7), 'c': None}",
    "fn main() { println!(\"{:?}\", vec![1u8, 2, 3]); }",
    "git commit -m \"fix: handle empty input\" -- src/main.rs",
    "$ echo $HOME && ls -la ~/.config | grep -v '^d'",
    "#include <vector>  // std::vector<std::pair<int, float>>",
    "lambda x: x**2 + 2*x - 1 if x > 0 else abs(x) // 3",
    "[[1.0, 0.0], [0.0, 1.0]] @ np.ones((2, 2), dtype=np.float32)",
    "    }\t// end of namespace",
    "try:\n".rstrip("\n") + "    value = int(s)",
    "\tpass  # TODO(someone): remove this",
    "a+=1;b-=2;c*=3;d/=4;e%=5;f<<=6;g>>=7;h&=8;i|=9;j^=10",
    "=> (a, b) => a ?? b ?. c || d && !e",
    "@property\tdef name(self):\treturn self._name",
]

NUMBERS = ["0", "7", "42", "100", "2024", "3.14159", "-273.15", "1,000,000", "6.022e23", "0x1F4A",
           "1e-9", "99.9%", "$19.99", "12:45:07", "2026-11-27", "+49 30 1234567", "1/3", "007",
           "١٢٣٤", "१२३४५", "一二三", "½", "²³", "Ⅻ", "①②③", "٣.١٤"]

PUNCT = ["!!!", "?!?!", "...", "…", "---", "--", "***", "<<>>", "(((", ")))", "[]{}", "~~~", "###",
         ";;", "::", "!?", "''", "\"\"", "``", "@@", "%%", "^^", "&&", "||", "//", "\\\\", "__init__",
         "—", "–", "«»", "„“", "¡¿", "§¶", "•••", "→←↑↓", "©®™", "°±×÷"]

WHITESPACE = ["  ", "   ", "    ", "\t", "\t\t", " \t ", "\u00a0", "\u00a0\u00a0", "\u2003", "\u3000",
              "\u2009", "\u202f", "\u205f", "\u1680", "\u0085", "\u2028", "\u2029", "\u200b", "\ufeff",
              "\u180e", "\x0b", "\x0c", "\x1c", "\x1f", "\r", "\r\r", " \r", "\r ", "\r\t"]

CJK = ["你好，世界。", "今天天气很好，我们去公园散步吧。", "机器学习模型的量化", "東京は日本の首都です。",
       "ひらがなとカタカナ、そして漢字。", "コンピューター", "안녕하세요, 반갑습니다.", "한국어 문장입니다",
       "中文English混合text", "「引用」と『二重引用』", "（全角括弧）と［角括弧］", "１２３ＡＢＣ"]

EMOJI = ["🙂", "😀😃😄", "🦙", "👍🏽", "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇩🇪🇯🇵", "1️⃣", "❤️", "☕",
         "🧑🏿‍🚀", "👁️‍🗨️", "🐈‍⬛", "✌🏻", "🔥🔥🔥", "emoji🙂inside", "#️⃣", "©️", "🫠"]

# Decomposed and compatibility forms that NFC rewrites (or deliberately leaves alone).
ACCENTS = ["cafe\u0301", "e\u0301le\u0300ve", "A\u030angstro\u0308m", "n\u0303", "Zu\u0308rich",
           "\u212b", "\u212a", "\u2126", "a\u0323\u0302", "a\u0302\u0323", "o\u0308\u0304",
           "\u1100\u1161\u11a8", "\u1112\u1161\u11ab\u1100\u1173\u11af", "naïve", "crème brûlée",
           "ﬁ ﬂ ﬀ", "Ǆ ǅ ǆ", "i\u0307", "\u0958", "\u2000", "\u0344", "s\u0323\u0307", "Å", "é"]

SCRIPTS = ["مرحبا بالعالم", "اللغة العربية جميلة", "שלום עולם", "עברית היא שפה", "नमस्ते दुनिया",
           "हिन्दी भाषा", "Привет, мир!", "Ещё один пример текста.", "Γειά σου κόσμε", "ΑΒΓΔ αβγδ ς",
           "สวัสดีครับ", "Tiếng Việt có dấu", "Ελληνικά και English", "Ёжик в тумане", "ქართული",
           "Հայերեն", "ગુજરાતી", "தமிழ்", "Straße Maße GROẞ", "İstanbul ıı İİ"]

CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D",
                "'Re", "'rE", "'Ll", "'lL", "'Ve", "it's", "IT'S", "don't", "DON'T", "we'll", "WE'LL",
                "they'RE", "I'M", "you'D", "'ſ", "'K", "’s", "''s", "'s's", "'", "'x", "O'Brien", "rock'n'roll"]

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>",
            "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|im_start|>user", "<|im_start|>assistant",
            "<|im_start", "im_end|>", "<|<|im_end|>|>", "<|im_start|><|im_end|>", "< |im_start| >",
            "<|endoftext|><|endoftext|>", "text<|im_end|>text", " <|im_start|> "]

KINDS = {"prose": PROSE, "code": CODE, "numbers": NUMBERS, "punct": PUNCT, "space": WHITESPACE,
         "cjk": CJK, "emoji": EMOJI, "accents": ACCENTS, "scripts": SCRIPTS,
         "contractions": CONTRACTIONS, "specials": SPECIALS}

SEPARATORS = [" ", " ", " ", "", ", ", "  ", "\t", " - ", "\r", ". ", "'", "\u00a0"]


def random_number(rng: random.Random) -> str:
    shape = rng.randrange(4)
    if shape == 0:
        return str(rng.randrange(10 ** rng.randrange(1, 12)))
    if shape == 1:
        return f"{rng.uniform(-1000, 1000):.{rng.randrange(0, 6)}f}"
    if shape == 2:
        return f"{rng.randrange(10**9):,}"
    return "".join(rng.choice("0123456789") for _ in range(rng.randrange(1, 30)))


def fragment(rng: random.Random, kind: str) -> str:
    if kind == "numbers" and rng.random() < 0.5:
        return random_number(rng)
    return rng.choice(KINDS[kind])


def line(rng: random.Random) -> str:
    style = rng.random()
    if style < 0.25:  # one kind only, a few fragments
        kind = rng.choice(list(KINDS))
        parts = [fragment(rng, kind) for _ in range(rng.randrange(1, 5))]
    else:  # a mixture
        parts = [fragment(rng, rng.choice(list(KINDS))) for _ in range(rng.randrange(2, 8))]
    text = ""
    for i, part in enumerate(parts):
        text += (rng.choice(SEPARATORS) if i else "") + part
    if rng.random() < 0.15:  # leading / trailing whitespace runs
        text = rng.choice(WHITESPACE) + text
    if rng.random() < 0.2:
        text += rng.choice(WHITESPACE)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent.parent
    parser.add_argument("output", nargs="?", default=here / "tests/tokenizer/data/varied_lines.txt")
    parser.add_argument("--lines", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=20261127)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    # Every fragment once on its own first, then the random mixtures.
    lines = [f for fragments in KINDS.values() for f in fragments]
    lines += ["", " ", "\r", "\t\r", "a\rb", "\r\n".rstrip("\n") + "Windows line", "x" * 300, "ab" * 200]
    while len(lines) < args.lines:
        lines.append(line(rng))
    for text in lines:
        assert "\n" not in text
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf-8", newline="") as out:
        out.write("".join(text + "\n" for text in lines))


if __name__ == "__main__":
    main()
