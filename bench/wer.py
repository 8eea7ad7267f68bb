"""Word error rate as the test suite counts it (tests/common/wer.rs): apostrophes deleted,
every other character that is not a letter or digit turned into a space, lower case, then
the word-level edit distance."""


def words(text):
    kept = (c for c in text if c not in "'\u2019")
    return "".join(c.lower() if c.isalnum() else " " for c in kept).split()


def wer_counts(ref, hyp):
    """(word edits, reference words)."""
    r, h = words(ref), words(hyp)
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(h)], len(r)
