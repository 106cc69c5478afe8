"""The fastText LID filter, measured on real noisy man pages (70-97 % in-language)."""

from __future__ import annotations

import pytest

from tasks.engine.counting.tokens import iter_text_file
from tasks.pipeline.corpus.lid import LanguageFilter, lid_label, measure_filter
from tasks.pipeline.manifest import DEFAULT_LID_MODEL, resolve_path
from tests import subjects


@pytest.fixture(scope="module")
def lid():
    return LanguageFilter(resolve_path(DEFAULT_LID_MODEL, subjects.REPO), 0.5)


def test_labels():
    assert lid_label("pt_BR") == "__label__pt" and lid_label("zh-CN") == "__label__zh" and lid_label("fr") == "__label__fr"


def test_keep_mask_on_clear_cases(lid):
    mask, top = lid.keep_mask(["Bonjour tout le monde, comment allez-vous ?", "Hello world, how are you today?"], "fr")
    assert mask == [True, False] and top[1] == "__label__en"


@pytest.mark.parametrize("locale", ["de", "fr", "ru"])
def test_filter_on_manpages_removes_untranslated_lines(shared, lid, locale):
    lines = list(iter_text_file(shared / "data" / "manpages" / f"{locale}.txt"))[:6000]
    m = measure_filter(locale, lines, lid, subjects.minilm_folder() / "tokenizer.json")
    assert 0.6 < m.kept_share < 0.99, m.kept_share  # the files are 70-97 % in their language
    assert m.top_rejected[0][0] == "en"  # what goes is mostly untranslated English
    assert m.tokens_after < m.tokens_before and m.distinct_after < m.distinct_before
    assert m.lines_per_second > 1000


def test_wordfreq_corpus_is_not_filtered_by_default():
    from tasks.pipeline.corpus.reader import lid_applies
    from tasks.pipeline.manifest import TextCorpus, WordfreqCorpus

    assert not lid_applies(WordfreqCorpus()) and lid_applies(TextCorpus(text=["x"]))
    assert lid_applies(WordfreqCorpus(lid=True))
