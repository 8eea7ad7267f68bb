#!/usr/bin/env python3
"""Writes encode_cases.json: reference token ids for tests/tokenizer_encode.rs.

The ids come from Hugging Face `tokenizers` (`pip install tokenizers`), called the way
faster-whisper calls it: `Tokenizer.from_file(tokenizer.json).encode(text,
add_special_tokens=False).ids`. Prompt cases apply faster-whisper's `" " + prompt.strip()`
before encoding.

Usage (from the repository root):
    python3 tests/data/tokenizer/make_fixtures.py [models/whisper-base/tokenizer.json]
"""

import hashlib
import json
import pathlib
import sys

import tokenizers

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def two_hundred_words():
    """A deterministic 200-word English paragraph (also the encoder's speed benchmark)."""
    words = (
        "the committee reviewed quarterly figures before Tuesday's meeting, noting that "
        "revenue rose 12.5% while costs fell; however, analysts weren't convinced the "
        "trend would last into 2025 and asked for clearer forecasts"
    ).split()
    out = [words[i % len(words)] for i in range(200)]
    return " ".join(out)


# (name, text). Names are unique and say what each case exercises.
CASES = [
    # Plain English and leading spaces.
    ("plain", "Hello world"),
    ("plain_leading_space", " Hello world"),
    ("sentence", "The quick brown fox jumps over the lazy dog."),
    ("jfk", " And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."),
    ("lowercase_run", "thisisallonewordwithoutspaces"),
    ("mixed_case", "iPhone McDonald's eBay NASA"),
    # Contractions: the regex's 's 't 're 've 'm 'll 'd alternatives (case-sensitive).
    ("dont", "don't"),
    ("well", " we'll"),
    ("its", "it's"),
    ("contractions_all", "they've you're he'd I'm she's can't we'll"),
    ("contractions_upper", "DON'T I'M WE'LL IT'S"),
    ("apostrophe_alone", "'s 't '"),
    ("rock_n_roll", "rock 'n' roll"),
    ("curly_apostrophe", "don\u2019t it\u2019s"),
    # Punctuation.
    ("ellipsis", "Wait... what?!"),
    ("brackets", "(parenthetical) [brackets] {braces}"),
    ("quotes", "\"quoted\" and 'single'"),
    ("url", "https://example.com/path?q=1&r=2#frag"),
    ("email", "someone@example.org"),
    ("code_like", "C++ & C# -> x_y = a*b;"),
    ("dashes", "well-known \u2014 em dash \u2013 en dash"),
    ("angle_brackets", "<html><body>"),
    ("half_special", "<| not special |>"),
    ("unknown_special", "<|notatoken|>"),
    # Numbers.
    ("digits", "1234567890"),
    ("pi", " 3.14159"),
    ("thousands", "1,000,000"),
    ("date", "2024-01-15"),
    ("money_percent", "$19.99 and 100%"),
    ("long_number", "9" * 120),
    ("unicode_numbers", "\u00b2 \u00bd \u216b \u0663\u0664"),
    # Whitespace.
    ("two_spaces", "a  b"),
    ("many_spaces", "a     b"),
    ("only_spaces", "   "),
    ("single_space", " "),
    ("empty", ""),
    ("newline", "line one\nline two"),
    ("blank_line", "para\n\npara"),
    ("trailing_newline", "trailing\n"),
    ("only_newline", "\n"),
    ("crlf", "windows\r\nline"),
    ("tab", "a\tb"),
    ("two_tabs", "a\t\tb"),
    ("tab_space", "\t indented"),
    ("mixed_whitespace", "a \t\n b"),
    ("trailing_spaces", "trailing   "),
    ("leading_spaces", "   leading"),
    ("both_sides", "  both  "),
    ("space_before_punct", "a  , b  ."),
    ("nbsp", "a\u00a0b \u00a0c"),
    ("ideographic_space", "a\u3000b"),
    ("next_line_char", "x\u0085y"),
    ("control_chars", "\x00\x01\x1f\x7f"),
    # Unicode.
    ("cafe", "caf\u00e9"),
    ("accents", " na\u00efve r\u00e9sum\u00e9"),
    ("german", "Gr\u00fc\u00dfe aus K\u00f6ln, Stra\u00dfe"),
    ("combining", "e\u0301 and \u00e9"),
    ("japanese", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8"),
    ("chinese", "\u4f60\u597d\uff0c\u4e16\u754c"),
    ("russian", "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440"),
    ("arabic", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0643\u0645"),
    ("emoji", "emoji \U0001f600\U0001f44d\U0001f3fd"),
    ("emoji_zwj", "\U0001f468\u200d\U0001f469\u200d\U0001f467 family"),
    ("mixed_script", "Hello\u4e16\u754c123abc"),
    # Long words (many merges; exercises the merge queue).
    ("supercali", "Supercalifragilisticexpialidocious"),
    ("pneumono", " pneumonoultramicroscopicsilicovolcanoconiosis"),
    ("long_x", "x" * 1000),
    ("long_abc", "abc" * 200),
    ("long_unicode", "\u00e9\u00df\u65e5" * 100),
    ("paragraph_200_words", two_hundred_words()),
    # Added tokens are recognised in the text even with add_special_tokens=False.
    ("eot_alone", "<|endoftext|>"),
    ("eot_inside", " hello<|endoftext|>world"),
    ("eot_twice", "a<|endoftext|><|endoftext|>b"),
    ("eot_then_space", "<|endoftext|> after"),
    ("space_then_eot", "before <|endoftext|>"),
    ("sot_sequence", "<|startoftranscript|><|en|><|transcribe|><|notimestamps|>"),
    ("prev_and_text", "<|startofprev|> previous text"),
    ("eot_partial", "<|endoftext"),
    ("timestamp_text", "<|0.00|>"),
]

# faster-whisper encodes an initial prompt as " " + prompt.strip().
PROMPTS = [
    "Glossary: Kubernetes, PostgreSQL, Rust.",
    "  padded prompt  ",
    "\n\tWhitespace all round\n",
    "\x1funit separators\x1c",
    "",
    "   ",
    "Mr. Smith's 3rd quarterly report, 2024.",
]


def main():
    path = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "models/whisper-base/tokenizer.json"
    raw = path.read_bytes()
    tok = tokenizers.Tokenizer.from_str(raw.decode("utf-8"))
    special = [t["content"] for t in json.loads(raw)["added_tokens"]]

    names = [n for n, _ in CASES]
    assert len(names) == len(set(names)), "duplicate case name"

    def ids(text):
        return tok.encode(text, add_special_tokens=False).ids

    cases = [
        {
            "name": name,
            "text": text,
            "has_added_token": any(s in text for s in special),
            "ids": ids(text),
        }
        for name, text in CASES
    ]
    prompts = [{"prompt": p, "ids": ids(" " + p.strip())} for p in PROMPTS]
    doc = {
        "generator": "tests/data/tokenizer/make_fixtures.py",
        "tokenizers_version": tokenizers.__version__,
        "tokenizer_json_sha256": hashlib.sha256(raw).hexdigest(),
        "cases": cases,
        "prompts": prompts,
    }
    out = HERE / "encode_cases.json"
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases and {len(prompts)} prompts to {out}")


if __name__ == "__main__":
    main()
