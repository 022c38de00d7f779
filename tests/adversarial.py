"""Text that breaks tokenizers: whitespace runs, rare scripts, combining marks, emoji sequences,
control characters, CRLF, special-token look-alikes, and one document over 1 MB."""

from __future__ import annotations

import random


def adversarial_texts() -> list[str]:
    rng = random.Random(1234)
    texts = [
        " " * 1,
        " " * 25 + "x",
        "a" + " " * 1000 + "b",
        "\t\t\n\n\r\n \u00a0\u3000 end",
        "\n" * 500,
        "line one\r\nline two\r\n\r\n",
        "def f(x):\r\n\treturn x  \r\n",
        "e\u0301 \u0065\u0301\u0301\u0301 n\u0303 \u1e9b\u0323 Å Å",  # combining marks, NFC cases
        "\u07f3\u07fd NKo \u07ca\u07cb\u07cc",  # NKo: HF's older Unicode tables matter here
        "ᚠᛇᚻ᛫ᛒᛦᚦ ኃይሌ ገብረሥላሴ ᐊᓕᒍᖅ ꦧꦱꦗꦮ 𐌰𐌱𐌲 𓀀𓀁 ꧁꧂",
        "Здравствуйте мир! Γειά σου Κόσμε! שלום עולם مرحبا بالعالم नमस्ते दुनिया",
        "日本語のテキスト、中文文本，한국어 텍스트。",
        "👨‍👩‍👧‍👦 🏳️‍🌈 👍🏽 🇯🇵🇺🇸 ❤️‍🔥 🧑🏿‍🚀 *️⃣ 1️⃣",
        "ctrl: \x00\x01\x02\x07\x08\x0b\x0c\x1b[31mred\x1b[0m\x7f\x85\u200b\u200d\ufeff\u2028\u2029",
        "<|endoftext|> in the middle <|endoftext|><|padding|>",
        "'s 't 're 've 'm 'll 'd \t's \n'll ''s",
        "x" * 5000,
        "1234567890" * 300,
        "\ud7ff\ue000\uffff\U0010ffff\U0001f600",
        "mixed\u0000nul",
        "",
    ]
    # A long document mixing all of the above, well over 1 MB.
    pieces = [t for t in texts if t]
    big = []
    size = 0
    while size < 1_200_000:
        p = rng.choice(pieces) + rng.choice([" ", "\n", "", "  \n\t"])
        big.append(p)
        size += len(p.encode())
    texts.append("".join(big))
    # Random Unicode soup (no surrogates).
    for _ in range(20):
        chars = []
        for _ in range(rng.randint(1, 400)):
            cp = rng.choice(
                [
                    rng.randint(0x20, 0x7E),
                    rng.randint(0xA0, 0x2FFF),
                    rng.randint(0x1F300, 0x1FAFF),
                    rng.randint(0x4E00, 0x9FFF),
                    rng.randint(0, 0x1F),
                ]
            )
            chars.append(chr(cp))
        texts.append("".join(chars))
    return texts
