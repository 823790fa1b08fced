"""Deterministic WordPiece vocabulary learning, for reproducible pretraining.

`tokenizers`' WordPieceTrainer (behind `BERTTokenizerFast.train`) numbers the `##x` pieces in
hash-map order, which Rust seeds randomly per process, and breaks ties between equally frequent
merges by those numbers: two trainings on the same text give different vocabularies. This is the
same algorithm (BPE merges over words, `##` on non-initial pieces, stop below `min_frequency`)
with ties broken by the pieces' text, and the result is served by the usual BERTTokenizerFast.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable
from itertools import pairwise

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from lucid_eval.models.tokenizer import BERTTokenizerFast

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # BERT's id order
PREFIX = "##"


def _normalizer(lowercase: bool) -> normalizers.BertNormalizer:
    return normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )


def _word_counts(texts: Iterable[str], lowercase: bool) -> Counter[str]:
    """Words as BERTTokenizerFast sees them: BERT normalisation, then whitespace/punctuation split."""
    normalizer, pre_tokenizer = _normalizer(lowercase), pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    return counts


def train_wordpiece(
    texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2, lowercase: bool = True
) -> BERTTokenizerFast:
    """Learn a WordPiece vocabulary of at most `vocab_size` tokens; the same texts always give the
    same vocabulary and ids: specials, the sorted alphabet (plain then `##`), then merges in order."""
    counts = _word_counts(texts, lowercase)
    order = sorted(counts)
    words = [[c if i == 0 else PREFIX + c for i, c in enumerate(word)] for word in order]
    freqs = [counts[word] for word in order]
    vocab = list(SPECIALS) + sorted({p for w in words for p in w if not p.startswith(PREFIX)})
    vocab += sorted({p for w in words for p in w if p.startswith(PREFIX)})
    known = set(vocab)

    pair_counts: Counter[tuple[str, str]] = Counter()
    where: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    for index, (word, freq) in enumerate(zip(words, freqs, strict=True)):
        for pair in pairwise(word):
            pair_counts[pair] += freq
            where[pair].add(index)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        negative, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negative:
            continue  # stale entry: the count changed since it was pushed
        if -negative < min_frequency:
            break
        first, second = pair
        merged = first + second.removeprefix(PREFIX)
        if merged not in known:
            vocab.append(merged)
            known.add(merged)
        touched: set[tuple[str, str]] = set()
        for index in sorted(where.pop(pair)):
            old, freq = words[index], freqs[index]
            new, i = [], 0
            while i < len(old):
                if i + 1 < len(old) and old[i] == first and old[i + 1] == second:
                    new.append(merged)
                    i += 2
                else:
                    new.append(old[i])
                    i += 1
            if len(new) == len(old):
                continue
            for p in pairwise(old):
                pair_counts[p] -= freq
                touched.add(p)
            for p in pairwise(new):
                pair_counts[p] += freq
                where[p].add(index)
                touched.add(p)
            words[index] = new
        for p in sorted(touched):
            if pair_counts[p] > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
        pair_counts.pop(pair, None)
    return _tokenizer(vocab, lowercase)


def _tokenizer(vocab: list[str], lowercase: bool) -> BERTTokenizerFast:
    """The pipeline `BERTTokenizerFast.train` builds, with the specials registered as special
    tokens (kept whole in text, skipped by `decode`), as the `tokenizers` trainer registers them."""
    tokenizer = Tokenizer(
        models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]", max_input_chars_per_word=100)
    )
    tokenizer.normalizer = _normalizer(lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix=PREFIX)
    tokenizer.add_special_tokens(list(SPECIALS))
    return BERTTokenizerFast(tokenizer_object=tokenizer, lowercase=lowercase)
